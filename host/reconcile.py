"""Batch close: reconcile, then return unused allocations — all in one transaction, or nothing.

Checks (each discrepancy names the serials or units that are off):
  serials allocated = commissioned + rejected + sampled + destroyed + decommissioned + returned
  units detected   = passed + rejected (purged units count as rejected)
  every commissioned pack is in a closed case; every closed case is full (or closed as partial
  here) and on a closed pallet.
A batch that produced nothing is not closed (abort it); fewer or more packs than planned, or a
pool too small for what is still planned, are warnings the report carries."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from . import audit
from .aggregation import Aggregator
from .db import transaction
from .lifecycle import LifecycleError, live_agents, release_allocations
from .masterdata import get_batch
from . import reporting


class ReconcileError(ValueError):
    def __init__(self, report: "Report"):
        super().__init__(f"batch {report.batch_id} not closed: " + "; ".join(report.problems))
        self.report = report


@dataclass
class Report:
    batch_id: str
    serials: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    cases: int = 0
    pallets: int = 0
    partial: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"batch {self.batch_id}"]
        out += [f"  serials {k:<15} {v}" for k, v in self.serials.items()]
        out += [f"  units   {k:<15} {v}" for k, v in self.units.items()]
        out += [f"  cases {self.cases}  pallets {self.pallets}  closed partial: {', '.join(self.partial) or '-'}"]
        out += [f"  WARNING: {w}" for w in self.warnings]
        out += [f"  PROBLEM: {p}" for p in self.problems] or ["  reconciled: no discrepancy"]
        return out


def _few(items, n=20) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f" ... (+{len(items) - n})" if len(items) > n else "")


def reconcile(conn: sqlite3.Connection, batch_id: str) -> Report:
    """Read-only report (the caller's transaction, if any, sees its own partial closes)."""
    b = get_batch(conn, batch_id)
    r = Report(batch_id)
    states = dict(conn.execute("SELECT state, count(*) FROM serial WHERE batch_id=? GROUP BY state", (batch_id,)))
    r.serials = {s: states.get(s, 0) for s in ("allocated", "printed", "commissioned", "rejected", "sampled",
                                              "destroyed", "decommissioned")}
    r.serials["issued to batch"] = sum(r.serials.values())
    printed = [s for (s,) in conn.execute("SELECT serial FROM serial WHERE batch_id=? AND state='printed'", (batch_id,))]
    if printed:
        r.problems.append(f"{len(printed)} serial(s) printed but neither commissioned nor rejected: {_few(printed)}")
    outcomes = {o or "NONE": n for o, n in conn.execute(  # grouped in unit_batch's order: no sort
        "SELECT outcome, count(*) FROM unit_row WHERE batch_id=? GROUP BY outcome", (batch_id,))}  # (the view: a join per row)
    detected = sum(outcomes.values())
    passed = outcomes.get("PASSED", 0)
    rejected = sum(outcomes.get(k, 0) for k in ("REJECTED_CONFIRMED", "REJECTED_UNCONFIRMED", "PURGED", "DESTROYED"))
    r.units = {"detected": detected, "passed": passed, "rejected": rejected}
    if outcomes.get("UNKNOWN"):
        r.units["unknown"] = outcomes["UNKNOWN"]
        unknown = conn.execute("SELECT device_id, boot_id, unit_seq, serial FROM unit WHERE batch_id=? AND outcome='UNKNOWN'"
                               " ORDER BY 1, 2, 3", (batch_id,)).fetchall()
        r.problems.append(f"{len(unknown)} unit(s) with an unknown outcome (the host never heard it), each to be resolved"
                          f" (serialine batch resolve {batch_id} --unit DEVICE:BOOT:SEQ --found-in SSCC | --destroyed): "
                          + _few(f"{d}:{bt}:{u}" + (f" serial {s}" if s else "") for d, bt, u, s in unknown))
    if outcomes.get("NONE"):
        open_units = conn.execute("SELECT device_id, boot_id, unit_seq, serial FROM unit WHERE batch_id=? AND outcome IS NULL",
                                  (batch_id,)).fetchall()
        r.problems.append(f"{len(open_units)} unit(s) detected without an outcome: "
                          + _few(f"{d}/{bt}/{u}" + (f" serial {s}" if s else "") for d, bt, u, s in open_units))
    bad_pass = [s for (s,) in conn.execute(
        "SELECT s.serial FROM unit_row u JOIN serial s USING (serial_id) WHERE u.batch_id=? AND u.outcome='PASSED'"
        " AND s.state NOT IN ('commissioned', 'destroyed', 'sampled', 'decommissioned')", (batch_id,))]
    if bad_pass:
        r.problems.append(f"{len(bad_pass)} passed pack(s) whose serial is not commissioned: {_few(bad_pass)}")
    loose = [s for (s,) in conn.execute(
        "SELECT serial FROM serial s WHERE batch_id=? AND state='commissioned' AND NOT EXISTS (SELECT 1 FROM packed_row p"
        " JOIN container c USING (container_id) WHERE p.serial_id=s.serial_id AND c.state='closed')",
        (batch_id,))]
    if loose:
        r.problems.append(f"{len(loose)} commissioned pack(s) not in a closed case: {_few(loose)}")
    r.cases, r.pallets = (conn.execute("SELECT count(*) FROM container WHERE batch_id=? AND level=? AND state='closed'",
                                       (batch_id, lv)).fetchone()[0] for lv in ("case", "pallet"))
    r.partial = [s for (s,) in conn.execute("SELECT sscc FROM container WHERE batch_id=? AND state='closed' AND partial=1",
                                            (batch_id,))]
    short = conn.execute(
        "SELECT c.sscc, (SELECT count(*) FROM packed_row p WHERE p.container_id=c.container_id) n FROM container c"
        " WHERE batch_id=? AND level='case' AND state='closed' AND partial=0 AND n<>?", (batch_id, b.case_size)).fetchall()
    if short:
        r.problems.append(f"{len(short)} case(s) not full: " + _few(f"{s} ({n}/{b.case_size})" for s, n in short))
    orphan = [s for (s,) in conn.execute(
        "SELECT c.sscc FROM container c LEFT JOIN container p ON p.container_id=c.parent_id WHERE c.batch_id=?"
        " AND c.level='case' AND c.state='closed' AND (p.state IS NOT 'closed')", (batch_id,))]
    if orphan:
        r.problems.append(f"{len(orphan)} case(s) not on a closed pallet: {_few(orphan)}")
    opened = conn.execute("SELECT count(*) FROM container WHERE batch_id=? AND state='open'", (batch_id,)).fetchone()[0]
    if opened:
        r.problems.append(f"{opened} container(s) still open")
    _planned(conn, b, r)
    return r


def _planned(conn, b, r: Report) -> None:
    """Packs made against the work order, and whether the pool can still cover it."""
    made = r.serials["commissioned"] + r.serials["sampled"] + r.serials["destroyed"] + r.serials["decommissioned"]
    if b.state in ("created", "running"):
        (free,) = conn.execute("SELECT count(*) FROM serial WHERE gtin=? AND state='available'", (b.gtin,)).fetchone()
        need = b.planned - made - r.serials["allocated"]
        if need > free:
            r.warnings.append(f"serial pool for {b.gtin} has {free} available, but the {b.planned} planned packs"
                              f" need {need} more (short by {need - free}): add serials before the run reaches them")
        return
    if made == 0:
        return
    if made < b.planned:
        r.warnings.append(f"{made} of {b.planned} planned packs made ({100 * made / b.planned:.1f} %): short batch")
    elif made > b.planned:
        r.warnings.append(f"{made} packs made, {b.planned} planned: {made - b.planned} over plan")


def close_batch(conn: sqlite3.Connection, batch_id: str, user: str) -> Report:
    """Close partial containers, reconcile, return unused allocations, mark closed; refuses (and
    rolls everything back) on any discrepancy."""
    b = get_batch(conn, batch_id)
    if b.state not in ("running", "reopened"):
        raise ValueError(f"batch {batch_id} is {b.state}, only a running or reopened batch can be closed")
    with transaction(conn):
        agents = live_agents(conn, batch_id)
        if agents:
            raise LifecycleError(f"batch {batch_id} is being run by an agent ({agents[0]}): stop the line and "
                                 "its agent first, then close")
        ctx = reporting.context_for(b)
        partial = Aggregator(conn, b, ctx).close_partial()
        conn.execute("UPDATE batch SET state='closing' WHERE batch_id=?", (batch_id,))
        report = reconcile(conn, batch_id)
        (made,) = conn.execute("SELECT count(*) FROM serial WHERE batch_id=? AND state IN ('commissioned',"
                               " 'sampled', 'destroyed', 'decommissioned')", (batch_id,)).fetchone()
        if not made:
            report.problems.append(f"nothing was made (0 of {b.planned} planned packs): a batch that produced "
                                   f"nothing is not closed; abort it (serialine batch abort {batch_id} --reason ...)")
        if report.problems:
            raise ReconcileError(report)
        _, voided, returned = release_allocations(conn, batch_id)
        report.serials["rejected"] += voided
        conn.execute("UPDATE batch SET state='closed', closed_at=strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE batch_id=?",
                     (batch_id,))
        report.serials["returned"] = returned
        audit.append(conn, user, "batch.close", {"batch_id": batch_id, "partial": partial, "returned": returned, "voided": voided,
                                                 "serials": report.serials, "units": report.units,
                                                 "warnings": report.warnings})
    return report
