"""Every rule on a serial's state change lives in one trigger (serial_transition); a ledger made
when they were six triggers gains it and keeps every rule."""

import sqlite3

import pytest

from serialine.host import db, masterdata

from hostkit import GTIN

# the six triggers of ledgers made before the rules were one (their text then)
_OLD = [
    """CREATE TRIGGER serial_unpublished_unused BEFORE UPDATE OF state ON serial
        WHEN NEW.import_id IS NOT NULL AND (SELECT state FROM serial_import WHERE import_id = NEW.import_id) IS NOT 'published'
        BEGIN SELECT RAISE(ABORT, 'a serial of an unpublished import cannot be used'); END""",
    """CREATE TRIGGER serial_granted_stays_out BEFORE UPDATE OF state ON serial
        WHEN NEW.state <> OLD.state AND NEW.state IN ('allocated', 'available')
         AND EXISTS (SELECT 1 FROM serial_grant g WHERE g.gtin = OLD.gtin AND g.serial = OLD.serial AND g.state <> 'returned')
        BEGIN SELECT RAISE(ABORT, 'this serial was handed out over OPEN-SCS and not returned'); END""",
    """CREATE TRIGGER serial_returned_upstream_stays_out BEFORE UPDATE OF state ON serial
        WHEN NEW.state <> OLD.state AND NEW.state = 'allocated'
         AND EXISTS (SELECT 1 FROM serial_upstream_return r WHERE r.gtin = OLD.gtin AND r.serial = OLD.serial)
        BEGIN SELECT RAISE(ABORT, 'this serial goes back to the upstream pool it came from'); END""",
    """CREATE TRIGGER serial_transition BEFORE UPDATE OF state ON serial
        WHEN NEW.state <> OLD.state AND NOT ((OLD.state='available' AND NEW.state='allocated'))
        BEGIN SELECT RAISE(ABORT, 'illegal serial state transition'); END""",
    """CREATE TRIGGER serial_allocated_to_running_batch BEFORE UPDATE OF state ON serial
        WHEN NEW.state = 'allocated' AND OLD.state <> 'allocated'
         AND (SELECT state FROM batch WHERE batch_id = NEW.batch_id) IS NOT 'running'
        BEGIN SELECT RAISE(ABORT, 'serials are allocated only to a running batch'); END""",
    """CREATE TRIGGER serial_return_only_at_close BEFORE UPDATE OF state ON serial
        WHEN OLD.state = 'allocated' AND NEW.state = 'available'
         AND (SELECT state FROM batch WHERE batch_id = OLD.batch_id) IS NOT 'closing'
        BEGIN SELECT RAISE(ABORT, 'allocated serials return to the pool only at batch close'); END""",
]
_OLD_NAMES = {"serial_unpublished_unused", "serial_granted_stays_out", "serial_returned_upstream_stays_out",
              "serial_allocated_to_running_batch", "serial_return_only_at_close"}


def _ledger(path, old):
    c = db.connect(str(path))
    masterdata.add_product(c, GTIN, "Aspirin 100 mg", "EU_FMD", 7)
    c.executemany("INSERT INTO serial (gtin, serial, source) VALUES (?, ?, 'file')", [(GTIN, f"S{i}") for i in range(10)])
    masterdata.create_batch(c, "B1", GTIN, "L1", "2030-01-31", 10, 2, 2)
    masterdata.start_batch(c, "B1")
    masterdata.create_batch(c, "B2", GTIN, "L2", "2030-01-31", 10, 2, 2)  # never started
    if old:
        c.execute("DROP TRIGGER serial_transition")
        for sql in _OLD:
            c.execute(sql)
        c.close()
        c = db.connect(str(path))
    return c


def _alloc(c, serial, batch="B1"):
    c.execute("UPDATE serial SET state='allocated', batch_id=? WHERE gtin=? AND serial=?", (batch, GTIN, serial))


@pytest.mark.parametrize("old", [False, True], ids=["new", "old ledger"])
def test_every_serial_rule_holds_in_one_trigger(tmp_path, old):
    c = _ledger(tmp_path / "l.db", old)
    triggers = dict(c.execute("SELECT name, sql FROM sqlite_master WHERE type='trigger' AND tbl_name='serial'"))
    assert triggers["serial_transition"] == db.SERIAL_TRANSITION.replace(" IF NOT EXISTS", "")
    assert not set(triggers) & _OLD_NAMES
    with pytest.raises(sqlite3.IntegrityError, match="illegal serial state transition"):
        c.execute("UPDATE serial SET state='printed' WHERE serial='S0'")
    with pytest.raises(sqlite3.IntegrityError, match="allocated only to a running batch"):
        _alloc(c, "S0", "B2")
    _alloc(c, "S1")
    with pytest.raises(sqlite3.IntegrityError, match="only at batch close"):
        c.execute("UPDATE serial SET state='available', batch_id=NULL WHERE serial='S1'")
    c.execute("INSERT INTO serial_grant (token, gtin, serial, user, at) VALUES ('t', ?, 'S2', 'ann', 0)", (GTIN,))
    with pytest.raises(sqlite3.IntegrityError, match="handed out over OPEN-SCS and not returned"):
        _alloc(c, "S2")
    c.execute("INSERT INTO serial_upstream_return (gtin, serial, source, batch_id, at) VALUES (?, 'S3', 'up', 'B1', 0)",
              (GTIN,))
    with pytest.raises(sqlite3.IntegrityError, match="goes back to the upstream pool"):
        _alloc(c, "S3")
    (staging,) = c.execute("INSERT INTO serial_import (gtin, source, started_at, heartbeat) VALUES (?, 'f', 0, 0)"
                           " RETURNING import_id", (GTIN,)).fetchone()
    c.execute("INSERT INTO serial (gtin, serial, source, import_id) VALUES (?, 'X1', 'f', ?)", (GTIN, staging))
    with pytest.raises(sqlite3.IntegrityError, match="unpublished import cannot be used"):
        _alloc(c, "X1")
    for state in ("printed", "commissioned", "destroyed"):  # a legal life, every step in the history
        c.execute("UPDATE serial SET state=? WHERE serial='S1'", (state,))
    history = c.execute("SELECT old_state, new_state FROM serial_trail WHERE serial='S1' ORDER BY seq").fetchall()
    assert history == [("available", "allocated"), ("allocated", "printed"), ("printed", "commissioned"),
                       ("commissioned", "destroyed")]
    c.execute("UPDATE batch SET state='closing' WHERE batch_id='B1'")
    with pytest.raises(sqlite3.IntegrityError, match="allocated only to a running batch"):
        _alloc(c, "S4")
    c.close()


def test_a_batch_at_close_takes_its_serials_back(tmp_path):
    c = _ledger(tmp_path / "l.db", False)
    _alloc(c, "S1")
    c.execute("UPDATE batch SET state='closing' WHERE batch_id='B1'")
    c.execute("UPDATE serial SET state='available', batch_id=NULL WHERE serial='S1'")
    history = c.execute("SELECT old_state, new_state, batch_id FROM serial_trail WHERE serial='S1' ORDER BY seq").fetchall()
    assert history == [("available", "allocated", "B1"), ("allocated", "available", "B1")]
    c.close()
