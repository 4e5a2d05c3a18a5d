"""Aggregation: passed packs fill cases in order, full cases get an SSCC and fill pallets.
An open container has no SSCC yet; it gets one from the never-reused counter when it closes."""

from __future__ import annotations

import json
import sqlite3

from . import db, gs1, reporting
from .masterdata import Batch


class AggregationError(ValueError):
    pass


# A case's packs in one statement (a JSON array; row by row each was a statement of its own, with its
# statement journal: about twice the work), so a refused pack refuses them all: by serial_id; by
# (gtin, serial) with its serial_id looked up (none found: -1, which packed_only_commissioned refuses
# as it does any pack not commissioned). ?1 the case, ?2 the array, ?3 the GTIN.
_PACK_ID = "INSERT INTO packed_row (serial_id, container_id) SELECT value, ?1 FROM json_each(?2)"
_PACK_SERIAL = ("INSERT INTO packed_row (serial_id, container_id) SELECT coalesce((SELECT serial_id FROM serial"
                " WHERE gtin = ?3 AND serial = value), -1), ?1 FROM json_each(?2)")


def packs_in(conn: sqlite3.Connection, container_id: int) -> list[tuple[int, str]]:
    """(serial_id, serial) of the packs in a case, in serial_id order (packed_by_container's: no sort)."""
    return conn.execute("SELECT p.serial_id, s.serial FROM packed_row p JOIN serial s ON s.serial_id = p.serial_id"
                        " WHERE p.container_id = ? ORDER BY p.serial_id", (container_id,)).fetchall()


def sscc_capacity(company_prefix: str) -> int:
    """SSCCs one company prefix can give: extension digit and serial reference count together
    (10 ** (17 - prefix length), less the all-zero one)."""
    return 10 ** (17 - len(company_prefix)) - 1


def next_sscc(conn: sqlite3.Connection, company_prefix: str) -> str:
    """Take the next SSCC (inside the caller's transaction); the counter only moves forward.
    The counter runs through the serial references of extension digit 0, then 1, ... 9, so a
    ledger that only ever used extension 0 goes on without reusing any SSCC."""
    row = conn.execute("SELECT next_ref FROM sscc_counter WHERE company_prefix=?", (company_prefix,)).fetchone()
    n = 1 if row is None else row[0]
    if n > sscc_capacity(company_prefix):
        raise AggregationError(f"company prefix {company_prefix} has no SSCC left: all {sscc_capacity(company_prefix):,}"
                               " (extension digits 0-9) are used; a new company prefix is needed")
    if row is None:
        conn.execute("INSERT INTO sscc_counter VALUES (?, ?)", (company_prefix, n + 1))
    else:
        conn.execute("UPDATE sscc_counter SET next_ref=? WHERE company_prefix=?", (n + 1, company_prefix))
    extension, ref = divmod(n, 10 ** (16 - len(company_prefix)))
    return gs1.sscc(extension, company_prefix, ref)


_CLOSE = ("UPDATE container SET sscc=?1, state='closed', partial=?2, closed_at=strftime('%Y-%m-%dT%H:%M:%fZ','now')"
          " WHERE container_id=?3")
_CLOSE_CASE = _CLOSE.replace(" WHERE", ", parent_id=?4 WHERE")


class Aggregator:
    """Per batch; every method runs inside the caller's transaction."""

    def __init__(self, conn: sqlite3.Connection, batch: Batch, ctx):
        self.conn, self.batch, self.ctx = conn, batch, ctx
        self._case: tuple[int, int] | None = None  # (open case id, packs in it): hot-path mirror

    def forget(self) -> None:
        self._case = None

    def _open(self, level: str) -> tuple[int, bool]:
        """The batch's open container of that level, made if there is none: (id, made now)."""
        row = self.conn.execute("SELECT container_id FROM container WHERE batch_id=? AND level=? AND state='open'",
                                (self.batch.batch_id, level)).fetchone()
        if row:
            return row[0], False
        return self.conn.execute("INSERT INTO container (batch_id, level) VALUES (?, ?)",
                                 (self.batch.batch_id, level)).lastrowid, True

    def _open_case(self) -> tuple[int, int]:
        """(open case id, packs in it)."""
        case, made = self._open("case")
        if made:
            return case, 0
        return case, self.conn.execute("SELECT count(*) FROM packed_row WHERE container_id=?", (case,)).fetchone()[0]

    def children(self, container_id: int) -> list[str]:
        """EPCs directly inside a container (packs in serial_id order: packed_by_container's)."""
        packs = [reporting.sgtin(self.batch, s) for _, s in packs_in(self.conn, container_id)]
        cases = [reporting.sscc(self.batch, c) for (c,) in self.conn.execute(
            "SELECT sscc FROM container WHERE parent_id=? AND state='closed' ORDER BY container_id", (container_id,))]
        return packs + cases

    def add_pack(self, serial: str) -> None:
        """A pack that passed in the caller's transaction (its commissioning event still to come:
        the packing of a case it fills waits for it, see reporting)."""
        self.add_packs([serial])

    def add_packs(self, serials: list[str]) -> None:
        """add_pack for many, in order (each one's serial_id looked up: add_packs_by_id needs none)."""
        gtin = self.batch.gtin
        self._fill(serials, _PACK_SERIAL, lambda case, take: (case, json.dumps(take), gtin))

    def add_packs_by_id(self, serial_ids: list[int]) -> None:
        """add_pack for many, by their serial.serial_id, in order."""
        self._fill(serial_ids, _PACK_ID, lambda case, take: (case, db.id_array(take)))

    def _fill(self, packs: list, sql: str, params) -> None:
        """Into the open case, and the next when it is full: one INSERT statement per case they fill."""
        i = 0
        while i < len(packs):
            case, n = self._case or self._open_case()
            take = packs[i:i + self.batch.case_size - n]
            self.conn.execute(sql, params(case, take))
            i, n = i + len(take), n + len(take)
            self._case = (case, n)
            if n >= self.batch.case_size:
                self._case = None
                self.close(case, line=True)

    def close(self, container_id: int, partial: bool = False, line: bool = False) -> str:
        """Give the container its SSCC, report its packing; a closed case goes onto the open pallet.
        line: filled by add_pack(s), so its packing is reported after the packs' commissioning."""
        level, state = self.conn.execute("SELECT level, state FROM container WHERE container_id=?",
                                         (container_id,)).fetchone()
        if state != "open":
            raise AggregationError(f"{level} {container_id} is not open")
        code = next_sscc(self.conn, self.batch.company_prefix)
        # a case goes onto the open pallet in the same UPDATE (one statement and trigger run, not two)
        pallet, made = self._open("pallet") if level == "case" else (None, False)
        self.conn.execute(*((_CLOSE_CASE, (code, int(partial), container_id, pallet)) if level == "case"
                            else (_CLOSE, (code, int(partial), container_id))))
        reporting.packed(self.conn, self.ctx, self.batch, code, self.children(container_id), after_commissioning=line)
        if level == "case":
            (n,) = (1,) if made else self.conn.execute("SELECT count(*) FROM container WHERE parent_id=?"
                                                       " AND state='closed'", (pallet,)).fetchone()
            if n >= self.batch.pallet_size and not partial:
                self.close(pallet, line=line)
        return code

    def close_partial(self) -> list[str]:
        """Batch close: the open case, then the open pallet, closed explicitly (marked partial)."""
        out = []
        for level in ("case", "pallet"):
            row = self.conn.execute("SELECT container_id FROM container WHERE batch_id=? AND level=? AND state='open'",
                                    (self.batch.batch_id, level)).fetchone()
            if row is None:
                continue
            empty = not self.conn.execute("SELECT 1 FROM packed_row WHERE container_id=? UNION ALL "
                                          "SELECT 1 FROM container WHERE parent_id=? AND state='closed'",
                                          (row[0], row[0])).fetchone()
            if empty:  # nothing in it: leave it without an SSCC, it was never a real container
                self.conn.execute("UPDATE container SET state='disaggregated' WHERE container_id=?", (row[0],))
                continue
            out.append(self.close(row[0], partial=True))
        return out
