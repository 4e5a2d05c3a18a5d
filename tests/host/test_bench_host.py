"""`serialine bench host` runs end to end at a tiny size, with more units than the timed pool,
and reports its bare-SQLite baseline and the ratio like `bench batch`; the baseline rewrites
exactly the rows the host path left (the batch's serials, not the rest of the pool)."""

from __future__ import annotations

import json

from serialine.host import db, masterdata, serials
from serialine.host.ledger import Ledger
from serialine.tools import bench_host


def test_bench_host_tiny_prints_baseline_and_ratio(capsys):
    assert bench_host.main(["--units", "100", "--serials", "50", "--per-poll", "16"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["events"] == 400
    for key in ("events_per_s", "events_per_cpu_s", "events_per_s_sqlite_baseline",
                "events_per_cpu_s_sqlite_baseline", "ratio", "host_cpu_s"):
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, key


def test_baseline_rewrites_the_rows_the_host_path_left(tmp_path):
    conn = db.connect(str(tmp_path / "l.db"))
    masterdata.add_product(conn, bench_host.GTIN, "bench", "EU_FMD", 7)
    serials.generate(conn, bench_host.GTIN, 500)  # 470 of them stay in the pool
    masterdata.create_batch(conn, "B", bench_host.GTIN, "L1", "2030-01-31", 30, 10, 20)
    masterdata.start_batch(conn, "B")
    events, polls = bench_host.run_polls(conn, Ledger(conn, "B"), 30, 8)
    assert (events, polls) == (120, 5)  # a poll per 8 units (4 events each), the last outcomes in a fifth
    _, _, rows = bench_host.sqlite_baseline(conn, str(tmp_path / "bare.db"), polls)
    bare = db.sqlite3.connect(str(tmp_path / "bare.db"))
    assert bare.execute("SELECT count(*) FROM serial").fetchone()[0] == 30
    assert bare.execute("SELECT count(*) FROM device_event").fetchone()[0] == 120
    tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    assert rows == sum(bare.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in tables)
    assert bench_host.dbstat_per_unit(conn, 30)["device_event"] > 0
