"""The service's status reads stand alone: one that fails (here the alarm read, denied by SQLite's
own authorizer on a real ledger) keeps its last value and is said once, and never stops the others
(the ledger figures PackML's counters come from). It once did: one `except` around both."""

from __future__ import annotations

import logging
import sqlite3

from serialine.host import db as ledger_db
from serialine.host import linefile, service

from test_service import LINE_FILE


def _service(tmp_path) -> service.Service:
    """A Service on a fresh ledger, its connection open, nothing started (no device, coder or camera)."""
    path = tmp_path / "serialine.db"
    ledger_db.connect(str(path)).close()
    cfg_path = tmp_path / "line.toml"
    cfg_path.write_text(LINE_FILE.format(port="/dev/null", cpm=4, coder="127.0.0.1:1", camera="127.0.0.1:2",
                                         db=path, gate_at=400.0, upstream=""))
    svc = service.Service(linefile.load(cfg_path))
    svc.conn = ledger_db.connect(str(path))
    return svc


def test_a_failing_alarm_read_does_not_stop_the_figures(tmp_path, caplog):
    svc = _service(tmp_path)
    denied = {"alarm_log"}
    svc.conn.set_authorizer(lambda action, table, *_: sqlite3.SQLITE_DENY
                            if action == sqlite3.SQLITE_READ and table in denied else sqlite3.SQLITE_OK)
    with caplog.at_level(logging.INFO, logger="serialine.service"):
        for _ in range(3):
            svc._publish(force=True)
        assert svc._figures["outbox"] == {"pending": 0, "delivered": 0}  # read although the alarms failed
        said = [r.getMessage() for r in caplog.records if "status alarms" in r.getMessage()]
        assert len(said) == 1 and "the last ones stand" in said[0], said  # once per episode
        denied.clear()
        svc._publish(force=True)
        assert any(r.getMessage() == "status alarms: read again" for r in caplog.records)
    svc.conn.close()


def test_a_device_alarm_is_logged_with_its_unit_from_the_ledger_row(tmp_path, caplog):
    """The unit of a device ALARM is a column of its row (the stored body does not repeat it): the
    service's log line names it, as a line engineer reads it in the journal."""
    import time
    from types import SimpleNamespace

    from serialine.host import devevents
    from serialine.protocol.schema import Alarm

    svc = _service(tmp_path)
    svc.agent = SimpleNamespace(device_id="line-1", boot_id=7)
    fields = dict(event_seq=3, alarm=int(Alarm.REJECT_UNCONFIRMED), active=1, unit_seq=5, t_us=0)
    with ledger_db.transaction(svc.conn):
        row = devevents.row(devevents.boot_ref(svc.conn, "line-1", 7), "ALARM", fields, 0)
        svc.conn.execute(devevents.INSERT, row)
    assert row[3] == 5 and type(row[4]) is int  # unit_seq is a column, the rest packed
    with caplog.at_level(logging.INFO, logger="serialine.service"):
        svc._device_alarms()
        svc._device_alarms()  # once: the next look starts after what was logged
    said = [r.getMessage() for r in caplog.records if "device alarm" in r.getMessage()]
    assert said == ["device alarm REJECT_UNCONFIRMED raised (unit 5)"]
    svc.conn.close()
