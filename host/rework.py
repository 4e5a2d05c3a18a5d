"""Rework: every change is one transaction, recorded with user, time and reason (rework table and
audit chain) together with its EPCIS event; an impossible request raises ReworkError and changes
nothing."""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3

from . import audit, reporting
from .db import transaction
from .aggregation import Aggregator, packs_in
from .lifecycle import check_reworkable, live_agents
from .masterdata import get_batch

KINDS = ("destroyed", "sampled", "decommissioned")


class ReworkError(ValueError):
    pass


def _record(conn, user, action, target, reason, detail):
    if not user or not reason:
        raise ReworkError("rework needs a user and a reason")
    at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    conn.execute("INSERT INTO rework (at, user, action, target, reason, detail) VALUES (?,?,?,?,?,?)",
                 (at, user, action, target, reason, json.dumps(detail, default=str)))
    audit.append(conn, user, "rework." + action, {"target": target, "reason": reason, **detail})


def _pack(conn, gtin: str, serial: str):
    """(serial_id, state, batch, its case's container_id or None) of a pack."""
    row = conn.execute("SELECT s.serial_id, s.state, s.batch_id, p.container_id FROM serial s"
                       " LEFT JOIN packed_row p ON p.serial_id = s.serial_id WHERE s.gtin=? AND s.serial=?",
                       (gtin, serial)).fetchone()
    if row is None:
        raise ReworkError(f"unknown pack {gtin}/{serial}")
    return row


def _container(conn, sscc: str):
    row = conn.execute("SELECT container_id, batch_id, level, state FROM container WHERE sscc=?", (sscc,)).fetchone()
    if row is None:
        raise ReworkError(f"unknown SSCC {sscc}")
    if row[3] != "closed":
        raise ReworkError(f"{row[2]} {sscc} is {row[3]}")
    return row


def _sscc_of(conn, container_id):
    return conn.execute("SELECT sscc FROM container WHERE container_id=?", (container_id,)).fetchone()[0]


def _check_fits(conn, b, cid: int, sscc: str, gtin: str, serial: str, leaving: int = 0) -> int:
    """The one rule for a pack going into a case by rework (add, replace): commissioned, in no
    case, of the case's batch, and room for it once `leaving` packs are out. → its serial_id."""
    serial_id, state, pack_batch, in_case = _pack(conn, gtin, serial)
    if in_case is not None:
        raise ReworkError(f"pack {serial} is already in case {_sscc_of(conn, in_case)}: a pack is in one case at most")
    if state != "commissioned":
        raise ReworkError(f"pack {serial} is {state}: only a commissioned pack can be packed")
    if pack_batch != b.batch_id or gtin != b.gtin:
        raise ReworkError(f"pack {serial} belongs to batch {pack_batch}, case {sscc} to {b.batch_id}: "
                          "a case holds packs of its own batch only")
    (n,) = conn.execute("SELECT count(*) FROM packed_row WHERE container_id=?", (cid,)).fetchone()
    if n - leaving >= b.case_size:
        raise ReworkError(f"case {sscc} is full ({n}/{b.case_size})")
    return serial_id


def remove_pack(conn: sqlite3.Connection, gtin: str, serial: str, user: str, reason: str) -> str:
    """Take a pack out of its case → the case's SSCC."""
    with transaction(conn):
        serial_id, state, batch_id, cid = _pack(conn, gtin, serial)
        if cid is None:
            raise ReworkError(f"pack {serial} is not in a case")
        b = check_reworkable(conn, batch_id)
        sscc = _sscc_of(conn, cid)
        if sscc is None:
            raise ReworkError(f"pack {serial} is in a case that is still open on the line")
        conn.execute("DELETE FROM packed_row WHERE serial_id=?", (serial_id,))
        reporting.unpacked(conn, reporting.context_for(b), b, sscc, [reporting.sgtin(b, serial)])
        _record(conn, user, "remove", serial, reason, {"gtin": gtin, "case": sscc})
        return sscc


def add_pack(conn: sqlite3.Connection, sscc: str, gtin: str, serial: str, user: str, reason: str) -> None:
    """Put a commissioned, unpacked pack of the same batch into a closed case."""
    with transaction(conn):
        cid, batch_id, level, _ = _container(conn, sscc)
        if level != "case":
            raise ReworkError(f"{sscc} is a {level}; packs go into cases")
        b = check_reworkable(conn, batch_id)
        _into(conn, cid, _check_fits(conn, b, cid, sscc, gtin, serial))
        reporting.packed(conn, reporting.context_for(b), b, sscc, [reporting.sgtin(b, serial)])
        _record(conn, user, "add", serial, reason, {"gtin": gtin, "case": sscc})


def _into(conn, cid: int, serial_id: int) -> None:
    """The pack into the closed case `cid` (packed_into_open_case lets packs only into open cases:
    it is open for the insert, inside the caller's transaction)."""
    conn.execute("UPDATE container SET state='open' WHERE container_id=?", (cid,))
    conn.execute("INSERT INTO packed_row (serial_id, container_id) VALUES (?, ?)", (serial_id, cid))
    conn.execute("UPDATE container SET state='closed' WHERE container_id=?", (cid,))


def replace_pack(conn, gtin: str, old_serial: str, new_serial: str, user: str, reason: str) -> str:
    """Take one pack out of its case and put another in its place: both steps or neither."""
    with transaction(conn):
        _, _, _, cid = _pack(conn, gtin, old_serial)
        if cid is None or _sscc_of(conn, cid) is None:
            raise ReworkError(f"pack {old_serial} is not in a closed case")
        sscc = _sscc_of(conn, cid)
        b = check_reworkable(conn, _container(conn, sscc)[1])
        _check_fits(conn, b, cid, sscc, gtin, new_serial, leaving=1)
        _remove_in(conn, gtin, old_serial, user, reason)
        _add_in(conn, sscc, gtin, new_serial, user, reason)
        return sscc


def _remove_in(conn, gtin, serial, user, reason):
    serial_id, _, batch_id, cid = _pack(conn, gtin, serial)
    b = get_batch(conn, batch_id)
    sscc = _sscc_of(conn, cid)
    conn.execute("DELETE FROM packed_row WHERE serial_id=?", (serial_id,))
    reporting.unpacked(conn, reporting.context_for(b), b, sscc, [reporting.sgtin(b, serial)])
    _record(conn, user, "remove", serial, reason, {"gtin": gtin, "case": sscc})


def _add_in(conn, sscc, gtin, serial, user, reason):
    cid, batch_id, level, _ = _container(conn, sscc)
    b = get_batch(conn, batch_id)
    _into(conn, cid, _pack(conn, gtin, serial)[0])
    reporting.packed(conn, reporting.context_for(b), b, sscc, [reporting.sgtin(b, serial)])
    _record(conn, user, "add", serial, reason, {"gtin": gtin, "case": sscc})


def _off_pallet(conn, b, cid: int, sscc: str) -> None:
    """A case leaving its pallet by rework: off it in the ledger, and in EPCIS if the pallet was
    reported (closed)."""
    row = conn.execute("SELECT p.sscc, p.state FROM container c JOIN container p ON p.container_id = c.parent_id"
                       " WHERE c.container_id=?", (cid,)).fetchone()
    conn.execute("UPDATE container SET parent_id=NULL WHERE container_id=?", (cid,))
    if row is not None and row[1] == "closed":
        reporting.unpacked(conn, reporting.context_for(b), b, row[0], [reporting.sscc(b, sscc)])


def _end_of_life(conn, b, serials: list[str], kind: str) -> None:
    """The packs' serials end as `kind`; a sample is first observed being taken (CBV sampling)."""
    if serials:
        ctx = reporting.context_for(b)
        if kind == "sampled":
            reporting.sampled(conn, ctx, b, serials)
        reporting.decommissioned(conn, ctx, b, serials, kind)


def disaggregate(conn: sqlite3.Connection, sscc: str, user: str, reason: str) -> list[str]:
    """Empty a case or pallet; its SSCC is retired (never given again). → the children's EPCs."""
    with transaction(conn):
        cid, batch_id, level, _ = _container(conn, sscc)
        b = check_reworkable(conn, batch_id)
        children = Aggregator(conn, b, None).children(cid)
        _off_pallet(conn, b, cid, sscc)
        conn.execute("DELETE FROM packed_row WHERE container_id=?", (cid,))
        conn.execute("UPDATE container SET parent_id=NULL WHERE parent_id=?", (cid,))
        conn.execute("UPDATE container SET state='disaggregated' WHERE container_id=?", (cid,))
        reporting.unpacked(conn, reporting.context_for(b), b, sscc, children)
        _record(conn, user, "disaggregate", sscc, reason, {"level": level, "children": len(children)})
        return children


def decommission(conn: sqlite3.Connection, gtin: str, serial: str, kind: str, user: str, reason: str) -> None:
    """Destroy / sample / decommission one pack (taken out of its case first)."""
    if kind not in KINDS:
        raise ReworkError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    with transaction(conn):
        _decommission_in(conn, gtin, serial, kind, user, reason)


def _decommission_in(conn, gtin, serial, kind, user, reason):
    serial_id, state, batch_id, cid = _pack(conn, gtin, serial)
    if state not in ("commissioned", "printed"):
        raise ReworkError(f"pack {serial} is {state}: it cannot be {kind}")
    check_reworkable(conn, batch_id)
    detail = {"gtin": gtin, "kind": kind}
    if cid is not None and _sscc_of(conn, cid) is None:
        _out_of_open_case(conn, batch_id, serial_id, serial, kind)
        detail["case"] = "open"
    elif cid is not None:
        _remove_in(conn, gtin, serial, user, reason)
    b = get_batch(conn, batch_id)
    conn.execute("UPDATE serial SET state=? WHERE serial_id=?", (kind, serial_id))
    if state == "commissioned":
        _end_of_life(conn, b, [serial], kind)
    _record(conn, user, "decommission", serial, reason, detail)


def _out_of_open_case(conn, batch_id, serial_id, serial, kind):
    """A pack leaving the case the line is filling: that case was never reported (no SSCC, no
    packing event yet), so no unpacking event. Only while no agent fills it: the agent counts the
    open case's packs in memory."""
    agents = live_agents(conn, batch_id)
    if agents:
        raise ReworkError(f"pack {serial} is in the open case of batch {batch_id}, which an agent is filling "
                          f"({agents[0]}): stop the line and its agent first, or mark it {kind} once its case is closed")
    conn.execute("DELETE FROM packed_row WHERE serial_id=?", (serial_id,))


def decommission_container(conn, sscc: str, kind: str, user: str, reason: str) -> int:
    """Decommission every pack in a case or pallet, recursively; the containers are retired."""
    if kind not in KINDS:
        raise ReworkError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    with transaction(conn):
        cid, batch_id, level, _ = _container(conn, sscc)
        b = check_reworkable(conn, batch_id)
        ctx = reporting.context_for(b)
        # each containment change once, top down: case off its pallet / pallet emptied, cases
        # emptied; then one end-of-life for all the packs (every pack in a case is commissioned)
        _off_pallet(conn, b, cid, sscc)
        cases = [(cid, sscc)] if level == "case" else conn.execute(
            "SELECT container_id, sscc FROM container WHERE parent_id=? AND state='closed' ORDER BY container_id",
            (cid,)).fetchall()
        if level == "pallet":
            reporting.unpacked(conn, ctx, b, sscc, [reporting.sscc(b, c) for _, c in cases])
            conn.execute("UPDATE container SET parent_id=NULL WHERE parent_id=?", (cid,))
        ids, packs = [], []
        for case_id, case_sscc in cases:
            inside = packs_in(conn, case_id)
            conn.execute("DELETE FROM packed_row WHERE container_id=?", (case_id,))
            reporting.unpacked(conn, ctx, b, case_sscc, [reporting.sgtin(b, s) for _, s in inside])
            ids += [i for i, _ in inside]
            packs += [s for _, s in inside]
        for c in {cid, *(case_id for case_id, _ in cases)}:
            conn.execute("UPDATE container SET state='disaggregated' WHERE container_id=?", (c,))
        conn.executemany("UPDATE serial SET state=? WHERE serial_id=?", [(kind, i) for i in ids])
        _end_of_life(conn, b, packs, kind)
        for s in packs:
            _record(conn, user, "decommission", s, reason, {"gtin": b.gtin, "kind": kind, "container": sscc})
        _record(conn, user, "decommission_container", sscc, reason, {"kind": kind, "packs": len(packs)})
        return len(packs)
