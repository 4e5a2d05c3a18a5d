"""The reads of unit a running line repeats (the service's status figures and its drain, the
console's live page, PackML's counters) touch only unit_row's index unit_batch: never serial (the
view unit joins it for every row of an aggregate: ~3x the work), never a sort or a walk of every
unit of the batch or boot. At 1M units a batch each of those is a second or more a refresh."""

from __future__ import annotations

import re
from types import SimpleNamespace

from serialine.host import linefile, service
from serialine.host.console.app import Console
from serialine.host.opcua import packml
from serialine.tools import bench_batch

from test_service import LINE_FILE

_UNIT = re.compile(r"\bunit(_row)?\b")


def _reads(conn, run) -> list[str]:
    """The statements reading unit that run() executes (as SQLite ran them, values bound)."""
    said: list[str] = []
    conn.set_trace_callback(said.append)
    try:
        run()
    finally:
        conn.set_trace_callback(None)
    return [s for s in said if _UNIT.search(s)]


def _opened(conn, sql: str) -> set[str]:
    """The tables and indexes the statement's program opens."""
    names = dict(conn.execute("SELECT rootpage, name FROM sqlite_master WHERE rootpage > 0"))
    return {names[row[3]] for row in conn.execute("EXPLAIN " + sql) if row[1] == "OpenRead" and row[4] == 0}


def _plan(conn, sql: str) -> list[str]:
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]


def _check(conn, sql: str, only: set[str], seek: str = "batch_id=?", sort: bool = False) -> None:
    """It opens only `only`, seeks unit_batch by `seek`, scans nothing, sorts nothing (unless `sort`:
    the few rejects)."""
    opened, plan = _opened(conn, sql), _plan(conn, sql)
    assert opened <= only, (sql, opened, plan)
    assert any(f"INDEX unit_batch ({seek})" in p for p in plan), (sql, plan)
    assert not any(p.startswith("SCAN") or ("TEMP B-TREE" in p and not sort) for p in plan), (sql, plan)


def test_the_periodic_reads_of_unit_use_unit_batch_only(tmp_path):
    path = tmp_path / "serialine.db"
    conn, *_ = bench_batch.make_ledger(str(path), 130, 64)
    (batch,) = conn.execute("SELECT batch_id FROM batch").fetchone()
    (device, boot) = conn.execute("SELECT device_id, boot_id FROM unit_row LIMIT 1").fetchone()
    with bench_batch.db.transaction(conn):  # the session the agent's ledger.new_boot records (the bench writes units only)
        conn.execute("INSERT INTO device_boot (device_id, boot_id, batch_id, first_seen) VALUES (?,?,?,0)",
                     (device, boot, batch))
    conn.close()

    cfg = tmp_path / "line.toml"
    cfg.write_text(LINE_FILE.format(port="/dev/null", cpm=4, coder="127.0.0.1:1", camera="127.0.0.1:2",
                                    db=path, gate_at=400.0, upstream=""))
    svc = service.Service(linefile.load(cfg))
    svc.conn = conn = bench_batch.db.connect(str(path))
    svc.agent = SimpleNamespace(ledger=SimpleNamespace(batch=SimpleNamespace(batch_id=batch)), verdict_latency_s=[],
                                device_id=device, boot_id=boot)
    try:
        (figures,) = _reads(conn, svc._read_figures)
        assert svc._figures["counts"] == {"PASSED": 130, "detected": 130}
        _check(conn, figures, {"unit_batch"})  # covering, in its order: no sort
        (in_flight,) = _reads(conn, lambda: svc._in_flight() == 0 or 1 / 0)
        _check(conn, in_flight, {"unit_batch", "unit_row", "device_boot"}, "batch_id=? AND outcome=?")
        (defective,) = _reads(conn, lambda: packml.defective_by_reason(conn, batch) == [] or 1 / 0)
        _check(conn, defective, {"unit_batch", "unit_row"}, "batch_id=? AND outcome=?", sort=True)
    finally:
        conn.close()

    console = Console(str(path))
    c = console.conn()
    try:
        reads = _reads(c, console.live_context)
        assert len(reads) == 2, reads  # the counts (no agent to ask), the reject reasons
        _check(c, reads[0], {"unit_batch"})
        _check(c, reads[1], {"unit_batch", "unit_row"}, "batch_id=? AND outcome=?", sort=True)
    finally:
        c.close()
