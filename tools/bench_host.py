"""`serialine bench host`: the host agent's figures on this machine.

- events_per_s: unit events (detected, printed, inspected, outcome) through store + verdict +
  aggregation + EPCIS outbox, as the agent runs them (`run_polls`): one transaction per poll of a
  running line's events (4 a unit), its verdicts and the coder's top-up, as the agent's step.
- verdict_latency_ms p50/p99: one decision in-process (parse the read with biip, check grade,
  batch, serial, duplicate, code) — the time from camera result to verdict ready to send.
- events_per_s_sqlite_baseline: the same rows (the batch's serials and every other table's rows)
  written by a bare SQLite executemany into the same tables (their keys and constraints, no
  secondary index, no trigger), in as many transactions, in the same run; ratio = events_per_s
  over it (comparable across machines). *_per_cpu_s: per second of this process's CPU.
- serials_per_s: random serial generation into the pool (one transaction)."""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from serialine.host import db, masterdata, serials
from serialine.host.db import transaction
from serialine.host.ledger import Ledger

GTIN = "09506000134352"


def run_polls(conn, L: Ledger, units: int, per_poll: int, latencies: list | None = None,
              on_poll=None) -> tuple[int, int]:
    """`units` passed units through the host path in the agent's transactions (host/agent.py
    `Agent._store_and_decide`: one a step) on a running line: each poll brings `per_poll` units'
    detected/printed/inspected events and the outcomes of the poll before's units (4 events a unit),
    and its transaction holds their verdicts and the coder jobs of the next `per_poll` units (the
    top-up, committed before it is pushed); the first jobs as the agent's start queues them, the
    last outcomes in a poll of their own. Not here: the agent's Python around the ledger
    (correlator, print check, trend). `latencies` gets each decision's time; `on_poll(events)` is
    called after each poll's transaction, as the agent's step ends (its audit checkpoints).
    → (events, polls)."""
    seq = u = polls = 0
    with transaction(conn):
        L.queue_codes(min(per_poll, units))
    last: range = range(0)  # the units whose outcomes the next poll brings
    while u < units or last:
        n = min(per_poll, units - u)
        with transaction(conn):  # one poll: outcomes, the line's events for n units, verdicts, top-up
            msgs = []
            for k in last:
                seq += 1
                msgs.append(("UNIT_OUTCOME", dict(event_seq=seq, unit_seq=k, outcome=1, reason=0,
                                                 gate_error=0, pos=0, t_us=0)))
            for k in range(u, u + n):
                for name, f in (("UNIT_DETECTED", dict(unit_seq=k, pos=0, t_us=0, flags=0)),
                                ("UNIT_PRINTED", dict(unit_seq=k, pos=0, t_us=0)),
                                ("UNIT_INSPECTED", dict(unit_seq=k, pos=0, t_us=0))):
                    seq += 1
                    f["event_seq"] = seq
                    msgs.append((name, f))
            L.store_batch("bench", 1, msgs)
            rows = []
            for k in range(u, u + n):
                code = L.expected_code("bench", 1, k)
                ts = time.perf_counter()
                verdict, reason, serial = L.judge.decide("]d2" + code, "A", code)
                if latencies is not None:
                    latencies.append(time.perf_counter() - ts)
                rows.append(("bench", 1, k, verdict, reason, serial, "A"))
            if rows:
                L.record_verdicts(rows)
            L.flush_events()
            if u + n < units:
                L.queue_codes(min(per_poll, units - u - n))
        if on_poll is not None:
            on_poll(len(msgs))
        last = range(u, u + n)
        u += n
        polls += 1
    return seq, polls


# rows a host path wrote or changed: of the pool, only the serials the batch took
_BASELINE_ROWS = {"serial": "batch_id IS NOT NULL"}


def sqlite_baseline(conn: sqlite3.Connection, path: str, transactions: int) -> tuple[float, float, int]:
    """The rows the host path left in `conn`, written again by a bare executemany into the same
    tables (as created: keys and constraints; no secondary index, no trigger) in `transactions`
    transactions, at the ledger's synchronous level. Returns (seconds, CPU seconds, rows)."""
    tables = [(name, sql) for name, sql in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    data = []
    for name, _ in tables:
        rows = conn.execute(f'SELECT * FROM "{name}" WHERE {_BASELINE_ROWS.get(name, "1")}').fetchall()
        if rows:
            data.append((name, rows))
    bare = sqlite3.connect(path, isolation_level=None)
    (sync,) = conn.execute("PRAGMA synchronous").fetchone()
    bare.execute("PRAGMA journal_mode=WAL")
    bare.execute(f"PRAGMA synchronous={sync}")
    for name, sql in tables:
        bare.execute(sql)
    total = sum(len(rows) for _, rows in data)
    chunk = max(1, -(-total // max(1, transactions)))
    t0, c0 = time.perf_counter(), time.process_time()
    for name, rows in data:
        marks = ",".join("?" * len(rows[0]))
        for i in range(0, len(rows), chunk):
            bare.execute("BEGIN")
            bare.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows[i:i + chunk])
            bare.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    bare.close()
    return elapsed, cpu, total


def dbstat_per_unit(conn: sqlite3.Connection, units: int) -> dict[str, float]:
    """Bytes per unit of each table and index holding a byte or more per unit (its pages)."""
    return {name: round(size / units, 1) for name, size in conn.execute(
        "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC") if size >= units}


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine bench host")
    ap.add_argument("--units", type=int, default=10000)
    ap.add_argument("--per-poll", type=int, default=64, help="units per poll (4 events each)")
    ap.add_argument("--serials", type=int, default=200000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        conn = db.connect(str(Path(d) / "bench.db"))
        masterdata.add_product(conn, GTIN, "bench", "EU_FMD", 7)
        t = time.perf_counter()
        serials.generate(conn, GTIN, args.serials)
        serials_per_s = args.serials / (time.perf_counter() - t)
        if args.units > args.serials:  # the batch needs a serial per unit (not timed)
            serials.generate(conn, GTIN, args.units - args.serials)
        masterdata.create_batch(conn, "B", GTIN, "L1", "2030-01-31", args.units, 10, 20)
        masterdata.start_batch(conn, "B")
        L = Ledger(conn, "B")
        latencies: list[float] = []
        t0, c0 = time.perf_counter(), time.process_time()
        seq, polls = run_polls(conn, L, args.units, args.per_poll, latencies)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        base_s, base_cpu, base_rows = sqlite_baseline(conn, str(Path(d) / "bare.db"), polls)
        # reads that are not a code this agent built (misreads, foreign codes) are parsed by biip
        parsed_lat = []
        for k in range(min(1000, args.units)):
            code = L.expected_code("bench", 1, k) or ""
            misread = "]d2" + code.replace("\x1d21", "\x1d21Z", 1)
            ts = time.perf_counter()
            L.judge.decide(misread, "A", code)
            parsed_lat.append(time.perf_counter() - ts)
        passed = conn.execute("SELECT count(*) FROM serial WHERE state='commissioned'").fetchone()[0]
        cases = conn.execute("SELECT count(*) FROM container WHERE level='case' AND state='closed'").fetchone()[0]
        conn.close()
    if passed != args.units:
        raise SystemExit(f"bench broken: {passed} of {args.units} units commissioned")
    figures = {
        "events_per_s": round(seq / elapsed),
        "units_per_s": round(args.units / elapsed),
        "events_per_cpu_s": round(seq / cpu),  # the same, per second of this process's CPU (shared machines)
        "events_per_s_sqlite_baseline": round(seq / base_s),
        "events_per_cpu_s_sqlite_baseline": round(seq / base_cpu),
        "ratio": round(base_s / elapsed, 4),
        "host_cpu_s": round(cpu, 3),
        "verdict_latency_ms_p50": round(statistics.median(latencies) * 1e3, 4),
        "verdict_latency_ms_p99": round(_pct(latencies, 0.99) * 1e3, 4),
        "verdict_latency_ms_p99_biip": round(_pct(parsed_lat, 0.99) * 1e3, 4),
        "serials_per_s": round(serials_per_s),
        "units": args.units, "events": seq, "baseline_rows": base_rows, "cases_closed": cases,
        "units_per_poll": args.per_poll,
    }
    try:
        from rich.console import Console
        from rich.table import Table
        table = Table(title="serialine bench host")
        table.add_column("figure"); table.add_column("value", justify="right")
        for k, v in figures.items():
            table.add_row(k, str(v))
        Console().print(table)
    except ImportError:  # pragma: no cover
        for k, v in figures.items():
            print(f"{k:<26} {v}")
    print(json.dumps(figures))
    return 0
