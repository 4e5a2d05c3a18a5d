"""coder_job is a view: a job's code comes from its batch's coder_template, stored in the row only
where it is not that. A ledger made when coder_job was a table holding every code migrates at
db.connect: every row reads back as it was, so the seals made before still verify. Also the host
path's connection settings and CHECKs (db.CACHE_KIB, db._one_of) on old and new ledgers."""

from __future__ import annotations

import json
import sqlite3

import pytest

from serialine.host import audit, db, masterdata, serials
from serialine.host.db import transaction
from serialine.host.ledger import Ledger

from hostkit import GTIN, PREFIX_LEN

# coder_job as the ledger made it before the template (db.py at b651e48)
OLD_CODER_JOB = [
    """CREATE TABLE coder_job (
        job_id INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_id TEXT NOT NULL REFERENCES batch (batch_id),
        gtin TEXT NOT NULL, serial TEXT NOT NULL, code TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'bound', 'dropped')),
        UNIQUE (gtin, serial),
        FOREIGN KEY (gtin, serial) REFERENCES serial (gtin, serial))""",
    "CREATE INDEX coder_job_queue ON coder_job (batch_id, state, job_id)",
]


def _old_ledger(path, monkeypatch) -> tuple[list[tuple], str]:
    """A ledger whose coder_job is the old table, with jobs of every state (one holding a code that
    is not its batch's template) and a batch.close seal over them, as closes sealed it then (part
    coder_job). → (its coder_job rows, head)."""
    key, parts = audit.SEALS["batch.close"]
    monkeypatch.setitem(audit.SEALS, "batch.close", (key, (*parts, "coder_job")))
    c = db.connect(str(path))
    for name in ("VIEW coder_job", "VIEW coder_job_row_v1", "TABLE coder_job_row", "TABLE coder_template"):
        c.execute(f"DROP {name}")
    for statement in OLD_CODER_JOB:
        c.execute(statement)
    masterdata.add_product(c, GTIN, "Aspirin 100 mg", "EU_FMD", PREFIX_LEN)
    serials.generate(c, GTIN, 50)
    masterdata.create_batch(c, "B1", GTIN, "L1", "2030-01-31", 10, 3, 2)
    masterdata.start_batch(c, "B1")
    with transaction(c):
        L = Ledger(c, "B1")
        picked = serials.allocate(c, "B1", GTIN, 6)
        states = ["bound", "bound", "queued", "dropped", "queued", "queued"]
        codes = [L.code_for(s) for s in picked]
        codes[4] = codes[4] + "\x1d91X"  # not the template's: must survive as stored
        c.executemany("INSERT INTO coder_job (batch_id, gtin, serial, code, state) VALUES ('B1', ?, ?, ?, ?)",
                      [(GTIN, s, code, st) for s, code, st in zip(picked, codes, states)])
        audit.append(c, "qa", "batch.close", {"batch_id": "B1"})  # seals coder_job as it is now
    assert "coder_job" in json.loads(c.execute("SELECT detail FROM audit WHERE action='batch.close'").fetchone()[0])["seal"]
    rows = c.execute("SELECT * FROM coder_job ORDER BY job_id").fetchall()
    head = codes[0][:codes[0].index("\x1d21") + 3]
    c.close()
    monkeypatch.undo()
    return rows, head


def test_old_ledger_migrates_and_its_seal_still_verifies(tmp_path, monkeypatch):
    rows, head = _old_ledger(tmp_path / "old.db", monkeypatch)
    c = db.connect(str(tmp_path / "old.db"))
    assert c.execute("SELECT type FROM sqlite_master WHERE name='coder_job'").fetchone() == ("view",)
    assert c.execute("SELECT * FROM coder_job ORDER BY job_id").fetchall() == rows  # byte for byte
    assert c.execute("SELECT head, tail FROM coder_template").fetchall() == [(head, "")]
    kept = c.execute("SELECT job_id FROM coder_job_row WHERE code IS NOT NULL").fetchall()
    assert kept == [(rows[4][0],)]  # only the odd one holds its code
    ok, _, msg = audit.verify(c)
    assert ok, msg
    c.execute("BEGIN")  # the seal covers what the view gives
    c.execute("UPDATE coder_job_row SET code='0' WHERE job_id=?", (rows[0][0],))
    ok, _, msg = audit.verify(c)
    c.execute("ROLLBACK")
    assert not ok and "table coder_job differs" in msg
    # the agent resumes: the queue reads back with its codes, new jobs follow with a fresh job_id and no code
    L = Ledger(c, "B1")
    assert [q[1:] for q in L._queue] == [(r[3], r[4]) for r in rows if r[5] == "queued"]
    with transaction(c):
        (serial, code), = L.queue_codes(1)
    new = c.execute("SELECT job_id, code FROM coder_job_row_v1 WHERE serial=?", (serial,)).fetchone()
    assert new == (rows[-1][0] + 1, None)
    assert c.execute("SELECT code FROM coder_job WHERE serial=?", (serial,)).fetchone() == (code,)
    c.close()
    again = db.connect(str(tmp_path / "old.db"))  # a second connect changes nothing
    assert again.execute("SELECT count(*) FROM coder_job").fetchone() == (len(rows) + 1,)
    again.close()


def test_a_job_stores_no_code_and_the_rules_still_hold(conn):
    L = Ledger(conn, "B1")
    with transaction(conn):
        jobs = L.queue_codes(3)
    assert conn.execute("SELECT serial, code FROM coder_job ORDER BY job_id").fetchall() == jobs
    assert conn.execute("SELECT count(*) FROM coder_job_row WHERE code IS NOT NULL").fetchone() == (0,)
    with pytest.raises(sqlite3.IntegrityError):  # a serial goes to a coder once
        conn.execute("INSERT INTO coder_job_row (batch_id, serial_id) SELECT 'B1', serial_id FROM serial WHERE serial=?",
                     (jobs[0][0],))
    with pytest.raises(sqlite3.IntegrityError, match="template never changes"):
        conn.execute("UPDATE coder_template SET tail='x'")
    with pytest.raises(sqlite3.IntegrityError, match="template never changes"):
        conn.execute("DELETE FROM coder_template")


def test_connections_get_the_big_page_cache(conn):
    # the host path's random-key indexes at 1M units are far beyond SQLite's default 2 MB
    assert conn.execute("PRAGMA cache_size").fetchone() == (-db.CACHE_KIB,)


def test_in_list_checks_become_equality_chains_and_still_refuse(tmp_path):
    # ledgers made before hold `x IN (...)` CHECKs (an ephemeral table per row written): edited in place
    path = str(tmp_path / "l.db")
    c = db.connect(path)
    (version,) = c.execute("PRAGMA schema_version").fetchone()
    c.execute("PRAGMA writable_schema=ON")
    for table, (old, new) in db._IN_LIST_CHECKS.items():
        c.execute("UPDATE sqlite_master SET sql=replace(sql, ?, ?) WHERE type='table' AND name=?", (new, old, table))
    c.execute(f"PRAGMA schema_version={version + 1}")
    c.execute("PRAGMA writable_schema=OFF")
    c.close()
    c = db.connect(path)
    for table, (old, new) in db._IN_LIST_CHECKS.items():
        (sql,) = c.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
        assert new in sql and old not in sql, table
    assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    masterdata.add_product(c, GTIN, "Aspirin 100 mg", "EU_FMD", PREFIX_LEN)
    masterdata.create_batch(c, "B1", GTIN, "L1", "2030-01-31", 10, 3, 2)
    c.execute("INSERT INTO unit (device_id, boot_id, unit_seq, batch_id, outcome) VALUES ('d', 1, 0, 'B1', 'PASSED')")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        c.execute("UPDATE unit SET outcome='LOST' WHERE unit_seq=0")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        c.execute("INSERT INTO container (batch_id, level, state) VALUES ('B1', 'case', 'gone')")
    c.close()


OLD_SHIPPED_CONTAINER_FIXED = """CREATE TRIGGER shipped_container_fixed BEFORE UPDATE OF state, parent_id ON container
        WHEN EXISTS (SELECT 1 FROM shipped s JOIN container p ON p.sscc = s.sscc
                     WHERE p.container_id IN (OLD.container_id, OLD.parent_id))
        BEGIN SELECT RAISE(ABORT, 'this container has been shipped: it left the site'); END"""


def test_shipped_containers_stay_fixed_after_the_trigger_is_made_again(tmp_path):
    path = str(tmp_path / "l.db")
    c = db.connect(path)
    c.execute("DROP TRIGGER shipped_container_fixed")
    c.execute(OLD_SHIPPED_CONTAINER_FIXED)  # as ledgers made before hold it
    c.close()
    c = db.connect(path)
    (sql,) = c.execute("SELECT sql FROM sqlite_master WHERE name='shipped_container_fixed'").fetchone()
    assert "IN (OLD" not in sql
    masterdata.add_product(c, GTIN, "Aspirin 100 mg", "EU_FMD", PREFIX_LEN)
    masterdata.create_batch(c, "B1", GTIN, "L1", "2030-01-31", 10, 3, 2)
    pallet = c.execute("INSERT INTO container (batch_id, level, sscc, state) VALUES ('B1', 'pallet', '095060000000000017',"
                       " 'closed')").lastrowid
    case = c.execute("INSERT INTO container (batch_id, level, sscc, state, parent_id) VALUES ('B1', 'case',"
                     " '095060000000000024', 'closed', ?)", (pallet,)).lastrowid
    loose = c.execute("INSERT INTO container (batch_id, level) VALUES ('B1', 'case')").lastrowid
    shipment = c.execute("INSERT INTO shipment (at, user, destination, po, desadv) VALUES ('t', 'ann', 'x', 'p', 'd')").lastrowid
    c.execute("INSERT INTO shipped VALUES ('095060000000000017', ?)", (shipment,))
    for cid in (pallet, case):  # the shipped pallet itself, and a case on it
        with pytest.raises(sqlite3.IntegrityError, match="left the site"):
            c.execute("UPDATE container SET state='disaggregated' WHERE container_id=?", (cid,))
    c.execute("UPDATE container SET state='disaggregated' WHERE container_id=?", (loose,))  # not shipped: free
    c.close()
