import subprocess
import sys

from serialine.host.correlate import Correlator
from serialine.host.devices.camera import CameraResult
from serialine.host import db
from serialine.host.db import snapshot

from hostkit import GTIN


def test_correlation_by_order_and_window():
    c = Correlator(window_s=0.5)
    for u, t in ((0, 0.0), (1, 0.1), (2, 0.2), (3, 0.3)):
        c.inspected(u, t)
    c.result(CameraResult(5, "A", "]d2x", 0.05))   # first result: aligns n
    c.result(CameraResult(7, "A", "]d2y", 0.25))   # n=6 lost: unit 1 is unaccounted
    c.result(CameraResult(7, "A", "]d2y", 0.26))   # repeated: nobody's
    pairs = c.pairs(now=0.3)
    assert [(p.unit, p.result and p.result.n) for p in pairs] == [(0, 5), (1, None), (2, 7), (None, 7)]
    assert c.pairs(now=0.5) == []          # unit 3 still within its window
    late = c.pairs(now=0.9)                # ... and now past it
    assert [(p.unit, p.result) for p in late] == [(3, None)]
    c.result(CameraResult(9, "A", "]d2z", 5.0))  # a result with no unit at all, once its window passed
    assert [(p.unit, p.result.n) for p in c.pairs(now=6.0)] == [(None, 9)]


def cli(dbfile, *args):
    return subprocess.run([sys.executable, "-m", "serialine.host.cli", *args, "--db", dbfile, "--user", "ann"],
                          capture_output=True, text=True, timeout=60)


def test_cli_batch_life_and_clear_errors(tmp_path):
    f = str(tmp_path / "l.db")
    assert cli(f, "batch", "product", GTIN, "Aspirin", "--market", "EU_FMD", "--prefix-len", "7").returncode == 0
    r = cli(f, "batch", "serials", GTIN, "--generate", "50")
    assert r.returncode == 0 and "50 serials added" in r.stdout and "low" in r.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("GOODSERIAL01\nBAD SERIAL\n")
    before = snapshot(db.connect(f))
    r = cli(f, "batch", "serials", GTIN, "--import", str(bad))
    assert r.returncode == 1 and r.stderr.startswith("error:") and "bad characters" in r.stderr
    r = cli(f, "batch", "create", "B1", GTIN, "L1", "2030-13-01", "--planned", "5", "--case-size", "2", "--pallet-size", "2")
    assert r.returncode == 1 and "invalid date" in r.stderr
    assert snapshot(db.connect(f)) == before
    assert cli(f, "batch", "create", "B1", GTIN, "L1", "2030-12-01", "--planned", "5", "--case-size", "2",
               "--pallet-size", "2").returncode == 0
    assert cli(f, "batch", "start", "B1").returncode == 0
    r = cli(f, "batch", "close", "B1")  # nothing made: not a close, an abort
    assert r.returncode == 1 and "0 of 5 planned" in r.stdout and "abort" in r.stderr
    r = cli(f, "batch", "abort", "B1", "--reason", "work order cancelled")
    assert r.returncode == 0 and "aborted" in r.stdout
    r = cli(f, "rework", "disaggregate", "095060000000000015", "--reason", "case crushed")
    assert r.returncode == 1 and "unknown SSCC" in r.stderr
    r = cli(f, "audit", "verify")
    assert r.returncode == 0 and "intact: 5 records" in r.stdout
