"""`serialine bench batch --units N`: one big batch through the ledger at one size.

- events_per_s: unit events (detected, printed, inspected, outcome) through the host path (store +
  verdict + aggregation + EPCIS outbox, one transaction per poll, as `serialine bench host`);
  events_per_s_sqlite_baseline: the same rows written by a bare SQLite executemany, in the same run
  (`bench_host.sqlite_baseline`); ratio = the first over the second (comparable across machines).
- bytes_per_unit: the ledger file (checkpointed) over the units; bytes_per_unit_tables: each table
  and index of a byte or more per unit (SQLite's dbstat: the pages it holds).
- checkpoints, checkpoints_cpu_s: the audit checkpoints the fill made at the running agent's cadence
  (`audit.Checkpointer`: every 10,000 units, and as it stops), in the host path's figures as the
  agent pays them.
- reconcile_s, close_s: `reconcile.reconcile` and `reconcile.close_batch` of the batch (and their
  *_cpu_s: CPU seconds, the figure to compare on a shared machine; close seals the batch's rows
  and the logs' tail since the last checkpoint).
- export_jsonld_s, export_xml_s: `serialine epcis export` of the batch, each in its own process
  (export_*_cpu_s: that process's CPU seconds);
  export_peak_rss_mb: the larger of the two processes' peak RSS (their VmHWM: what ru_maxrss
  says of a process not forked from a big one).
- serials_per_s: `serialine batch serials --generate` of --serials random serials into the pool
  the batch left, in its own process, --serial-draws times one after the other (each one real work
  into the pool the draws before it grew): the median draw's serials per wall second;
  serials_per_s_best the best draw's, serials_draws every draw's in order; their CPU time
  (serials_per_cpu_s, the median) and peak RSS (tools/bench_serials.py)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from serialine.host import audit, db, masterdata, reconcile, serials
from serialine.host.cli import at_least_one
from serialine.host.ledger import Ledger
from serialine.tools.bench_host import dbstat_per_unit, run_polls, sqlite_baseline
from serialine.tools.bench_serials import DRAWS, SERIALS_PER_DRAW, generate

GTIN = "00350242040624"  # US: a DSCSA product, so the 1.2 export has its master data
SITE = "urn:epc:id:sgln:4012345.00000.0"
PARTNER = "urn:epc:id:sgln:0614141.00001.0"
BATCH = "B"


def make_ledger(path: str, units: int, per_poll: int = 64, case_size: int = 10, pallet_size: int = 20,
                checkpoints: bool = False):
    """A ledger with one closed-ready batch of `units` passed units, filled through the host
    path; `checkpoints`: the running agent's audit checkpoints (`audit.Checkpointer`, noted after
    each poll as the agent does; their cost is in the host path's figures). Returns (conn, events,
    seconds in the host path, polls, its CPU seconds, the Checkpointer or None)."""
    conn = db.connect(path)
    masterdata.add_product(conn, GTIN, "Examplol 100 mg tablets", "US_DSCSA", 7, ndc="50242-040-62",
                           dosage_form="TABLET", strength="100 mg", net_content="30 tablets",
                           manufacturer="Example Pharma Inc.")
    masterdata.set_location(conn, masterdata.Location(SITE, "Plant Berlin", "Allee 1", "Berlin", None,
                                                      "10115", "DE", "Europe/Berlin"))
    masterdata.set_location(conn, masterdata.Location(PARTNER, "Wholesaler DC", "1 Main St", "Columbus",
                                                      "OH", "43215", "US"))
    serials.generate(conn, GTIN, units)
    masterdata.create_batch(conn, BATCH, GTIN, "L1", date.today() + timedelta(days=700), units, case_size,
                            pallet_size, read_point="4012345000009.7")
    masterdata.start_batch(conn, BATCH)
    L = Ledger(conn, BATCH)
    t0, c0 = time.perf_counter(), time.process_time()
    cadence = audit.Checkpointer(conn, "bench") if checkpoints else None
    seq, polls = run_polls(conn, L, units, per_poll, on_poll=cadence.note if cadence else None)
    if cadence:
        cadence.flush()  # the agent stops (a batch is closed only then)
    return conn, seq, time.perf_counter() - t0, polls, time.process_time() - c0, cadence


# the child's own peak: its VmHWM (ru_maxrss would carry the forking parent's pages on Linux)
_CHILD = """import sys
from serialine.host import cli
rc = cli.main(sys.argv[1:])
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print("peak_rss_kb", hwm[0] if hwm else 0, file=sys.stderr)
sys.exit(rc)"""


def timed_child(argv: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stderr) of a `serialine` command run in its own process."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, *argv], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"bench broken: serialine {' '.join(argv[:3])} … exited {done.returncode}:"
                         f" {done.stderr.strip()}")
    lines = done.stderr.strip().splitlines()
    rss = int(lines[-1].split()[1]) / 1024 if lines and lines[-1].startswith("peak_rss_kb") else float("nan")
    return elapsed, rss, "\n".join(lines[:-1])


def _children_cpu() -> float:
    """CPU seconds (user + system) of the child processes waited for so far."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def export_cmd(db_path: str, fmt: str, out: str, *extra: str) -> list[str]:
    """`serialine epcis export …` of the bench's batch, as cli.main's argv."""
    argv = ["epcis", "export", "--batch", BATCH, "--format", fmt, "--out", out, "--db", db_path,
            "--overwrite", *extra]
    return argv + (["--receiver", PARTNER] if fmt == "xml12" else [])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine bench batch", description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=10000)
    ap.add_argument("--per-poll", type=int, default=64, help="units per poll (4 events each)")
    ap.add_argument("--serials", type=at_least_one, default=SERIALS_PER_DRAW, help="serials generated into the pool, each draw")
    ap.add_argument("--serial-draws", type=at_least_one, default=DRAWS,
                    help="draws of --serials one after the other (serials_per_s: the median)")
    ap.add_argument("--dir", help="make the temporary work directory inside DIR (removed at the end)")
    args = ap.parse_args(argv)
    try:
        work = tempfile.TemporaryDirectory(dir=args.dir)
    except OSError as exc:  # no such directory, not one, not writable: said in one line
        print(f"serialine bench batch: --dir {args.dir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with work as d:
        path = str(Path(d) / "ledger.db")
        conn, events, host_s, polls, host_cpu, checkpoints = make_ledger(path, args.units, args.per_poll,
                                                                         checkpoints=True)
        base_s, base_cpu, base_rows = sqlite_baseline(conn, str(Path(d) / "bare.db"), polls)
        t, c = time.perf_counter(), time.process_time()
        problems = reconcile.reconcile(conn, BATCH)
        reconcile_s, reconcile_cpu = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        reconcile.close_batch(conn, BATCH, "bench")
        close_s, close_cpu = time.perf_counter() - t, time.process_time() - c
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = sum(p.stat().st_size for p in Path(d).glob("ledger.db*"))
        tables = dbstat_per_unit(conn, args.units)
        (n_events,) = conn.execute("SELECT COUNT(*) FROM epcis_outbox WHERE batch_id = ?", (BATCH,)).fetchone()
        conn.close()
        gen = generate(path, GTIN, args.serials, args.serial_draws)  # `batch serials --generate`, each in its own process
        c0 = _children_cpu()
        jsonld_s, jsonld_rss, _ = timed_child(export_cmd(path, "jsonld", str(Path(d) / "jsonld")))
        c1 = _children_cpu()
        xml_s, xml_rss, _ = timed_child(export_cmd(path, "xml12", str(Path(d) / "xml")))
        jsonld_cpu, xml_cpu = c1 - c0, _children_cpu() - c1
        docs = len(list((Path(d) / "jsonld").iterdir()))
    figures = {
        "events_per_s": round(events / host_s),
        "events_per_s_sqlite_baseline": round(events / base_s),
        "ratio": round(base_s / host_s, 4),
        "events_per_cpu_s": round(events / host_cpu),  # per second of this process's CPU (shared machines)
        "events_per_cpu_s_sqlite_baseline": round(events / base_cpu),
        "host_cpu_s": round(host_cpu, 3),
        "checkpoints": checkpoints.made, "checkpoints_cpu_s": round(checkpoints.cpu_s, 3),  # (in host_cpu_s)
        "bytes_per_unit": round(size / args.units),
        "bytes_per_unit_tables": tables,
        "close_s": round(close_s, 3),
        "reconcile_s": round(reconcile_s, 3),
        "close_cpu_s": round(close_cpu, 3),
        "reconcile_cpu_s": round(reconcile_cpu, 3),
        "export_jsonld_s": round(jsonld_s, 3),
        "export_xml_s": round(xml_s, 3),
        "export_jsonld_cpu_s": round(jsonld_cpu, 3),
        "export_xml_cpu_s": round(xml_cpu, 3),
        "export_peak_rss_mb": round(max(jsonld_rss, xml_rss), 1),
        "export_jsonld_rss_mb": round(jsonld_rss, 1),
        "export_xml_rss_mb": round(xml_rss, 1),
        **{k: v for k, v in gen.items() if k != "serials_in_pool"},  # serials_per_s (median), best, draws, CPU, RSS
        "units": args.units, "events": events, "baseline_rows": base_rows, "epcis_events": n_events,
        "documents": docs, "reconcile_warnings": len(problems.warnings),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    try:
        from rich.console import Console
        from rich.table import Table
        table = Table(title=f"serialine bench batch --units {args.units}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for k, v in figures.items():
            if k == "bytes_per_unit_tables":
                for name, b in v.items():
                    table.add_row(f"  {name}", str(b))
            else:
                table.add_row(k, str(v))
        Console().print(table)
    except ImportError:  # pragma: no cover
        for k, v in figures.items():
            print(f"{k:<30} {v}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
