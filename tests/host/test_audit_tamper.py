"""Tampering matrix: a closed batch's ledger edited behind the project's back with raw sqlite3
(dropping the append-only and rule triggers first, as an attacker would). `serialine audit
verify` must exit non-zero for every kind of edit, with one line naming the first broken record or
table."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from serialine.host import audit, cli_batch, db, devevents
from serialine.host.db import transaction
from serialine.host.epcis import eventhash, outbox
from serialine.host.ledger import Ledger
from serialine.protocol.schema import Reason

from hostkit import GTIN, Line, cli_line

SETUP = [["product", GTIN, "Aspirin 100 mg", "--market", "EU_FMD", "--prefix-len", "7"],
         ["serials", GTIN, "--generate", "300"],
         ["create", "B1", GTIN, "L1", "2030-01-31", "--planned", "100", "--case-size", "3", "--pallet-size", "2"],
         ["start", "B1"]]


def _run_line(dbfile, close=True):
    line = cli_line(dbfile, SETUP, 12)
    conn, ledger = line.ledger.conn, line.ledger
    for u in range(6):
        line.unit(u)  # two full cases on one pallet
    line.unit(6, outcome=2, reason=int(Reason.VERDICT_FAIL), grade="F")  # rejected
    with transaction(conn):
        ledger.alarm("dev1", "REJECT_STREAK", "test alarm")
    conn.close()
    if close:
        assert cli_batch.main(["close", "B1", "--db", str(dbfile), "--user", "qa"]) == 0


@pytest.fixture(scope="module")
def closed_ledger(tmp_path_factory):
    d = tmp_path_factory.mktemp("closed")
    _run_line(d / "ledger.db")
    return d


def _rehash(c, start=1):
    prev = audit.GENESIS if start == 1 else c.execute("SELECT hash FROM audit WHERE seq=?", (start - 1,)).fetchone()[0]
    for seq, at, user, action, detail in c.execute(
            "SELECT seq, at, user, action, detail FROM audit WHERE seq >= ? ORDER BY seq", (start,)).fetchall():
        h = audit._digest(prev, seq, at, user, action, detail)
        c.execute("UPDATE audit SET prev_hash=?, hash=? WHERE seq=?", (prev, h, seq))
        prev = h


def _rejected(c):
    return c.execute("SELECT gtin, serial FROM unit WHERE outcome LIKE 'REJECTED%'").fetchone()


def delete_last_records(c):
    c.execute("DROP TRIGGER audit_no_delete")
    c.execute("DELETE FROM audit WHERE seq > (SELECT max(seq) - 2 FROM audit)")


def edit_record_and_rehash(c):
    c.execute("DROP TRIGGER audit_no_update")
    (detail,) = c.execute("SELECT detail FROM audit WHERE action='batch.create'").fetchone()
    c.execute("UPDATE audit SET detail=? WHERE action='batch.create'", (detail.replace('"L1"', '"L9"'),))
    _rehash(c)


def forge_passed_commissioned_cased(c):  # the case: a rejected pack made good and packed
    gtin, serial = _rejected(c)
    for t in ("serial_transition", "serial_log", "packed_only_commissioned", "packed_into_open_case"):
        c.execute(f"DROP TRIGGER {t}")
    c.execute("UPDATE unit SET outcome='PASSED', reason=NULL, verdict='PASS' WHERE serial=?", (serial,))
    c.execute("UPDATE serial SET state='commissioned' WHERE serial=?", (serial,))
    c.execute("INSERT INTO packed SELECT ?, ?, container_id FROM container WHERE level='case' LIMIT 1", (gtin, serial))


def edit_unit_outcome(c):
    c.execute("UPDATE unit SET outcome='PASSED' WHERE outcome LIKE 'REJECTED%'")


def edit_serial_state(c):
    c.execute("DROP TRIGGER serial_transition")
    c.execute("DROP TRIGGER serial_log")
    c.execute("UPDATE serial SET state='commissioned' WHERE serial=?", (_rejected(c)[1],))


def delete_serial_history_row(c):
    c.execute("DROP TRIGGER serial_history_no_delete")
    c.execute("DELETE FROM serial_history WHERE serial_id=(SELECT serial_id FROM serial WHERE gtin=? AND serial=?)"
              " AND state=?", (*_rejected(c), db.STATE_CODE["rejected"]))


def edit_device_event_body(c):
    [e] = devevents.events(c, names=("UNIT_OUTCOME",), unit_seq=6)
    _, _, msg, _, body, body2, _ = devevents.row(0, "UNIT_OUTCOME", {**e.fields, "outcome": 1, "event_seq": 0, "unit_seq": 6}, 0)
    c.execute("UPDATE device_event SET body=?, body2=? WHERE msg=? AND unit_seq=6", (body, body2, msg))


def delete_alarm(c):
    c.execute("DELETE FROM alarm_log")


def edit_batch_lot_expiry(c):
    c.execute("UPDATE batch SET lot='L9', expiry='2031-01-31' WHERE batch_id='B1'")


def edit_outbox_body(c):
    c.execute("DROP TRIGGER epcis_outbox_body_is_immutable")
    seq, body = c.execute("SELECT seq, body FROM epcis_outbox WHERE event_type='ObjectEvent' LIMIT 1").fetchone()
    event = json.loads(outbox.body_text(body))
    event["epcList"] = event["epcList"][:-1]
    c.execute("UPDATE epcis_outbox SET body=? WHERE seq=?", (json.dumps(event), seq))


def edit_outbox_event_id(c):
    c.execute("DROP TRIGGER epcis_outbox_body_is_immutable")
    seq, body = c.execute("SELECT seq, body FROM epcis_outbox LIMIT 1").fetchone()
    event = json.loads(outbox.body_text(body))
    event["eventID"] = "ni:///sha-256;" + "ab" * 32 + "?ver=CBV2.0"
    c.execute("UPDATE epcis_outbox SET event_id=?, body=? WHERE seq=?", (event["eventID"], json.dumps(event), seq))


def insert_forged_record(c):  # a rework the line never had, slipped in before the close and re-chained
    for t in ("audit_no_update", "audit_no_delete"):
        c.execute(f"DROP TRIGGER {t}")
    recs = c.execute("SELECT * FROM audit ORDER BY seq").fetchall()
    close_at = next(r[0] for r in recs if r[3] == "batch.close")
    c.execute("DELETE FROM audit WHERE seq >= ?", (close_at,))
    forged = (close_at, recs[close_at - 2][1], "ann", "rework.decommission", json.dumps({"target": "X", "reason": "r"}))
    c.execute("INSERT INTO audit VALUES (?,?,?,?,?,'',?)", (*forged, "x"))
    for r in recs[close_at - 1:]:
        c.execute("INSERT INTO audit VALUES (?,?,?,?,?,'',?)", (r[0] + 1, *r[1:5], f"x{r[0]}"))
    _rehash(c)


def append_forged_reopen(c):  # a "reopen" appended at the head, so the close seal no longer applies
    c.execute("DROP TRIGGER serial_transition")
    c.execute("DROP TRIGGER serial_log")
    seq, prev = c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    at, detail = "2026-01-01T00:00:00.000000+00:00", json.dumps({"batch_id": "B1", "reason": "r", "from": "closed"})
    c.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?)", (seq + 1, at, "ann", "batch.reopen", detail, prev,
                                                          audit._digest(prev, seq + 1, at, "ann", "batch.reopen", detail)))
    c.execute("UPDATE unit SET outcome='PASSED' WHERE outcome LIKE 'REJECTED%'")


# edit kind -> what verify's line must say
MATRIX = {
    "delete the last 2 audit records": (delete_last_records, "is missing, the log ends at record"),
    "edit a record, re-hash the chain": (edit_record_and_rehash, "has another hash (the chain was rewritten)"),
    "rejected unit forged PASSED, commissioned, cased": (forge_passed_commissioned_cased, "table unit_row differs"),
    "edit a unit outcome": (edit_unit_outcome, "table unit_row differs"),
    "edit a serial state": (edit_serial_state, "table serial differs"),
    "delete a serial_history row": (delete_serial_history_row, "table serial_history differs"),
    "edit a device_event body": (edit_device_event_body, "table device_event_v2 differs"),
    "delete an alarm": (delete_alarm, "table alarm_log differs"),
    "edit the batch's lot and expiry": (edit_batch_lot_expiry, "batch B1: table batch differs from its seal in record 3 (batch.create)"),
    "edit an outbox body": (edit_outbox_body, "table epcis_outbox differs"),
    "edit an outbox eventID": (edit_outbox_event_id, "table epcis_outbox differs"),
    "insert a forged audit record": (insert_forged_record, "has another hash (the chain was rewritten)"),
    "append a forged reopen, edit a unit": (append_forged_reopen, "the trail ends with its reopen"),
}


def _tampered(src, dst, edit):
    shutil.copy(src / "ledger.db", dst / "ledger.db")
    shutil.copy(src / "ledger.db.anchors", dst / "ledger.db.anchors")
    c = sqlite3.connect(dst / "ledger.db", isolation_level=None)  # raw sqlite3, not the project's code
    c.execute("BEGIN")
    edit(c)
    c.execute("COMMIT")
    c.close()
    return dst / "ledger.db"


def test_untouched_ledger_verifies(closed_ledger, capsys):
    assert cli_batch.audit_main(["verify", "--db", str(closed_ledger / "ledger.db")]) == 0
    out = capsys.readouterr().out
    assert "audit log intact" in out and "sealed tables match" in out


@pytest.mark.parametrize("kind", list(MATRIX))
def test_tampering_is_detected(closed_ledger, tmp_path, capsys, kind):
    edit, expected = MATRIX[kind]
    dbfile = _tampered(closed_ledger, tmp_path, edit)
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile)]) == 1, kind
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, (kind, err)


def test_outbox_eventids_recomputed_on_a_running_batch(tmp_path, capsys):
    """No seal yet (the batch runs): verify still recomputes every eventID from its body."""
    dbfile = tmp_path / "ledger.db"
    _run_line(dbfile, close=False)
    c = sqlite3.connect(dbfile, isolation_level=None)
    c.execute("DROP TRIGGER epcis_outbox_body_is_immutable")
    seq, body = c.execute("SELECT seq, body FROM epcis_outbox WHERE event_type='ObjectEvent' LIMIT 1").fetchone()
    event = json.loads(outbox.body_text(body))
    event["epcList"] = event["epcList"][:-1]
    assert eventhash.event_hash(event) != event["eventID"]
    c.execute("UPDATE epcis_outbox SET body=? WHERE seq=?", (json.dumps(event), seq))
    c.close()
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile)]) == 1
    assert capsys.readouterr().err.strip() == f"outbox: 1 event(s) whose eventID does not match their body, first at outbox seq {seq} (batch B1)"


@pytest.fixture(scope="module")
def running_ledger(tmp_path_factory):
    """A batch still running (no close seal): the logs so far are sealed by a checkpoint."""
    d = tmp_path_factory.mktemp("running")
    _run_line(d / "ledger.db", close=False)
    assert cli_batch.audit_main(["checkpoint", "--db", str(d / "ledger.db"), "--user", "qa"]) == 0
    return d


RUNNING = {
    "edit a device_event body": (edit_device_event_body, "table device_event_v2 differs from its seal"),
    "delete a serial_history row": (delete_serial_history_row, "table serial_history differs from its seal"),
    "delete an alarm": (delete_alarm, "table alarm_log differs from its seal"),
    "edit an outbox body": (edit_outbox_body, "table epcis_outbox differs from its seal"),
    "edit an outbox eventID": (edit_outbox_event_id, "table epcis_outbox differs from its seal"),
    "delete the last 2 audit records": (delete_last_records, "is missing, the log ends at record"),
}


@pytest.mark.parametrize("kind", list(RUNNING))
def test_tampering_a_running_batch_is_detected_by_its_checkpoint(running_ledger, tmp_path, capsys, kind):
    edit, expected = RUNNING[kind]
    dbfile = _tampered(running_ledger, tmp_path, edit)
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile)]) == 1, kind
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, (kind, err)


def test_checkpoints_chain_over_new_rows_only(tmp_path, capsys):
    dbfile = tmp_path / "ledger.db"
    _run_line(dbfile, close=False)
    conn = db.connect(str(dbfile))
    audit.checkpoint(conn, "qa")
    ledger = Ledger(conn, "B1")
    line = Line(ledger)
    line.event_seq = conn.execute("SELECT max(event_seq) FROM device_event").fetchone()[0]
    line.unit(7)  # the line runs on
    audit.checkpoint(conn, "qa")
    parts = [json.loads(d)["parts"]["log:device_event2"] for (d,) in conn.execute(
        "SELECT detail FROM audit WHERE action='audit.checkpoint' ORDER BY seq")]
    assert parts[1]["rows"] == parts[0]["rows"] + 4 and parts[1]["upto"] > parts[0]["upto"]
    assert audit.verify(conn)[0]
    first = conn.execute("SELECT seq FROM audit WHERE action='audit.checkpoint' ORDER BY seq").fetchone()[0]
    conn.close()
    c = sqlite3.connect(dbfile, isolation_level=None)
    c.execute(f"DELETE FROM device_event WHERE unit_seq = 0 AND msg = {devevents.MSG['UNIT_DETECTED']}")  # before the first
    c.close()
    conn = db.connect(str(dbfile))
    ok, _, message = audit.verify(conn)
    conn.close()
    assert not ok and message.startswith(f"checkpoint record {first}: table device_event_v2 differs from its seal")


def test_reopen_lifts_the_seal_until_the_next_close(closed_ledger, tmp_path, capsys):
    """An audited reopen, rework and close again verify; the new close seals the reworked batch."""
    shutil.copy(closed_ledger / "ledger.db", tmp_path / "ledger.db")
    shutil.copy(closed_ledger / "ledger.db.anchors", tmp_path / "ledger.db.anchors")
    dbfile = str(tmp_path / "ledger.db")
    c = sqlite3.connect(dbfile)
    serial = c.execute("SELECT serial FROM packed LIMIT 1").fetchone()[0]
    (pallet,) = c.execute("SELECT sscc FROM container WHERE level='pallet'").fetchone()
    c.close()
    assert cli_batch.main(["reopen", "B1", "--reason", "damaged pallet", "--db", dbfile, "--user", "qa"]) == 0
    assert cli_batch.rework_main(["decommission", "destroyed", "--sscc", pallet, "--reason", "damaged",
                                  "--db", dbfile, "--user", "qa"]) == 0
    assert cli_batch.main(["close", "B1", "--db", dbfile, "--user", "qa"]) == 0
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", dbfile]) == 0
    c = sqlite3.connect(dbfile)
    c.execute("DROP TRIGGER serial_transition")
    c.execute("UPDATE serial SET state='commissioned' WHERE serial=?", (serial,))  # undo the destruction
    c.commit()
    (last_close,) = c.execute("SELECT max(seq) FROM audit WHERE action='batch.close'").fetchone()
    c.close()
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", dbfile]) == 1
    assert f"table serial differs from its seal in record {last_close} (batch.close)" in capsys.readouterr().err


def test_abort_seals_the_batch(tmp_path, capsys):
    dbfile = tmp_path / "ledger.db"
    _run_line(dbfile, close=False)
    assert cli_batch.main(["abort", "B1", "--reason", "line fault", "--db", str(dbfile), "--user", "qa"]) == 0
    c = sqlite3.connect(dbfile)
    c.execute("UPDATE unit SET outcome='PASSED' WHERE outcome LIKE 'REJECTED%'")
    c.commit()
    c.close()
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile)]) == 1
    assert "table unit_row differs from its seal" in capsys.readouterr().err


def append_forged_record(c):  # a self-consistent record at the head: the chain holds, no seal is touched
    seq, prev = c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    at, detail = "2026-01-01T00:00:00.000000+00:00", json.dumps({"target": "X", "reason": "r"})
    c.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?)", (seq + 1, at, "ann", "rework.remove", detail, prev,
                                                          audit._digest(prev, seq + 1, at, "ann", "rework.remove", detail)))


def test_a_forged_record_at_the_head_has_no_anchor(closed_ledger, tmp_path, capsys):
    """Only an anchor can vouch for the newest records: `--strict` fails on any without one (every
    batch / rework command anchors its record after the commit). Undetectable without it."""
    dbfile = _tampered(closed_ledger, tmp_path, append_forged_record)
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile)]) == 0
    assert "1 record(s) after the newest anchor" in capsys.readouterr().out
    assert cli_batch.audit_main(["verify", "--strict", "--db", str(dbfile)]) == 1
    assert capsys.readouterr().err == "record 6: no anchor vouches for it (appended after the newest anchor)\n"
    assert cli_batch.audit_main(["verify", "--strict", "--db", str(closed_ledger / "ledger.db")]) == 0


def _forged_then_aborted(tmp_path, checkpoint, *extra):
    """The issue's forgery on a RUNNING batch (a rejected pack made PASSED, commissioned, cased),
    then the batch ended through the project: its abort seal now covers the forged rows."""
    dbfile = tmp_path / "ledger.db"
    _run_line(dbfile, close=False)
    if checkpoint:
        assert cli_batch.audit_main(["checkpoint", "--db", str(dbfile), "--user", "qa"]) == 0
    c = sqlite3.connect(dbfile, isolation_level=None)
    c.execute("BEGIN")
    gtin, serial = _rejected(c)
    forge_passed_commissioned_cased(c)
    for edit in extra:
        edit(c, gtin, serial)
    c.execute("COMMIT")
    c.close()
    assert cli_batch.main(["abort", "B1", "--reason", "line fault", "--db", str(dbfile), "--user", "qa"]) == 0
    return dbfile, serial


def _history_says_commissioned(c, gtin, serial):  # the forger also writes the step a trigger would have
    c.execute("INSERT INTO serial_history (serial_id, batch_ref, state, at) SELECT serial_id, 1, ?, 0 FROM serial"
              " WHERE gtin=? AND serial=?", (db.STATE_CODE["commissioned"], gtin, serial))


def _history_rewritten(c, gtin, serial):  # ... or rewrites the history to a legal one
    c.execute("DROP TRIGGER serial_history_no_update")
    c.execute("UPDATE serial_history SET state=? WHERE serial_id=(SELECT serial_id FROM serial WHERE gtin=? AND serial=?)"
              " AND state=?", (db.STATE_CODE["commissioned"], gtin, serial, db.STATE_CODE["rejected"]))


@pytest.mark.parametrize("checkpoint, extra, expected", [
    (True, (), "state commissioned, but its history ends rejected"),
    (False, (), "state commissioned, but its history ends rejected"),
    (False, (_history_says_commissioned,), "rejected -> commissioned, a change the ledger never makes"),
    (True, (_history_rewritten,), "table serial_history differs from its seal"),  # the checkpoint holds it
    (False, (_history_rewritten,), "is PASSED, but neither its device nor a unit.resolve record says so"),
], ids=["checkpointed", "no checkpoint", "history step added", "history rewritten, checkpointed",
        "history rewritten, no checkpoint"])
def test_a_unit_forged_good_while_its_batch_runs_is_caught_after_the_seal(tmp_path, capsys, checkpoint, extra,
                                                                          expected):
    """verify recomputes what the ledger derives from its logs: a serial's state from its history,
    a PASSED unit from its device's UNIT_OUTCOME. (Not caught: the device event rewritten too, after
    the newest checkpoint — nothing outside the file has seen it.)"""
    dbfile, serial = _forged_then_aborted(tmp_path, checkpoint, *extra)
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
