"""unit and coder_job_row name a pack by serial.serial_id (issue 16): the tables unit_row and
coder_job_row hold the integer, the views unit, coder_job and coder_job_row_v1 give the columns of
before with the same values. A ledger made before migrates at db.connect, every row read back as it
was (else nothing changes), and the seals made before still verify; the view unit still takes writes
the old way; the host path writes by serial_id."""

from __future__ import annotations

import sqlite3

import pytest

from serialine.host import audit, db, ledgerfile, masterdata, serials
from serialine.host.db import transaction
from serialine.host.ledger import Ledger

import oldledger
from hostkit import GTIN, Line

# what a close sealed of a batch's own rows before serial_id
OLD_CLOSED = ("product", "product_master", "batch", "batch_site", "unit", "serial2", "coder_job_row",
              "coder_template", "container", "packed")


def _run(conn, batch, units):
    """`units` units of `batch` (a new boot each batch): passed, but unit 1 rejected and unit 2 read
    as another code (a misread: its read_serial is not its serial); one job more than units, queued."""
    masterdata.start_batch(conn, batch)
    ledger = Ledger(conn, batch)
    with transaction(conn):
        ledger.queue_codes(units + 1)
    line = Line(ledger, boot_id=int(batch[1:]))
    for u in range(units):
        if u == 2:
            other = ledger.code_for("000000000039")
            line.unit(u, outcome=3, read="]d2" + other)
        else:
            line.unit(u, outcome=2 if u == 1 else 1)
    return ledger


def _old_ledger(path):
    """B1 run and closed, the ledger put into the form before serial_id, B1 sealed as closes sealed it then."""
    conn = oldledger.ledger(path, ("B1", "B2"))
    _run(conn, "B1", 4)
    oldledger.close_states(conn, "B1", "UPDATE coder_job_row SET state='dropped' WHERE state='queued'",
                           "UPDATE serial SET state='rejected' WHERE batch_id='B1' AND state='allocated'")
    oldledger.before_serial_id(conn)
    with transaction(conn):
        oldledger.seal(conn, "batch.close", {"batch_id": "B1", "seal": audit.seal(conn, "B1", OLD_CLOSED)})
    units = conn.execute("SELECT * FROM unit ORDER BY device_id, boot_id, unit_seq").fetchall()
    jobs = conn.execute("SELECT * FROM coder_job_row ORDER BY job_id").fetchall()
    conn.close()
    return units, jobs


@pytest.fixture
def migrated(tmp_path):
    """An old ledger after db.connect: (conn, path, old unit rows, old coder_job_row rows)."""
    path = tmp_path / "old.db"
    units, jobs = _old_ledger(path)
    assert len(units) == 4 and {j[5] for j in jobs} == {"bound", "dropped"}
    assert any(u[8] not in (None, u[6]) for u in units)  # a misread: kept as its text
    return db.connect(str(path)), path, units, jobs


def test_an_old_ledger_migrates_and_its_seals_still_verify(migrated, capsys):
    conn, path, units, jobs = migrated
    kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name IN ('unit', 'coder_job_row')"))
    assert kinds == {"unit": "view", "coder_job_row": "table"}
    assert conn.execute("SELECT * FROM unit ORDER BY device_id, boot_id, unit_seq").fetchall() == units
    assert conn.execute("SELECT * FROM coder_job_row_v1 ORDER BY job_id").fetchall() == jobs
    assert [r[1] for r in conn.execute("PRAGMA table_info(coder_job_row)")] == [
        "job_id", "batch_id", "serial_id", "code", "state"]
    # stored by serial_id; a read of the printed serial as 0, a misread as its text
    stored = conn.execute("SELECT u.serial_id = s.serial_id, u.read_serial FROM unit_row u"
                          " JOIN serial s ON s.gtin = ? AND s.serial = (SELECT serial FROM unit WHERE unit_seq = u.unit_seq)"
                          " ORDER BY u.unit_seq", (GTIN,)).fetchall()
    assert [ok for ok, _ in stored] == [1] * 4
    assert [r for _, r in stored].count(0) == 3 and isinstance(stored[2][1], str)
    (given,) = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'coder_job_row'").fetchone()
    assert given == jobs[-1][0]
    # the next batch runs on the new form (its jobs' ids follow on) and closes; both seals verify
    _run(conn, "B2", 3)
    assert conn.execute("SELECT min(job_id) FROM coder_job_row WHERE batch_id = 'B2'").fetchone() == (given + 1,)
    oldledger.close_and_verify(conn, path, capsys)
    c = db.connect(str(path))
    (seal,) = c.execute("SELECT detail FROM audit WHERE action = 'batch.close' AND detail LIKE '%\"B2\"%'").fetchone()
    assert '"unit_row"' in seal and '"coder_job_row2"' in seal and '"unit"' not in seal
    assert db.connect(str(path)).execute("SELECT count(*) FROM unit").fetchone() == (7,)  # a second connect: no change
    c.close()


@pytest.mark.parametrize("edit, table", [
    ("UPDATE unit_row SET grade = 'B' WHERE batch_id = 'B1' AND unit_seq = 0", "unit"),
    ("UPDATE unit_row SET read_serial = 'X' WHERE batch_id = 'B1' AND read_serial = 0", "unit"),
    ("UPDATE coder_job_row SET state = 'bound' WHERE batch_id = 'B1' AND state = 'dropped'", "coder_job_row_v1"),
], ids=["unit grade", "unit read", "job state"])
def test_an_old_row_edited_after_the_migration_fails_verify(migrated, capsys, edit, table):
    conn, path, _, _ = migrated
    conn.close()
    err = oldledger.verify_after_edit(path, capsys, edit)
    assert f"batch B1: table {table} differs from its seal in record" in err, err


@pytest.mark.parametrize("edit, what", [
    ("UPDATE unit SET gtin = NULL WHERE unit_seq = 0", "unit"),  # (gtin, serial) the form cannot say
    ("UPDATE coder_job_row SET serial = 'GONE' WHERE job_id = (SELECT min(job_id) FROM coder_job_row)", "coder_job_row"),
], ids=["unit", "coder_job_row"])
def test_a_migration_that_would_not_read_back_changes_nothing(tmp_path, edit, what):
    path = tmp_path / "old.db"
    _old_ledger(path)
    oldledger.migration_refused(path, rf"^{what}: 1 row\(s\) would not read back as stored;"
                                      r" this ledger is left as it was$", edit).close()


@pytest.fixture
def fresh(tmp_path):
    conn = oldledger.ledger(tmp_path / "l.db")
    masterdata.start_batch(conn, "B1")
    with transaction(conn):
        picked = serials.allocate_ids(conn, "B1", GTIN, 3)
    return conn, picked


def test_the_view_unit_takes_writes_the_old_way(fresh):
    conn, picked = fresh
    (i0, s0), (i1, s1), _ = picked
    conn.execute("INSERT INTO unit (device_id, boot_id, unit_seq, batch_id, gtin, serial, read_serial, outcome)"
                 " VALUES ('d', 1, 0, 'B1', ?, ?, ?, 'PASSED')", (GTIN, s0, s0))
    conn.execute("INSERT INTO unit (device_id, boot_id, unit_seq, batch_id) VALUES ('d', 1, 1, 'B1')")
    assert conn.execute("SELECT serial_id, read_serial, test, inspected FROM unit_row ORDER BY unit_seq").fetchall() == [
        (i0, 0, 0, 0), (None, None, 0, 0)]
    assert conn.execute("SELECT gtin, serial, read_serial FROM unit WHERE unit_seq = 0").fetchone() == (GTIN, s0, s0)
    # a new serial: its read (the old serial's) is kept as text; a read of it again as 0
    conn.execute("UPDATE unit SET serial = ? WHERE unit_seq = 0", (s1,))  # (a view's rowcount: 0, SQLite's way)
    assert conn.execute("SELECT serial_id, read_serial FROM unit_row WHERE unit_seq = 0").fetchone() == (i1, s0)
    conn.execute("UPDATE unit SET read_serial = serial WHERE unit_seq = 0")
    assert conn.execute("SELECT read_serial FROM unit_row WHERE unit_seq = 0").fetchone() == (0,)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY constraint failed"):
        conn.execute("INSERT INTO unit (device_id, boot_id, unit_seq, batch_id, gtin, serial) VALUES ('d', 1, 2, 'B1', ?, 'NOPE')",
                     (GTIN,))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("UPDATE unit SET outcome = 'LOST' WHERE unit_seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE") as twice:  # a serial on one unit only
        conn.execute("UPDATE unit SET gtin = ?, serial = ? WHERE unit_seq = 1", (GTIN, s1))
    assert ledgerfile.sentence(twice.value) == "this serial is already bound to another unit"
    # a read kept as 0 is the unit's serial: a direct write cannot move the serial under it
    with pytest.raises(sqlite3.IntegrityError, match="fixed once its read is recorded"):
        conn.execute("UPDATE unit_row SET serial_id = ? WHERE unit_seq = 0", (picked[2][0],))
    conn.execute("DELETE FROM unit WHERE unit_seq = 1")
    assert conn.execute("SELECT count(*) FROM unit_row").fetchone() == (1,)


def test_the_host_path_writes_by_serial_id(fresh):
    conn, _ = fresh
    ledger = Ledger(conn, "B1")
    with transaction(conn):
        jobs = ledger.queue_codes(3)
    said = []
    conn.set_trace_callback(said.append)
    line = Line(ledger)
    line.unit(0)
    line.unit(1, outcome=2)
    conn.set_trace_callback(None)
    writes = [s for s in said if s.lstrip().upper().startswith(("INSERT", "UPDATE"))
              and any(t in s for t in ("unit_row", "coder_job_row", "packed_row", "UPDATE serial"))]
    assert any("packed_row" in s for s in writes) and all("gtin" not in s for s in writes), writes  # no (gtin, serial) lookup
    assert conn.execute("SELECT u.unit_seq, s.serial, s.state, j.state, typeof(u.read_serial) FROM unit_row u"
                        " JOIN serial s USING (serial_id) JOIN coder_job_row j USING (serial_id) ORDER BY 1").fetchall() == [
        (0, jobs[0][0], "commissioned", "bound", "integer"), (1, jobs[1][0], "rejected", "bound", "integer")]
    assert conn.execute("SELECT serial, read_serial FROM unit ORDER BY unit_seq").fetchall() == [(s, s) for s, _ in jobs[:2]]
