"""serial as a rowid table (serial_id INTEGER PRIMARY KEY, UNIQUE (gtin, serial)): a ledger made
before (WITHOUT ROWID, keyed by (gtin, serial)) is rebuilt by db.connect, every row kept, the other
tables' foreign keys still holding, and every audit seal made before still verifies."""

import sqlite3

import pytest

from serialine.host import audit, db, serials
from serialine.host.db import transaction
from serialine.host import masterdata

import oldledger
from hostkit import GTIN

# what the old release's close sealed of a batch's own rows (its logs went on in the chain): both
# names the serial rows were sealed under then
OLD_CLOSED = ("product", "product_master", "batch", "batch_site", "unit", "serial", "serial2", "coder_job_row",
              "coder_template", "container", "packed")




def _old_ledger(path):
    """B1 run and closed, a serial handed out over OPEN-SCS and one due upstream, then the ledger put
    into the form before serial_id and B1 sealed as the old release sealed its close."""
    conn = oldledger.ledger(path, ("B1", "B2"))
    oldledger.run(conn, "B1", 4, queued=0, allocated=2)
    with transaction(conn):
        conn.execute("INSERT INTO serial_grant (token, gtin, serial, user, at) VALUES ('t1', ?, '000000000039', 'qa', 1.0)",
                     (GTIN,))
        conn.execute("INSERT INTO serial_upstream_return (gtin, serial, source, batch_id, at)"
                     " VALUES (?, '000000000038', 'opc.tcp://upstream', 'B1', 1.0)", (GTIN,))
    oldledger.close_states(conn, "B1", "UPDATE serial SET state='available', batch_id=NULL"
                                       " WHERE batch_id='B1' AND state='allocated'")
    oldledger.before_serial_id(conn)
    with transaction(conn):
        oldledger.seal(conn, "batch.close", {"batch_id": "B1", "seal": audit.seal(conn, "B1", OLD_CLOSED)})
    rows = conn.execute(f"SELECT {db._SERIAL_COLS} FROM serial ORDER BY gtin, serial").fetchall()
    conn.close()
    return rows


def test_an_old_ledger_is_rebuilt_with_serial_ids_and_its_seals_still_verify(tmp_path, capsys):
    path = tmp_path / "old.db"
    old_rows = _old_ledger(path)
    assert len(old_rows) == 40

    conn = db.connect(str(path))  # migrates
    assert conn.execute(f"SELECT serial_id, {db._SERIAL_COLS} FROM serial ORDER BY serial_id").fetchall() == [
        (i, *r) for i, r in enumerate(old_rows, 1)]  # every row, serial_id in (gtin, serial) order
    schema = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'serial' AND sql IS NOT NULL"))
    assert schema["serial_pick"] == db.SERIAL_PICK.replace(" IF NOT EXISTS", "")
    assert {"serial_born", "serial_transition", "serial_log", "serial_never_deleted", "serial_identity_fixed",
            "serial_batch"} <= set(schema)
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    # the children's foreign keys still name serial (gtin, serial), and hold
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        conn.execute("INSERT INTO serial_upstream_return (gtin, serial, source, batch_id, at) VALUES (?, 'NOPE', 's', 'B1', 1)",
                     (GTIN,))
    with pytest.raises(sqlite3.IntegrityError, match="serials are never deleted"):
        conn.execute("DELETE FROM serial WHERE serial_id = 1")
    oldledger.run(conn, "B2", 2, queued=0, allocated=2)  # the next batch runs on the rowid form; the granted and the upstream's serials stay out
    used = {s for (s,) in conn.execute("SELECT serial FROM serial WHERE batch_id = 'B2'")}
    assert len(used) == 4 and not used & {"000000000038", "000000000039"}
    oldledger.close_and_verify(conn, path, capsys)
    c = db.connect(str(path))
    (seal,) = c.execute("SELECT detail FROM audit WHERE action = 'batch.close' AND detail LIKE '%\"B2\"%'").fetchone()
    assert '"serial3"' in seal and '"serial2"' not in seal
    c.close()

    err = oldledger.verify_after_edit(path, capsys, "UPDATE serial SET source = 'edited' WHERE serial_id = 1")
    assert "batch B1: table serial differs from its seal in record" in err


def test_a_rebuild_that_would_break_a_foreign_key_changes_nothing(tmp_path):
    path = tmp_path / "old.db"
    _old_ledger(path)
    # behind the project's back (foreign keys off): a serial due upstream the ledger does not hold
    c = oldledger.migration_refused(path, r"^ledger migration: 1 row\(s\) would refer to rows that are not"
                                          r" there \(serial_upstream_return -> serial\); this ledger is left as it was$",
                                    "INSERT INTO serial_upstream_return (gtin, serial, source, batch_id, at)"
                                    f" VALUES ('{GTIN}', 'GONE', 's', 'B1', 1)")
    assert "serial_id" not in {r[1] for r in c.execute("PRAGMA table_info(serial)")}
    c.close()


def test_allocate_ids_gives_each_serial_with_its_id(tmp_path):
    conn = oldledger.ledger(tmp_path / "l.db")
    masterdata.start_batch(conn, "B1")
    with transaction(conn):
        got = serials.allocate_ids(conn, "B1", GTIN, 3)
        assert serials.allocate(conn, "B1", GTIN, 2) == ["000000000003", "000000000004"]
    assert got == conn.execute("SELECT serial_id, serial FROM serial WHERE batch_id = 'B1' ORDER BY serial LIMIT 3").fetchall()
    assert [s for _, s in got] == ["000000000000", "000000000001", "000000000002"]
    with pytest.raises(serials.SerialError, match="exhausted: 35 available, 36 needed"):
        with transaction(conn):
            serials.allocate_ids(conn, "B1", GTIN, 36)
