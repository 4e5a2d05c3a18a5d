"""A ledger made by the RELEASED code (0cb9add: tests/host/data/make_released.py, committed with what
that code read from it) migrates at db.connect through every migration at once: every table and view
reads back as the release read it, `audit verify` passes (the release's seals and links; QA's signature of
B1's record), the open batch B2 goes on and closes, the next batch runs, an old row edited behind the
project's back fails verify; a migration that fails or is killed half way leaves the released ledger as
it was."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serialine.host import audit, cli_batch, db, signatures
from serialine.host.ledger import Ledger

DATA = Path(__file__).parent / "data"
FIXTURE = "released_0cb9add"
sys.path.insert(0, str(DATA))
import make_released  # noqa: E402  (the release's line loop; the current code runs it here)


def _released() -> dict:
    with gzip.open(DATA / f"{FIXTURE}.json.gz", "rt") as f:
        return json.load(f)


def _copy(tmp_path) -> Path:
    for suffix in (".db", ".db.anchors"):
        shutil.copy(DATA / f"{FIXTURE}{suffix}", tmp_path / f"{FIXTURE}{suffix}")
    return tmp_path / f"{FIXTURE}.db"


def _read(c, name, cols):
    order = ", ".join(str(i + 1) for i in range(len(cols)))
    select = ", ".join(f'"{col}"' for col in cols)
    return [[{"hex": v.hex()} if isinstance(v, bytes) else v for v in r]
            for r in c.execute(f'SELECT {select} FROM "{name}" ORDER BY {order}')]


def _differences(path, released, renamed=True) -> list[str]:
    """The released relations that do not read back as the release read them (by name, or by the view
    that renders the old form)."""
    c = sqlite3.connect(path)
    names = [n for (n,) in c.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")]
    out = []
    for name, t in released.items():
        # the table itself, else (its name now holds a compact form) the view rendering it as it was
        rel = next((n for n in names if (n == name or renamed and n.startswith(name + "_v"))
                    and set(t["cols"]) <= {r[1] for r in c.execute(f'PRAGMA table_info("{n}")')}), None)
        if rel is None:
            out.append(f"{name}: gone")
        elif _read(c, rel, t["cols"]) != t["rows"]:
            out.append(f"{name} (read as {rel}): differs")
    c.close()
    return out


def _schema(path) -> list:
    c = sqlite3.connect(path)
    rows = c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    c.close()
    return rows


def _verify(path, capsys) -> str:
    capsys.readouterr()
    rc = cli_batch.audit_main(["verify", "--db", str(path)])
    out = capsys.readouterr()
    assert rc == 0, f"audit verify exited {rc}:\n{out.err}"
    return out.out


def _close(path, batch, capsys):
    capsys.readouterr()
    rc = cli_batch.main(["close", batch, "--db", str(path), "--user", "qa"])
    assert rc == 0, f"batch close {batch} exited {rc}:\n{capsys.readouterr().err}"


def test_the_released_ledger_reads_back_as_the_release_read_it(tmp_path, capsys):
    path = _copy(tmp_path)
    released = _released()
    assert _differences(path, released, renamed=False) == []  # the fixture is what the release read
    db.connect(str(path)).close()  # every migration of this release at once
    c = sqlite3.connect(path)
    assert {r[1] for r in c.execute("PRAGMA table_info(serial)")} >= {"serial_id"}
    assert c.execute("SELECT type FROM sqlite_master WHERE name='unit'").fetchone() == ("view",)
    c.close()
    assert _differences(path, released) == []
    c = db.connect(str(path))  # B1's signed record builds to what QA signed
    (signed,) = c.execute("SELECT content_sha256 FROM signature WHERE record_id='B1'").fetchone()
    assert signatures.record_hash(c, "batch", "B1") == signed
    c.close()
    assert "audit log intact" in _verify(path, capsys)


def test_the_open_batch_goes_on_closes_and_the_next_batch_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(make_released.PASSWORD_ENV, make_released.PASSWORD)  # the fixture's users prove it
    path = _copy(tmp_path)
    conn = db.connect(str(path))
    (seq,) = conn.execute("SELECT max(e.event_seq) FROM device_event e JOIN device_boot_ref r ON r.ref = e.boot_ref"
                          " WHERE r.boot_id = 8").fetchone()
    L = Ledger(conn, "B2")  # the agent restarted on the new release, the device still on boot 8
    with db.transaction(conn):
        L.store_batch("dev1", 8, [("UNIT_OUTCOME", dict(event_seq=seq + 1, unit_seq=39, outcome=1, reason=0,
                                                        gate_error=0, pos=0, t_us=0))])
        L.flush_events()
    make_released.run_units(L, 8, range(40, 100), seq + 1)
    audit.checkpoint(conn, "agent")
    (sscc, loose) = conn.execute("SELECT json_extract(detail, '$.case'), target FROM rework").fetchone()
    conn.close()
    # the pack the release took out of its case goes back in, by the new code
    assert cli_batch.rework_main(["add", sscc, make_released.GTIN, loose, "--reason", "carton replaced",
                                  "--db", str(path), "--user", "ann"]) == 0
    _close(path, "B2", capsys)
    _verify(path, capsys)

    common = ["--db", str(path), "--user", "ann"]
    assert cli_batch.main(["create", "B3", make_released.GTIN, "L3", "2030-03-31", "--planned", "60",
                           "--case-size", "10", "--pallet-size", "5", *common]) == 0
    assert cli_batch.main(["start", "B3", *common]) == 0
    conn = db.connect(str(path))
    make_released.run_units(Ledger(conn, "B3"), 9, range(0, 60), 0)  # a new boot
    audit.checkpoint(conn, "agent")
    conn.close()
    _close(path, "B3", capsys)
    assert "audit log intact" in _verify(path, capsys)


@pytest.mark.parametrize("sql, says", [
    ("UPDATE unit_row SET grade='A' WHERE batch_id='B1' AND grade='F'", "batch B1: table unit"),
    ("DELETE FROM packed_row WHERE serial_id = (SELECT min(serial_id) FROM packed_row)", "batch B1: table packed"),
    ("UPDATE serial SET state='destroyed' WHERE serial_id = (SELECT min(serial_id) FROM serial"
     " WHERE batch_id='B1' AND state='commissioned')", "batch B1: table serial"),
])
def test_a_released_row_edited_behind_the_projects_back_fails_verify(tmp_path, capsys, sql, says):
    path = _copy(tmp_path)
    db.connect(str(path)).close()
    c = sqlite3.connect(path)  # as an attacker: the rules dropped first
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        c.execute(f'DROP TRIGGER "{name}"')
    assert c.execute(sql).rowcount == 1
    c.commit()
    c.close()
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(path)]) == 1
    assert says in capsys.readouterr().err


def test_a_migration_that_fails_at_its_last_table_leaves_the_released_ledger(tmp_path):
    path = _copy(tmp_path)
    c = sqlite3.connect(path)  # a packed row behind the project's back: its serial is not in the ledger
    c.execute("DROP TRIGGER packed_only_commissioned")
    c.execute("DROP TRIGGER packed_into_open_case")
    c.execute("INSERT INTO packed SELECT gtin, 'NOSUCHSERIAL', container_id FROM packed LIMIT 1")
    c.commit()
    c.close()
    released = _released()
    released["packed"]["rows"] = sqlite3.connect(path).execute("SELECT * FROM packed ORDER BY 1, 2, 3").fetchall()
    released["packed"]["rows"] = [list(r) for r in released["packed"]["rows"]]
    schema = _schema(path)
    with pytest.raises(sqlite3.IntegrityError, match="would not read back as stored; this ledger is left as it was"):
        db.connect(str(path))
    # serial, unit, coder_job_row, serial_history, device_event were migrated in the same transaction first
    assert _schema(path) == schema
    assert _differences(path, released, renamed=False) == []


_KILLED = """import sys, time
from serialine.host import db
last = db._migrate_packed_row
def stop(conn):  # the migration's last table done, nothing committed: the power goes
    last(conn)
    open(sys.argv[2], "w").close()
    time.sleep(600)
db._migrate_packed_row = stop
db.connect(sys.argv[1])
"""


def test_a_migration_killed_half_way_leaves_the_released_ledger(tmp_path, capsys):
    path = _copy(tmp_path)
    mark, schema = tmp_path / "migrated-not-committed", _schema(path)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(path), str(mark)])
    try:
        deadline = time.monotonic() + 120
        while not mark.exists():
            assert proc.poll() is None, f"the migration exited {proc.returncode} before its last table"
            assert time.monotonic() < deadline, "the migration did not reach its last table in 120 s"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _schema(path) == schema  # the release's ledger, as it was
    assert _differences(path, _released(), renamed=False) == []
    db.connect(str(path)).close()  # and it migrates on the next open
    assert _differences(path, _released()) == []
    _verify(path, capsys)


_CLI = """import sys
from serialine.host import cli, db
db.MIGRATE_NOTICE_S = float(sys.argv[1])  # (the fixture migrates in well under the real threshold)
sys.exit(cli.main(sys.argv[2:]))
"""


def test_a_long_migration_is_said_on_stderr_before_it_starts_and_its_time_after(tmp_path):
    path = _copy(tmp_path)
    argv = [sys.executable, "-c", _CLI, "0", "audit", "verify", "--db", str(path)]
    first = subprocess.run(argv, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines[0].startswith("serialine: migrating this ledger to the current form (once; about ")
    assert lines[1].startswith("serialine: ledger migrated in ")
    again = subprocess.run(argv, capture_output=True, text=True)  # once: the ledger is in its current form
    assert again.returncode == 0 and "migrat" not in again.stderr, again.stderr
    quick = subprocess.run(  # a fresh copy, under the real threshold: nothing said
        [sys.executable, "-c", _CLI, str(db.MIGRATE_NOTICE_S), "audit", "verify", "--db", str(_copy(tmp_path))],
        capture_output=True, text=True)
    assert quick.returncode == 0 and "migrat" not in quick.stderr, quick.stderr
