"""OPEN-SCS (OPC 30260) pool manager on the ledger's serial pools: what each method does to the
ledger, without OPC UA (host/opcua/server.py binds these to the NodeSet's methods).

OPEN-SCS states on the ledger's (host/db.py):
    Unallocated = `available` in the GTIN's pool      Allocated = `allocated` to the lot's running batch
    Encoded = `printed`   Commissioned   Sampled   Destroyed   Inactive = `decommissioned`   SNInvalid = `rejected`
A serial handed to a client is a `serial_grant` row ('out'): the ledger's triggers keep it out of
this pool (never allocated here, never returned at batch close) until the client returns it
('returned') or reports it encoded ('used', for good). Each request token is one page: repeating a
token gives the same serials again (idempotent); a client asks for more with new tokens."""

from __future__ import annotations

import enum
import json
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass

from .. import audit, serials
from ..db import transaction
from ..epcis.events import sgtin_urn

# users.PERMISSIONS' action of every OPEN-SCS method (handing out or settling a GTIN's serials is what
# `batch serials` does); the receivers of events too
POOL_ACTION = "masterdata.change"

MAX_SN_REQUESTABLE = 10_000  # per call: one write transaction of the ledger stays short
MAX_SN_RETURNABLE = 10_000
# methods whose state the ledger does not have: (return code, why), answered and audited
NOT_SERVED = {
    "SNRequestUnassigned": (3, "this ledger has no unassigned serials: every serial belongs to a GTIN's pool "
                               "(SNRequestUnallocated)"),
    "SNtoUnallocated": (2, "allocated serials go back to the pool only at batch close (SNReturnAllocated, then "
                           "the lot's batch close)"),
}
FORMATS = ("SERIALONLY", "LITERAL", "EPCURI")


class Ret(enum.IntEnum):
    """OPENSCSReturnEnum (1 = NoError; 0 is Undefined)."""
    Undefined = 0  # (a PackML command the agent refused: audited with its reason)
    NoError = 1
    InvalidSerialNumberCollection = 2
    InsufficientSerialNumbers = 3
    InvalidSerialNumbersFormat = 4
    InvalidRequestToken = 5
    InvalidSelectionCriteria = 6
    UnableToAcceptSerialNumberEvents = 7
    UnableToAcceptLabelEvents = 8
    UnableToAcceptSIDEvents = 9
    InsufficientPrivilegeToExecute = 11


class State(enum.IntEnum):
    """OPENSCSSerialNumberStateEnum."""
    Unassigned = 0
    Unallocated = 1
    Allocated = 2
    SNInvalid = 3
    Encoded = 4
    Commissioned = 7
    Sampled = 8
    Inactive = 9
    Destroyed = 10


LEDGER_STATE = {"available": State.Unallocated, "allocated": State.Allocated, "printed": State.Encoded,
                "commissioned": State.Commissioned, "sampled": State.Sampled, "destroyed": State.Destroyed,
                "decommissioned": State.Inactive, "rejected": State.SNInvalid}


@dataclass(frozen=True)
class Answer:
    status: Ret
    serials: tuple[str, ...] = ()  # in the requested SNFormat
    token: str = ""
    gtin: str = ""
    why: str = ""  # one line for the log and the audit when status is not NoError


class CallRefused(Exception):
    def __init__(self, status: Ret, why: str):
        super().__init__(why)
        self.status, self.why = status, why


def criteria(pairs) -> tuple[str, str | None]:
    """PoolSelectionCriteria (Key/Value pairs): GTIN (required, 14 digits) and optionally LOT."""
    got: dict[str, str] = {}
    for key, value in pairs:
        k = (key or "").strip().upper()
        if k not in ("GTIN", "LOT") or k in got:
            raise CallRefused(Ret.InvalidSelectionCriteria,
                              f"selection criterion {key!r}: only GTIN and LOT, each once")
        got[k] = (value or "").strip()
    gtin = got.get("GTIN", "")
    if not re.fullmatch(r"\d{14}", gtin):
        raise CallRefused(Ret.InvalidSelectionCriteria, f"GTIN {gtin!r}: 14 digits needed")
    return gtin, (got.get("LOT") or None)


def _format(fmt: str) -> str:
    f = (fmt or "SERIALONLY").strip().upper()
    if f not in FORMATS:
        raise CallRefused(Ret.InvalidSerialNumbersFormat, f"SNFormat {fmt!r}: one of {', '.join(FORMATS)}")
    return f


def _cp_len(conn, gtin: str) -> int:
    row = conn.execute("SELECT company_prefix_len FROM product WHERE gtin=?", (gtin,)).fetchone()
    if row is None:
        raise CallRefused(Ret.InvalidSelectionCriteria, f"no pool for GTIN {gtin}")
    return row[0]


def encode(conn, gtin: str, serial: str, fmt: str) -> str:
    if fmt == "SERIALONLY":
        return serial
    if fmt == "LITERAL":
        return f"(01){gtin}(21){serial}"
    return sgtin_urn(gtin, serial, _cp_len(conn, gtin))


def decode(conn, gtin: str, text: str, fmt: str) -> str:
    """A serial in the collection, as written in `fmt`, for this GTIN → the serial."""
    if fmt == "SERIALONLY":
        serial = text
    elif fmt == "LITERAL":
        m = re.fullmatch(r"\(01\)(\d{14})\(21\)(.{1,20})", text)
        if not m or m.group(1) != gtin:
            raise CallRefused(Ret.InvalidSerialNumbersFormat, f"{text!r} is not (01){gtin}(21)SERIAL")
        serial = m.group(2)
    else:
        prefix = sgtin_urn(gtin, "0", _cp_len(conn, gtin))[:-1]
        if not text.startswith(prefix):
            raise CallRefused(Ret.InvalidSerialNumbersFormat, f"{text!r} is not an SGTIN URN of {gtin}")
        # the TDS escapes of the URN (" % & / < > ?), and only its canonical form
        serial = re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m[1], 16)), text[len(prefix):])
        if not serials._SERIAL.fullmatch(serial) or sgtin_urn(gtin, serial, _cp_len(conn, gtin)) != text:
            raise CallRefused(Ret.InvalidSerialNumbersFormat, f"{text!r}: not a canonical SGTIN URN")
    if not serials._SERIAL.fullmatch(serial):
        raise CallRefused(Ret.InvalidSerialNumbersFormat, f"{text!r}: not a GS1 serial")
    return serial


def _running_batch(conn, gtin: str, lot: str) -> str:
    row = conn.execute("SELECT batch_id, state FROM batch WHERE gtin=? AND lot=?", (gtin, lot)).fetchone()
    if row is None:
        raise CallRefused(Ret.InvalidSelectionCriteria, f"no batch of GTIN {gtin} with lot {lot!r}")
    if row[1] != "running":
        raise CallRefused(Ret.InvalidSelectionCriteria, f"batch {row[0]} (lot {lot!r}) is {row[1]}: serials are "
                      "allocated only to a running batch")
    return row[0]


class PoolManager:
    """The ledger side of the OPEN-SCS pool manager. Every call (refused ones too) is one audit
    record with the OPC UA user, in the same transaction as its effect."""

    def __init__(self, conn: sqlite3.Connection, max_requestable: int = MAX_SN_REQUESTABLE):
        self.conn = conn
        self.max_requestable = max_requestable

    def _audit_refusal(self, user: str, action: str, detail: dict, r: CallRefused) -> Answer:
        with transaction(self.conn):
            audit.append(self.conn, user, action, {**detail, "return": r.status.name, "why": r.why})
        return Answer(r.status, why=r.why)

    def request(self, user: str, count: int, fmt: str, pairs, token: str = "", allocated: bool = False,
                collection: str = "") -> Answer:
        """SNRequestUnallocated (allocated=False: from the GTIN's pool) or SNRequestAllocated (the
        lot's running batch takes them, then they are handed out)."""
        action = "opcua.SNRequestAllocated" if allocated else "opcua.SNRequestUnallocated"
        detail = {"count": count, "format": fmt, "token": token, "criteria": [list(p) for p in pairs]}
        try:
            fmt = _format(fmt)
            gtin, lot = criteria(pairs)
            if allocated and lot is None:
                raise CallRefused(Ret.InvalidSelectionCriteria, "SNRequestAllocated needs a LOT selection criterion")
            if not allocated and lot is not None:
                raise CallRefused(Ret.InvalidSelectionCriteria, "SNRequestUnallocated takes GTIN only (no LOT)")
            if not 0 < count <= self.max_requestable:
                raise CallRefused(Ret.InsufficientSerialNumbers, f"count {count}: 1 to MaxSNRequestable = "
                              f"{self.max_requestable} per call")
            if len(token) > 200:
                raise CallRefused(Ret.InvalidRequestToken, "request token longer than 200 characters")
            token = token or uuid.uuid4().hex
            with transaction(self.conn):
                _cp_len(self.conn, gtin)
                rows = self.conn.execute("SELECT gtin, serial, lot, state FROM serial_grant WHERE token=?",
                                         (token,)).fetchall()
                if rows:  # a repeat: the same page again, nothing new handed out
                    if {r[0] for r in rows} != {gtin} or {r[2] for r in rows} != {lot} or len(rows) != count:
                        raise CallRefused(Ret.InvalidRequestToken,
                                          f"request token {token!r} was used for another request")
                    if any(r[3] == "returned" for r in rows):
                        raise CallRefused(Ret.InvalidRequestToken, f"the serials of request token {token!r} were "
                                      "returned: ask with a new token")
                    picked = sorted(r[1] for r in rows)
                    repeat = True
                else:
                    picked = self._take(gtin, lot, count)
                    now = time.time()
                    self.conn.executemany(
                        "INSERT INTO serial_grant (token, gtin, serial, lot, user, at) VALUES (?,?,?,?,?,?)",
                        [(token, gtin, s, lot, user, now) for s in picked])
                    repeat = False
                audit.append(self.conn, user, action, {**detail, "token": token, "gtin": gtin, "lot": lot,
                                                       "handed_out": 0 if repeat else len(picked), "repeat": repeat,
                                                       "return": Ret.NoError.name})
                out = tuple(encode(self.conn, gtin, s, fmt) for s in picked)
            return Answer(Ret.NoError, out, token, gtin)
        except CallRefused as r:
            return self._audit_refusal(user, action, detail, r)

    def _take(self, gtin: str, lot: str | None, count: int) -> list[str]:
        if lot is not None:
            try:
                return sorted(serials.allocate(self.conn, _running_batch(self.conn, gtin, lot), gtin, count))
            except serials.SerialError as exc:
                raise CallRefused(Ret.InsufficientSerialNumbers, str(exc)) from None
        rows = [s for (s,) in self.conn.execute(
            f"SELECT serial FROM serial WHERE gtin=? AND state='available' AND {serials.USABLE} LIMIT ?",
            (gtin, count))]
        if len(rows) < count:
            raise CallRefused(Ret.InsufficientSerialNumbers,
                              f"pool for {gtin}: {len(rows)} available, {count} requested")
        return sorted(rows)

    def settle(self, user: str, how: str, collection, fmt: str, pairs, allocated: bool | None = None) -> Answer:
        """SNReturnUnallocated (allocated=False) / SNReturnAllocated (True; how="returned") or
        SNtoEncoded (how="used", either) of serials this pool manager handed out; all or nothing."""
        action = {("returned", False): "opcua.SNReturnUnallocated", ("returned", True): "opcua.SNReturnAllocated",
                  ("used", None): "opcua.SNtoEncoded"}[(how, allocated)]
        texts = list(collection or ())
        detail = {"count": len(texts), "format": fmt, "criteria": [list(p) for p in pairs]}
        try:
            fmt = _format(fmt)
            gtin, lot = criteria(pairs)
            if not texts or len(texts) > MAX_SN_RETURNABLE:
                raise CallRefused(Ret.InvalidSerialNumberCollection, f"{len(texts)} serials: 1 to MaxSNReturnable = "
                              f"{MAX_SN_RETURNABLE} per call")
            wanted = [decode(self.conn, gtin, t, fmt) for t in texts]
            if len(set(wanted)) != len(wanted):
                raise CallRefused(Ret.InvalidSerialNumberCollection, "a serial appears twice in the collection")
            with transaction(self.conn):
                out = dict(self.conn.execute(
                    "SELECT g.serial, g.lot FROM serial_grant g JOIN json_each(?) j ON g.serial = j.value"
                    " WHERE g.gtin=? AND g.state='out'", (json.dumps(wanted), gtin)))
                missing = [s for s in wanted if s not in out]
                if missing:
                    raise CallRefused(Ret.InvalidSerialNumberCollection,
                                  f"{len(missing)} serial(s) not handed out by this pool manager (or settled already): "
                                  f"{missing[:5]!r}")
                if allocated and lot is None:
                    raise CallRefused(Ret.InvalidSelectionCriteria, "SNReturnAllocated needs a LOT selection criterion")
                if allocated is False and any(out[s] is not None for s in wanted):
                    raise CallRefused(Ret.InvalidSelectionCriteria,
                                      "allocated serials are returned with SNReturnAllocated")
                if lot is not None and any(out[s] != lot for s in wanted):
                    raise CallRefused(Ret.InvalidSelectionCriteria, f"not every serial was allocated to lot {lot!r}")
                self.conn.executemany("UPDATE serial_grant SET state=? WHERE gtin=? AND serial=? AND state='out'",
                                      [(how, gtin, s) for s in wanted])
                if how == "used":  # allocated to the lot here: the ledger's own allocated → printed
                    self.conn.executemany("UPDATE serial SET state='printed' WHERE gtin=? AND serial=?"
                                          " AND state='allocated'",
                                          [(gtin, s) for s in wanted if out[s] is not None])
                audit.append(self.conn, user, action, {**detail, "gtin": gtin, "lot": lot, "return": Ret.NoError.name})
            return Answer(Ret.NoError, gtin=gtin)
        except CallRefused as r:
            return self._audit_refusal(user, action, detail, r)

    def to_allocated(self, user: str, collection, fmt: str, pairs) -> Answer:
        """SNtoAllocated: serials handed out unallocated become allocated to the lot's running batch,
        through the ledger's own transitions (the grant returned, the serial allocated, granted again
        with the lot under the token `TOKEN@LOT`); all or nothing."""
        action = "opcua.SNtoAllocated"
        texts = list(collection or ())
        detail = {"count": len(texts), "format": fmt, "criteria": [list(p) for p in pairs]}
        try:
            fmt = _format(fmt)
            gtin, lot = criteria(pairs)
            if lot is None:
                raise CallRefused(Ret.InvalidSelectionCriteria, "SNtoAllocated needs a LOT selection criterion")
            if not texts or len(texts) > MAX_SN_RETURNABLE:
                raise CallRefused(Ret.InvalidSerialNumberCollection, f"{len(texts)} serials: 1 to MaxSNReturnable = "
                                  f"{MAX_SN_RETURNABLE} per call")
            wanted = [decode(self.conn, gtin, t, fmt) for t in texts]
            if len(set(wanted)) != len(wanted):
                raise CallRefused(Ret.InvalidSerialNumberCollection, "a serial appears twice in the collection")
            with transaction(self.conn):
                batch_id = _running_batch(self.conn, gtin, lot)
                out = {s: (tok, g_lot) for s, tok, g_lot in self.conn.execute(
                    "SELECT g.serial, g.token, g.lot FROM serial_grant g JOIN json_each(?) j ON g.serial = j.value"
                    " WHERE g.gtin=? AND g.state='out'", (json.dumps(wanted), gtin))}
                missing = [s for s in wanted if s not in out]
                if missing:
                    raise CallRefused(Ret.InvalidSerialNumberCollection,
                                      f"{len(missing)} serial(s) not handed out by this pool manager (or settled already): "
                                      f"{missing[:5]!r}")
                if any(out[s][1] is not None for s in wanted):
                    raise CallRefused(Ret.InvalidSerialNumberCollection, "some serials are allocated already")
                now = time.time()
                self.conn.executemany("UPDATE serial_grant SET state='returned' WHERE gtin=? AND serial=? AND state='out'",
                                      [(gtin, s) for s in wanted])
                self.conn.executemany("UPDATE serial SET state='allocated', batch_id=? WHERE gtin=? AND serial=?"
                                      " AND state='available'", [(batch_id, gtin, s) for s in wanted])
                self.conn.executemany(
                    "INSERT INTO serial_grant (token, gtin, serial, lot, user, at) VALUES (?,?,?,?,?,?)",
                    [(f"{out[s][0]}@{lot}", gtin, s, lot, user, now) for s in wanted])
                audit.append(self.conn, user, action, {**detail, "gtin": gtin, "lot": lot, "batch_id": batch_id,
                                                       "return": Ret.NoError.name})
            return Answer(Ret.NoError, gtin=gtin)
        except CallRefused as r:
            return self._audit_refusal(user, action, detail, r)
        except sqlite3.IntegrityError as exc:  # the ledger's triggers: nothing changed
            return self._audit_refusal(user, action, detail, CallRefused(Ret.InvalidSerialNumberCollection, str(exc)))

    def refuse(self, user: str, action: str, status: Ret, why: str) -> Answer:
        """A call refused before it reached the ledger (e.g. the user's role): audited all the same."""
        return self._audit_refusal(user, action, {}, CallRefused(status, why))
