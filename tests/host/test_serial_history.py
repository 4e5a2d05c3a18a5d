"""serial_history in its compact form (db.SERIAL_HISTORY: serial_id, batch ref, state code, ms since
the batch's t0), read back by serial_trail; ledgers made with the forms before (gtin, serial, old_state,
new_state, batch_id, at text; then batch_id, serial key, state code, ms since 1970) are migrated and
every audit seal made before still verifies."""

import json
import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from serialine.host import audit, cli_batch, db, gs1, masterdata, serials

import oldledger
from hostkit import GTIN

# the serial history's DDL before the compact form (its text then)
OLD_TABLE = """CREATE TABLE serial_history (
        gtin TEXT NOT NULL, serial TEXT NOT NULL, old_state TEXT, new_state TEXT NOT NULL,
        batch_id TEXT, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"""
OLD_LOG = """CREATE TRIGGER serial_log AFTER UPDATE OF state ON serial
        WHEN NEW.state <> OLD.state
        BEGIN INSERT INTO serial_history (gtin, serial, old_state, new_state, batch_id)
              VALUES (NEW.gtin, NEW.serial, OLD.state, NEW.state, COALESCE(NEW.batch_id, OLD.batch_id)); END"""
OLD_COLS = ["gtin", "serial", "old_state", "new_state", "batch_id", "at"]




def test_each_change_is_one_compact_row_read_back_by_name(tmp_path):
    conn = oldledger.ledger(tmp_path / "l.db")
    oldledger.run(conn, "B1", 3, queued=0, allocated=2)
    rows = conn.execute("SELECT r.batch_id, h.batch_ref, h.serial_id, h.at, r.t0 FROM serial_history h"
                        " JOIN batch_ref r ON r.ref = h.batch_ref ORDER BY seq").fetchall()
    assert len(rows) == 3 * 3 + 2 and {r[:2] for r in rows} == {("B1", 1)}  # the batch as a small integer
    (made,) = conn.execute(f"SELECT {db.ms_sql('created_at')} FROM batch WHERE batch_id = 'B1'").fetchone()
    assert all(type(at) is int and 0 <= at and t0 - 1 <= made <= t0 for *_, at, t0 in rows)  # ms since the batch was made
    serial, serial_id = conn.execute("SELECT s.serial, s.serial_id FROM coder_job j JOIN serial s USING (gtin, serial)"
                                     " ORDER BY job_id").fetchone()
    assert rows[0][2] == serial_id
    assert conn.execute("SELECT serial, at FROM serial_history_v2 ORDER BY seq").fetchall() == [
        (int("1" + serial), rows[0][4] + rows[0][3]), *[(int("1" + s), t0 + at) for (s,), (*_, at, t0) in zip(
            conn.execute("SELECT s.serial FROM serial_history h JOIN serial s USING (serial_id) ORDER BY seq"), rows)][1:]]
    trail = conn.execute("SELECT gtin, old_state, new_state FROM serial_trail WHERE serial = ? ORDER BY seq",
                         (serial,)).fetchall()
    assert trail == [(GTIN, "available", "allocated"), (GTIN, "allocated", "printed"), (GTIN, "printed", "commissioned")]
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE serial_history SET state = 0")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM serial_history")
    conn.close()


def test_batch_history_shows_a_serials_every_change(tmp_path, capsys):
    path = str(tmp_path / "l.db")
    conn = oldledger.ledger(path)
    oldledger.run(conn, "B1", 1, queued=0, allocated=2)
    serial, at = conn.execute("SELECT serial, at FROM serial_trail WHERE new_state = 'commissioned'").fetchone()
    conn.close()
    capsys.readouterr()
    assert cli_batch.main(["history", GTIN, serial, "--db", path, "--user", "qa"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"serial {GTIN}/{serial}: 3 change(s)" and len(lines) == 4
    assert [l.split()[1:4] for l in lines[1:]] == [["available", "->", "allocated"], ["allocated", "->", "printed"],
                                                   ["printed", "->", "commissioned"]]
    assert lines[3].split()[0] == at
    assert cli_batch.main(["history", GTIN, "000000000039", "--db", path, "--user", "qa"]) == 0  # never used
    assert capsys.readouterr().out == f"serial {GTIN}/000000000039: 0 change(s), still as it was made\n"
    assert cli_batch.main(["history", GTIN, "NOPE", "--db", path, "--user", "qa"]) == 1
    assert capsys.readouterr().err == f"error: no serial 'NOPE' of GTIN {GTIN} in this ledger\n"


def test_a_serial_is_allocated_only_to_a_batch_of_its_gtin(tmp_path):
    conn = oldledger.ledger(tmp_path / "l.db")
    masterdata.add_product(conn, "09506000134369", "Other 5 mg", "EU_FMD", 7)
    conn.execute("INSERT INTO serial (gtin, serial, source) VALUES ('09506000134369', 'X1', 'file')")
    masterdata.start_batch(conn, "B1")
    with pytest.raises(sqlite3.IntegrityError, match="running batch of their GTIN"):
        conn.execute("UPDATE serial SET state='allocated', batch_id='B1' WHERE serial='X1'")
    conn.close()


def test_ms_times_read_back_as_the_old_text():
    c = sqlite3.connect(":memory:")
    texts = [f"2026-12-01T19:40:{s:02d}.{ms:03d}Z" for s in (0, 59) for ms in range(1000)]
    texts += ["1999-12-31T23:59:59.999Z", "2038-01-19T03:14:08.000Z", "2100-02-28T00:00:00.001Z"]
    sql = f"SELECT {db.ms_text_sql(db.ms_sql('?1'))}"
    assert [c.execute(sql, (t,)).fetchone()[0] for t in texts] == texts
    (now, again) = c.execute(f"SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), {db.ms_text_sql(db.ms_sql(repr('now')))}").fetchone()
    assert now == again


def test_a_ledger_of_the_old_form_is_migrated_and_its_seals_still_verify(tmp_path, capsys):
    path = tmp_path / "old.db"
    conn = oldledger.ledger(path, ("B1", "B2"))
    for sql in (*_NO_REF, OLD_TABLE, OLD_LOG):
        conn.execute(sql)
    oldledger.run(conn, "B1", 4, queued=0, allocated=2)
    # what the old release sealed: a checkpoint of the whole log, then the batch's close
    (upto,) = conn.execute("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()
    logged = conn.execute("SELECT gtin, serial, old_state, new_state, batch_id, at FROM serial_history WHERE at < ?"
                          " ORDER BY at, gtin, serial, old_state, new_state, batch_id", (upto,)).fetchall()
    oldledger.seal(conn, audit.CHECKPOINT, {"parts": {"log:serial_history": oldledger.part(OLD_COLS, logged, upto)}})
    oldledger.close_states(conn, "B1", "UPDATE serial SET state='available', batch_id=NULL"
                                       " WHERE batch_id='B1' AND state='allocated'")
    batch_rows = conn.execute("SELECT gtin, serial, old_state, new_state, batch_id, at FROM serial_history"
                              " WHERE batch_id='B1' ORDER BY gtin, serial, at, old_state, new_state").fetchall()
    oldledger.seal(conn, "batch.close", {"batch_id": "B1",
                                         "seal": {"serial_history": oldledger.part(OLD_COLS, batch_rows)}})
    old_rows = conn.execute("SELECT * FROM serial_history ORDER BY rowid").fetchall()
    assert len(old_rows) == 4 * 3 + 2 * 2
    conn.close()

    conn = db.connect(str(path))  # migrates
    assert conn.execute("SELECT * FROM serial_history_v1 ORDER BY rowid").fetchall() == old_rows
    assert conn.execute("SELECT gtin, serial, old_state, new_state, batch_id, at FROM serial_trail"
                        " ORDER BY seq").fetchall() == old_rows  # every row copied, read back as it was
    oldledger.run(conn, "B2", 2, queued=0, allocated=2)  # the next batch writes the compact form, and its serials' history goes on
    oldledger.close_and_verify(conn, path, capsys)
    assert db.connect(str(path)).execute("SELECT count(*) FROM serial_history_v1").fetchone() == (len(old_rows),)

    err = oldledger.verify_after_edit(path, capsys, "DROP TRIGGER serial_history_v1_no_update",  # an old row edited
                                      "UPDATE serial_history_v1 SET at = '2026-01-01T00:00:00.000Z' WHERE rowid = 1")
    assert "batch B1: table serial_history" in err and "differs from its seal in record 2 (batch.close)" in err


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789", min_size=1, max_size=20),
                 st.text(alphabet=sorted(gs1.CSET82), min_size=1, max_size=20)))
def test_a_serials_key_reads_back_as_the_serial(serial):
    c = sqlite3.connect(":memory:")
    c.execute("CREATE TABLE t (serial NOT NULL)")  # as serial_history: no declared type
    c.execute(f"INSERT INTO t VALUES ({db.serial_key_sql('?1')})", (serial,))
    (key, back), = c.execute(f"SELECT serial, {db.serial_text_sql('serial')} FROM t").fetchall()
    assert key == db.serial_key(serial) and back == serial
    assert type(key) is (int if len(serial) <= 18 and serial.isdigit() else str)


FIRST_COMPACT = """CREATE TABLE serial_history (
        seq INTEGER PRIMARY KEY, batch_id TEXT NOT NULL, serial TEXT NOT NULL, state INTEGER NOT NULL,
        at INTEGER NOT NULL)"""


def test_the_first_compact_form_gets_its_serials_keyed(tmp_path):
    path = tmp_path / "l.db"
    conn = oldledger.ledger(path)
    oldledger.run(conn, "B1", 2, queued=0, allocated=2)
    before = conn.execute("SELECT * FROM serial_trail ORDER BY seq").fetchall()
    rows = conn.execute(f"SELECT seq, batch_id, {db.serial_text_sql('serial')}, state, at FROM serial_history_v2").fetchall()
    for sql in (*_NO_REF, FIRST_COMPACT):
        conn.execute(sql)
    conn.executemany("INSERT INTO serial_history VALUES (?,?,?,?,?)", rows)
    conn.close()
    conn = db.connect(str(path))
    assert conn.execute("SELECT * FROM serial_trail ORDER BY seq").fetchall() == before
    assert {t for (t,) in conn.execute("SELECT typeof(serial) FROM serial_history_v2")} == {"integer"}
    conn.close()


# the form before serial_id and the batch ref (its DDL, trigger and view then)
V2_TABLE = """CREATE TABLE serial_history (
        seq INTEGER PRIMARY KEY, batch_id TEXT NOT NULL, serial NOT NULL, state INTEGER NOT NULL,
        at INTEGER NOT NULL)"""
V2_LOG = f"""CREATE TRIGGER serial_log AFTER UPDATE OF state ON serial
        WHEN NEW.state <> OLD.state
        BEGIN INSERT INTO serial_history (batch_id, serial, state, at)
              VALUES (COALESCE(NEW.batch_id, OLD.batch_id), {db.serial_key_sql("NEW.serial")}, {db.state_code_sql("NEW.state")},
                      {db.ms_sql("'now'")}); END"""
V2_TRAIL = f"""CREATE VIEW serial_trail AS
        SELECT h.seq AS seq, b.gtin AS gtin, {db.serial_text_sql("h.serial")} AS serial,
               COALESCE(lag({db.state_name_sql("h.state")}) OVER (PARTITION BY b.gtin, {db.serial_text_sql("h.serial")}
                                                             ORDER BY h.seq), 'available') AS old_state,
               {db.state_name_sql("h.state")} AS new_state, h.batch_id AS batch_id, {db.ms_text_sql("h.at")} AS at
        FROM serial_history h JOIN batch b USING (batch_id)"""
V2_COLS = ["seq", "batch_id", "serial", "state", "at"]
# what a ledger of the forms before lacks
_NO_REF = ("DROP VIEW serial_trail", "DROP VIEW serial_history_v2", "DROP TRIGGER serial_log", "DROP TABLE serial_history",
           "DROP TRIGGER batch_ref_given", "DROP TRIGGER batch_ref_fixed", "DROP TRIGGER batch_ref_kept", "DROP TABLE batch_ref")


def _to_v2_form(conn):
    for sql in (*_NO_REF, V2_TABLE, V2_LOG, V2_TRAIL):
        conn.execute(sql)


def test_a_ledger_of_the_form_before_serial_id_is_migrated_and_its_seals_still_verify(tmp_path, capsys):
    path = tmp_path / "old.db"
    conn = oldledger.ledger(path, ("B1", "B2"))
    _to_v2_form(conn)
    oldledger.run(conn, "B1", 4, queued=0, allocated=2)
    # what the old release sealed: a link of the log's chain (by rowid), then the batch's close
    logged = conn.execute("SELECT * FROM serial_history ORDER BY seq").fetchall()
    (upto,) = conn.execute("SELECT max(rowid) + 1 FROM serial_history").fetchone()
    oldledger.seal(conn, audit.CHECKPOINT, {"parts": {"log:serial_history2": oldledger.part(V2_COLS, logged, upto)}})
    oldledger.close_states(conn, "B1", "UPDATE serial SET state='available', batch_id=NULL"
                                       " WHERE batch_id='B1' AND state='allocated'")
    batch_rows = conn.execute("SELECT * FROM serial_history WHERE batch_id='B1' ORDER BY seq").fetchall()
    oldledger.seal(conn, "batch.close", {"batch_id": "B1", "seal": {"serial_history": oldledger.part(V2_COLS, batch_rows)}})
    old_rows = conn.execute("SELECT * FROM serial_history ORDER BY seq").fetchall()
    trail = conn.execute("SELECT * FROM serial_trail ORDER BY seq").fetchall()
    assert len(old_rows) == 4 * 3 + 2 * 2 and type(old_rows[0][2]) is int
    conn.close()

    conn = db.connect(str(path))  # migrates
    assert list(map(repr, conn.execute("SELECT * FROM serial_history_v2 ORDER BY seq"))) == list(map(repr, old_rows))
    assert conn.execute("SELECT * FROM serial_trail ORDER BY seq").fetchall() == trail  # as a reviewer read it
    assert {r for (r,) in conn.execute("SELECT batch_ref FROM serial_history")} == {1}
    assert "serial_history_v2_rows" not in {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    oldledger.run(conn, "B2", 2, queued=0, allocated=2)  # the next batch writes the compact form, and its serials' history goes on
    assert conn.execute("SELECT count(*) FROM serial_history h JOIN batch_ref r ON r.ref = h.batch_ref"
                        " WHERE r.batch_id = 'B2'").fetchone() == (2 * 3 + 2,)
    oldledger.close_and_verify(conn, path, capsys)

    err = oldledger.verify_after_edit(path, capsys, "DROP TRIGGER serial_history_no_update",  # an old row edited
                                      "UPDATE serial_history SET at = at + 1 WHERE seq = 1")
    assert "batch B1: table serial_history_v2 differs from its seal in record 2 (batch.close)" in err


def test_a_history_that_would_not_read_back_is_left_as_it_was(tmp_path):
    path = tmp_path / "old.db"
    conn = oldledger.ledger(path, ("B1",))
    _to_v2_form(conn)
    conn.execute("INSERT INTO serial_history (batch_id, serial, state, at) VALUES ('B1', 1999, 1, 0)")  # no such serial
    before = db.snapshot(conn)
    conn.close()
    with pytest.raises(sqlite3.IntegrityError, match="serial_history: 1 row.*would not read back as stored"):
        db.connect(str(path))
    assert db.snapshot(sqlite3.connect(path)) == before


def test_a_batchs_ref_and_t0_are_sealed_from_its_creation(tmp_path, capsys):
    path = tmp_path / "l.db"
    conn = oldledger.ledger(path, ())
    masterdata.create_batch(conn, "B1", GTIN, "LB1", "2030-01-31", 10, 3, 2, user="qa")
    (detail,) = conn.execute("SELECT detail FROM audit WHERE action = 'batch.create'").fetchone()
    assert "batch_ref" in json.loads(detail)["seal"]
    oldledger.run(conn, "B1", 2, queued=0, allocated=2)
    conn.close()
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(path)]) == 0
    # every time of the batch's history moved by an hour, behind the project's back
    err = oldledger.verify_after_edit(path, capsys, "DROP TRIGGER batch_ref_fixed", "UPDATE batch_ref SET t0 = t0 - 3600000")
    assert "batch B1: table batch_ref differs from its seal in record 1 (batch.create)" in err
