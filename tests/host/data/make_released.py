"""Make tests/host/data/released_0cb9add.db (+ .db.anchors, .json.gz) with the RELEASED code (commit
0cb9add), for test_migrate_released. Re-run from any checkout (the release's code is imported, not
this tree's; the ledger differs in its random serials and times, the test reads them from the .json.gz):

    git worktree add -f /tmp/rel 0cb9add
    mkdir -p /tmp/relpkg/serialine
    for d in host protocol tools firmware boards scenarios; do ln -sfn /tmp/rel/$d /tmp/relpkg/serialine/$d; done
    PYTHONPATH=/tmp/relpkg .venv/bin/python tests/host/data/make_released.py tests/host/data/released_0cb9add

The ledger: a product, a generated pool, batch B1 (301 units on boot 7: 300 passed into 30 cases on 6
pallets, one rejected; an alarm; a checkpoint half way), B1 closed (sealed); batch B2 started on a new
boot (8) with 40 units stored (one pack reworked out of its case, one unit in flight with no outcome,
coder jobs queued), not closed; then users (an admin, an engineer, two QA), B1 reviewed (signed: the
release then waits for the outbox's delivery upstream), a checkpoint. The .json.gz holds every table
and view as the release read it (`SELECT * ... ORDER BY` every column): what the migrated ledger must
read back the same."""

from __future__ import annotations

import gzip
import io
import json
import os
import sqlite3
import sys

from serialine.host import audit, cli, db
from serialine.host.db import transaction
from serialine.host.ledger import Ledger
from serialine.protocol.schema import Reason

GTIN = "09506000134352"
FAIL_UNIT = 17
PASSWORD_ENV, PASSWORD = "SERIALINE_PASSWORD", "fixture-password-1"  # every user's (a test fixture's)
USERS = (("ada", "admin", "Ada Admin"), ("ann", "engineer", "Ann Engineer"), ("qa", "qa", "Quinn Quality"),
         ("qa2", "qa", "Quentin Second"))


def check(argv):
    rc = cli.main(argv)
    if rc:
        raise SystemExit(f"serialine {' '.join(argv)} exited {rc}")


def run_units(L: Ledger, boot: int, units: range, seq0: int, in_flight=()) -> int:
    """`units` through the line on `boot`, 20 a poll as the agent runs them; → the last event_seq."""
    seq = seq0
    for lo in range(units.start, units.stop, 20):
        chunk = range(lo, min(lo + 20, units.stop))
        with transaction(L.conn):
            L.queue_codes(len(chunk))
            msgs = []
            for u in chunk:
                for name, f in (("UNIT_DETECTED", dict(unit_seq=u, pos=0, t_us=0, flags=0)),
                                ("UNIT_PRINTED", dict(unit_seq=u, pos=0, t_us=0)),
                                ("UNIT_INSPECTED", dict(unit_seq=u, pos=0, t_us=0))):
                    seq += 1
                    msgs.append((name, {**f, "event_seq": seq}))
            L.store_batch("dev1", boot, msgs)
            rows = []
            for u in chunk:
                code = L.expected_code("dev1", boot, u)
                bad = u == FAIL_UNIT
                v, r, s = L.judge.decide("garbage" if bad else "]d2" + code, "F" if bad else "A", code)
                rows.append(("dev1", boot, u, v, r, s, "F" if bad else "A"))
            L.record_verdicts(rows)
        with transaction(L.conn):
            msgs = []
            for u in chunk:
                if u in in_flight:
                    continue
                seq += 1
                bad = u == FAIL_UNIT
                msgs.append(("UNIT_OUTCOME", dict(event_seq=seq, unit_seq=u, outcome=2 if bad else 1,
                                                  reason=int(Reason.VERDICT_FAIL) if bad else 0,
                                                  gate_error=0, pos=0, t_us=0)))
            L.store_batch("dev1", boot, msgs)
            L.flush_events()
    return seq


def dump(path: str) -> dict:
    """Every table and view as this code reads it: {name: {"cols": [...], "rows": [...]}} (a BLOB as {"hex": ...})."""
    c = sqlite3.connect(path)
    out = {}
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                             " AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall():
        cur = c.execute(f'SELECT * FROM "{name}"')
        cols = [d[0] for d in cur.description]
        order = ", ".join(str(i + 1) for i in range(len(cols)))
        rows = c.execute(f'SELECT * FROM "{name}" ORDER BY {order}').fetchall()
        out[name] = {"cols": cols, "rows": [[{"hex": v.hex()} if isinstance(v, bytes) else v for v in r]
                                            for r in rows]}
    c.close()
    return out


def main(stem: str) -> int:
    path = stem + ".db"
    for suffix in ("", "-wal", "-shm", ".anchors"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    common = ["--db", path, "--user", "ann"]
    check(["init", *common])
    check(["batch", "product", GTIN, "Aspirin 100 mg", "--market", "EU_FMD", "--prefix-len", "7", *common])
    check(["batch", "serials", GTIN, "--generate", "500", *common])
    check(["batch", "create", "B1", GTIN, "L1", "2030-01-31", "--planned", "301", "--case-size", "10",
           "--pallet-size", "5", *common])
    check(["batch", "start", "B1", *common])
    conn = db.connect(path)
    L = Ledger(conn, "B1")
    seq = run_units(L, 7, range(0, 160), 0)
    audit.checkpoint(conn, "agent")  # the running agent's checkpoint, half way
    seq = run_units(L, 7, range(160, 301), seq)
    with transaction(conn):
        L.alarm("dev1", "REJECT_STREAK", "fixture alarm")
    audit.checkpoint(conn, "agent")  # as the agent stops
    conn.close()
    check(["batch", "close", "B1", "--db", path, "--user", "qa"])

    check(["batch", "create", "B2", GTIN, "L2", "2030-02-28", "--planned", "100", "--case-size", "10",
           "--pallet-size", "5", *common])
    check(["batch", "start", "B2", *common])
    conn = db.connect(path)
    L = Ledger(conn, "B2")
    run_units(L, 8, range(0, 40), 0, in_flight={39})
    with transaction(conn):
        L.queue_codes(5)  # jobs queued at the coder, not yet printed
    (serial,) = conn.execute("SELECT serial FROM unit WHERE batch_id='B2' AND unit_seq=5").fetchone()
    conn.close()
    check(["rework", "remove", GTIN, serial, "--reason", "damaged carton", "--db", path, "--user", "ann"])
    os.environ[PASSWORD_ENV] = PASSWORD  # from here on every changing command proves its user
    for name, role, full in USERS:
        sys.stdin = io.StringIO(PASSWORD + "\n")  # the new user's (--password-stdin)
        check(["users", "add", name, "--role", role, "--full-name", full, "--password-stdin", "--db", path,
               "--user", "ada", "--reason", "the fixture's people"])
    sys.stdin = sys.__stdin__
    check(["batch", "review", "B1", "--db", path, "--user", "qa"])
    conn = db.connect(path)
    audit.checkpoint(conn, "agent")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with gzip.GzipFile(stem + ".json.gz", "wb", mtime=0) as f:
        f.write(json.dumps(dump(path), separators=(",", ":"), sort_keys=True).encode())
    print(f"{path}: {os.path.getsize(path)} bytes; {stem}.json.gz: {os.path.getsize(stem + '.json.gz')} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
