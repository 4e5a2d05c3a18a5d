"""The ledger's rules hold in the database itself: raw SQL cannot break them."""

import sqlite3

import pytest

from serialine.host import devevents
from serialine.host.db import transaction

from hostkit import GTIN


def one_serial(conn, state="available"):
    return conn.execute("SELECT serial FROM serial WHERE state=? LIMIT 1", (state,)).fetchone()[0]


def test_serial_unique_forever_and_never_deleted(conn):
    s = one_serial(conn)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO serial (gtin, serial, source) VALUES (?, ?, 'x')", (GTIN, s))
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        conn.execute("DELETE FROM serial WHERE serial=?", (s,))
    with pytest.raises(sqlite3.IntegrityError, match="identity"):
        conn.execute("UPDATE serial SET serial='X' WHERE serial=?", (s,))


@pytest.mark.parametrize("path, bad", [
    (["allocated"], "commissioned"),  # allocated → commissioned skips printing
    ([], "printed"),                                    # available → printed skips allocation
    (["allocated", "printed", "commissioned"], "available"),
    (["allocated", "printed", "rejected"], "commissioned"),
    (["allocated", "printed", "commissioned", "destroyed"], "commissioned"),
])
def test_illegal_transitions_refused(conn, path, bad):
    s = one_serial(conn)
    for state in path:
        conn.execute("UPDATE serial SET state=?, batch_id='B1' WHERE serial=?", (state, s))
    with pytest.raises(sqlite3.IntegrityError, match="illegal serial state transition"):
        conn.execute("UPDATE serial SET state=? WHERE serial=?", (bad, s))


def test_allocated_returns_only_at_close(conn):
    s = one_serial(conn)
    conn.execute("UPDATE serial SET state='allocated', batch_id='B1' WHERE serial=?", (s,))
    with pytest.raises(sqlite3.IntegrityError, match="only at batch close"):
        conn.execute("UPDATE serial SET state='available' WHERE serial=?", (s,))
    history = conn.execute("SELECT old_state, new_state FROM serial_trail WHERE serial=? ORDER BY seq", (s,)).fetchall()
    assert history == [("available", "allocated")]


def test_pack_in_one_case_and_destroyed_not_packed(conn):
    a, b = one_serial(conn), None
    conn.execute("UPDATE serial SET state='allocated', batch_id='B1' WHERE serial=?", (a,))
    conn.execute("UPDATE serial SET state='printed' WHERE serial=?", (a,))
    conn.execute("UPDATE serial SET state='commissioned' WHERE serial=?", (a,))
    c1 = conn.execute("INSERT INTO container (batch_id, level) VALUES ('B1', 'case')").lastrowid
    c2 = conn.execute("INSERT INTO container (batch_id, level) VALUES ('B1', 'case')").lastrowid
    conn.execute("INSERT INTO packed VALUES (?, ?, ?)", (GTIN, a, c1))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO packed VALUES (?, ?, ?)", (GTIN, a, c2))
    conn.execute("DELETE FROM packed WHERE serial=?", (a,))
    conn.execute("UPDATE serial SET state='destroyed' WHERE serial=?", (a,))
    with pytest.raises(sqlite3.IntegrityError, match="only a commissioned pack"):
        conn.execute("INSERT INTO packed VALUES (?, ?, ?)", (GTIN, a, c2))


def test_sscc_never_reused_or_changed(conn):
    conn.execute("INSERT INTO container (batch_id, level, sscc, state) VALUES ('B1', 'case', '095060000000000015', 'closed')")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO container (batch_id, level, sscc) VALUES ('B1', 'case', '095060000000000015')")
    with pytest.raises(sqlite3.IntegrityError, match="never changed"):
        conn.execute("UPDATE container SET sscc='095060000000000022'")
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        conn.execute("DELETE FROM container")


def test_device_event_key_is_idempotent(conn):
    row = devevents.row(devevents.boot_ref(conn, "dev1", 7), "LOG", {"event_seq": 1, "level": 20, "text": "x"}, 0)
    assert conn.execute(devevents.INSERT, row).rowcount == 1
    assert conn.execute(devevents.INSERT, row).rowcount == 0
    assert devevents.boot_ref(conn, "dev1", 7) == row[0]  # one ref per boot
    with pytest.raises(sqlite3.IntegrityError, match="never changes"):
        conn.execute("UPDATE device_boot_ref SET boot_id = 8")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        conn.execute("DELETE FROM device_boot_ref")


def test_transaction_rolls_back_everything(conn):
    s1, before = one_serial(conn), conn.execute("SELECT count(*) FROM serial WHERE state='allocated'").fetchone()
    with pytest.raises(sqlite3.IntegrityError):
        with transaction(conn):
            conn.execute("UPDATE serial SET state='allocated', batch_id='B1' WHERE serial=?", (s1,))
            conn.execute("UPDATE serial SET state='commissioned' WHERE serial=?", (s1,))
    assert conn.execute("SELECT count(*) FROM serial WHERE state='allocated'").fetchone() == before


def test_audit_append_only(conn):
    from serialine.host import audit
    with transaction(conn):
        audit.append(conn, "ann", "x", {"a": 1})
        audit.append(conn, "bob", "y", {"b": 2})
    assert audit.verify(conn)[:2] == (True, 2)
    for sql in ("UPDATE audit SET user='eve'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    # behind SQLite's back (triggers dropped): the chain names the record
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET detail='{\"a\":2}' WHERE seq=1")
    ok, n, msg = audit.verify(conn)
    assert not ok and "record 1" in msg


def test_a_lot_once_per_gtin_and_batch_states(conn):
    ins = "INSERT INTO batch (batch_id, gtin, lot, expiry, planned, case_size, pallet_size) VALUES (?, ?, ?, '2031-01-31', 1, 1, 1)"
    with pytest.raises(sqlite3.IntegrityError, match="lot is already used"):
        conn.execute(ins, ("B2", GTIN, "L1"))
    conn.execute(ins, ("B2", GTIN, "L2"))
    for state in ("aborted", "reopened"):
        conn.execute("UPDATE batch SET state=? WHERE batch_id='B2'", (state,))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("UPDATE batch SET state='paused' WHERE batch_id='B2'")


def test_only_serials_of_an_abandoned_import_can_be_deleted(conn):
    now = 0.0
    imp = conn.execute("INSERT INTO serial_import (gtin, source, started_at, heartbeat) VALUES (?, 'f', ?, ?)",
                       (GTIN, now, now)).lastrowid
    conn.execute("INSERT INTO serial (gtin, serial, source, import_id) VALUES (?, 'STAGED000001', 'f', ?)", (GTIN, imp))
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        conn.execute("DELETE FROM serial WHERE serial='STAGED000001'")  # still staging: the import decides
    conn.execute("UPDATE serial_import SET state='abandoned' WHERE import_id=?", (imp,))
    with pytest.raises(sqlite3.IntegrityError, match="still staging"):
        conn.execute("INSERT INTO serial (gtin, serial, source, import_id) VALUES (?, 'STAGED000002', 'f', ?)", (GTIN, imp))
    conn.execute("DELETE FROM serial WHERE serial='STAGED000001'")
    with pytest.raises(sqlite3.IntegrityError, match="final"):
        conn.execute("UPDATE serial_import SET state='published' WHERE import_id=?", (imp,))


OLD_BATCH = """CREATE TABLE batch (
        batch_id TEXT PRIMARY KEY,
        gtin TEXT NOT NULL REFERENCES product (gtin),
        lot TEXT NOT NULL CHECK (length(lot) BETWEEN 1 AND 20),
        expiry TEXT NOT NULL CHECK (date(expiry) = expiry),
        planned INTEGER NOT NULL CHECK (planned > 0),
        case_size INTEGER NOT NULL CHECK (case_size > 0),
        pallet_size INTEGER NOT NULL CHECK (pallet_size > 0),
        state TEXT NOT NULL DEFAULT 'created' CHECK (state IN ('created', 'running', 'closing', 'closed')),
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        closed_at TEXT)"""
OLD_SERIAL = """CREATE TABLE serial (
        gtin TEXT NOT NULL REFERENCES product (gtin), serial TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'available', batch_id TEXT REFERENCES batch (batch_id),
        source TEXT NOT NULL, PRIMARY KEY (gtin, serial)) WITHOUT ROWID"""


def test_a_ledger_made_before_abort_and_staged_imports_is_migrated(tmp_path):
    """The batch and serial tables as the first release made them: opening the ledger lets a
    stuck batch be aborted and a pool be staged, with the rows already there untouched."""
    from serialine.host import db, lifecycle, masterdata, serials
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE product (gtin TEXT PRIMARY KEY, name TEXT NOT NULL, market TEXT NOT NULL,"
                " company_prefix_len INTEGER NOT NULL, nhrn_ai TEXT, nhrn TEXT)")
    old.execute(OLD_BATCH)
    old.execute(OLD_SERIAL)
    old.execute("CREATE TRIGGER serial_never_deleted BEFORE DELETE ON serial BEGIN SELECT RAISE(ABORT, 'serials are never deleted'); END")
    old.execute(f"INSERT INTO product VALUES ('{GTIN}', 'A', 'EU_FMD', 7, NULL, NULL)")
    old.execute(f"INSERT INTO batch (batch_id, gtin, lot, expiry, planned, case_size, pallet_size, state)"
                f" VALUES ('OLD1', '{GTIN}', 'L1', '2031-01-31', 10, 2, 2, 'running')")
    old.execute(f"INSERT INTO serial (gtin, serial, source) VALUES ('{GTIN}', 'OLDSERIAL001', 'x')")
    old.commit()
    old.close()
    conn = db.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    lifecycle.abort(conn, "OLD1", "qa", "stuck since the upgrade")
    assert masterdata.get_batch(conn, "OLD1").state == "aborted"
    assert serials.import_serials(conn, GTIN, serials.random_serials("ABCDEFGHJK0123456789", 12, 20)).count == 20
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        conn.execute("DELETE FROM serial WHERE serial='OLDSERIAL001'")
    conn.close()
    assert db.connect(path).execute("SELECT count(*) FROM serial").fetchone() == (21,)  # reopens cleanly


def test_a_commit_is_on_disk_before_the_device_is_told(tmp_path):
    """The device drops its events once the host says they are stored: every ledger connection commits
    with synchronous=FULL in WAL, so a power cut of the PC cannot roll back an acknowledged event."""
    from serialine.host import db

    c = db.connect(str(tmp_path / "fresh.db"))
    try:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        c.close()
