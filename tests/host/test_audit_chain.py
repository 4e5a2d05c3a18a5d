"""The logs' chain (host/audit.py): a batch close continues the last checkpoint over the rows added
since instead of re-hashing the batch's log rows, and `verify` still catches an edit of a log row
wherever it is on the chain; close seals made before still verify; the running agent's cadence."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from serialine.host import audit, cli_batch, db, masterdata, serials
from serialine.host.console import alarms
from serialine.host.db import transaction
from serialine.host.ledger import Ledger

from hostkit import GTIN, Line, cli_line

SETUP = [["product", GTIN, "Aspirin 100 mg", "--market", "EU_FMD", "--prefix-len", "7"],
         ["serials", GTIN, "--generate", "300"],
         ["create", "B1", GTIN, "L1", "2030-01-31", "--planned", "12", "--case-size", "3", "--pallet-size", "2"],
         ["start", "B1"]]
# what batch.close sealed before it continued the logs' chain: the batch's rows of each log too
OLD_CLOSED = ("product", "product_master", "batch", "batch_site", "unit", "serial", "serial_history", "device_event",
              "coder_job", "container", "packed", "epcis_outbox", "alarm_log")


def _log(table: str) -> str:
    """The part the chain seals `table` by now (a log that changed form starts a new part)."""
    return next(p for p in audit._LOGS if p not in audit._FROZEN and audit._PARTS[p][0] == table)


def _line(dbfile):
    line = cli_line(dbfile, SETUP, 14)
    return line.ledger.conn, line


def _close(dbfile) -> tuple[int, dict]:
    assert cli_batch.main(["close", "B1", "--db", str(dbfile), "--user", "qa"]) == 0
    c = sqlite3.connect(dbfile)
    seq, detail = c.execute("SELECT seq, detail FROM audit WHERE action='batch.close' ORDER BY seq DESC").fetchone()
    c.close()
    return seq, json.loads(detail)["seal"]


def _verify(dbfile) -> tuple[bool, str]:
    conn = db.connect(str(dbfile))
    ok, _, message = audit.verify(conn)
    conn.close()
    return ok, message


@pytest.fixture
def checkpointed_then_closed(tmp_path):
    """Six units, a checkpoint, six more units, the close: (ledger, checkpoint seq, close seq, seal)."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    for u in range(6):
        line.unit(u)
    audit.checkpoint(conn, "qa")
    (ck,) = conn.execute("SELECT max(seq) FROM audit WHERE action='audit.checkpoint'").fetchone()
    for u in range(6, 12):
        line.unit(u)
    conn.close()
    close, sealed = _close(dbfile)
    return dbfile, ck, close, sealed


def test_a_close_continues_the_last_checkpoint(checkpointed_then_closed):
    dbfile, ck, close, sealed = checkpointed_then_closed
    c = sqlite3.connect(dbfile)
    (parts,) = c.execute("SELECT detail FROM audit WHERE seq=?", (ck,)).fetchone()
    before = json.loads(parts)["parts"][_log("device_event_v2")]
    counts = {p: c.execute(f"SELECT count(*) FROM {audit._PARTS[p][0]}").fetchone()[0] for p in sealed if p in audit._LOGS}
    c.close()
    assert "device_event" not in sealed and "epcis_outbox" not in sealed  # the batch's log rows are not re-hashed
    assert sealed[_log("device_event_v2")]["after"] == ck
    assert sealed[_log("device_event_v2")]["rows"] == before["rows"] + 6 * 4
    assert counts and all(sealed[p]["rows"] == n for p, n in counts.items())  # every row the close wrote is in its seal
    assert _verify(dbfile)[0]


def _edit_outcome(dbfile, unit_seq):
    """The unit's last device event (its outcome) deleted, behind the project's back."""
    c = sqlite3.connect(dbfile, isolation_level=None)
    assert c.execute("DELETE FROM device_event WHERE unit_seq=? AND event_seq ="
                     " (SELECT max(event_seq) FROM device_event WHERE unit_seq=?)", (unit_seq, unit_seq)).rowcount == 1
    c.close()


def test_an_edit_before_the_checkpoint_is_caught_by_it(checkpointed_then_closed):
    dbfile, ck, close, _ = checkpointed_then_closed
    _edit_outcome(dbfile, 2)
    ok, message = _verify(dbfile)
    assert not ok and message.startswith(f"checkpoint record {ck}: table device_event_v2 differs from its seal"), message


def test_an_edit_after_the_checkpoint_is_caught_by_the_close(checkpointed_then_closed):
    dbfile, ck, close, _ = checkpointed_then_closed
    _edit_outcome(dbfile, 9)
    ok, message = _verify(dbfile)
    assert not ok and message.startswith(f"batch B1: record {close} (batch.close): table device_event_v2 differs from"
                                          f" its seal since record {ck}"), message


def test_the_next_links_continue_the_close(checkpointed_then_closed):
    """A checkpoint after the close, and a close after a reopen, each continue the link before."""
    dbfile, ck, close, _ = checkpointed_then_closed
    conn = db.connect(str(dbfile))
    audit.checkpoint(conn, "qa")
    (ck2, detail) = conn.execute("SELECT seq, detail FROM audit WHERE action='audit.checkpoint' ORDER BY seq DESC").fetchone()
    conn.close()
    assert json.loads(detail)["parts"][_log("device_event_v2")]["after"] == close
    assert cli_batch.main(["reopen", "B1", "--reason", "recount the cases", "--db", str(dbfile), "--user", "qa"]) == 0
    close2, sealed = _close(dbfile)
    assert sealed[_log("epcis_outbox")]["after"] == ck2
    assert _verify(dbfile)[0]
    _edit_outcome(dbfile, 9)  # sealed by the first close: still caught after the second
    ok, message = _verify(dbfile)
    assert not ok and message.startswith(f"batch B1: record {close} (batch.close): table device_event_v2 differs"), message


def test_a_close_sealed_the_old_way_still_verifies(tmp_path, monkeypatch):
    """A close made before the chain (the batch's rows of each log in its seal) verifies as it did,
    and an edit of a log row it sealed is still caught by it."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    for u in range(12):
        line.unit(u)
    conn.close()
    monkeypatch.setitem(audit.SEALS, "batch.close", ("batch_id", OLD_CLOSED))
    close, sealed = _close(dbfile)
    monkeypatch.undo()
    assert "device_event" in sealed and not any(p in audit._LOGS for p in sealed)
    assert _verify(dbfile)[0]
    conn = db.connect(str(dbfile))
    audit.checkpoint(conn, "qa")  # a link after the old close: the chain starts at the first row
    conn.close()
    assert _verify(dbfile)[0]
    _edit_outcome(dbfile, 9)
    ok, message = _verify(dbfile)
    assert not ok and message.startswith("batch B1: table device_event") and f"from its seal in record {close}" in message


def test_the_agents_cadence(tmp_path):
    """Checkpointer: a checkpoint once as many events as `units` units (4 each) are stored, or the
    time is up, or the agent stops (`flush`: done when it returns); none without new events."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    every = audit.Checkpointer(conn, "serialine-agent", units=2, seconds=float("inf"))
    line.unit(0)
    assert not every.note(4)
    line.unit(1)
    assert every.note(4) and every.wait(60) and every.made == 1  # (on its own thread)
    assert not every.note(0)
    (n,) = conn.execute("SELECT count(*) FROM audit WHERE action='audit.checkpoint'").fetchone()
    late = audit.Checkpointer(conn, "serialine-agent", units=1000, seconds=0.0)
    assert not late.note(0) and late.note(1) and late.wait(60)  # time is up, and there is something new
    stops = audit.Checkpointer(conn, "serialine-agent", units=1000, seconds=float("inf"))
    assert not stops.flush()
    line.unit(2)
    assert not stops.note(4) and stops.flush() and not stops.flush()  # the agent stops: what it stored is sealed
    (m,) = conn.execute("SELECT count(*) FROM audit WHERE action='audit.checkpoint'").fetchone()
    conn.close()
    assert (n, m) == (1, 3)
    assert _verify(dbfile)[0]


def test_an_in_memory_ledger_checkpoints_in_note():
    """No second connection sees an in-memory ledger: its checkpoint runs in `note` itself."""
    conn = db.connect(":memory:")
    masterdata.add_product(conn, GTIN, "Aspirin 100 mg", "EU_FMD", 7)
    serials.generate(conn, GTIN, 30)
    masterdata.create_batch(conn, "B1", GTIN, "L1", "2030-01-31", 12, 3, 2)
    masterdata.start_batch(conn, "B1")
    ledger = Ledger(conn, "B1")
    with transaction(conn):
        ledger.queue_codes(2)
    Line(ledger).unit(0)
    every = audit.Checkpointer(conn, "serialine-agent", units=1, seconds=float("inf"))
    assert every.path == ""
    assert every.note(4) and every.made == 1 and every._job is None
    assert audit.verify(conn)[0]


CELLS = st.one_of(st.none(), st.text(alphabet=st.characters(max_codepoint=0x2030), max_size=8),
                  st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                  st.binary(max_size=4))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(CELLS, CELLS), min_size=1, max_size=12))
def test_a_views_untyped_column_is_written_by_sqlite_as_by_python(rows):
    """A view's column without a declared type (coder_job.code: BLOB affinity) is written by SQLite
    when it holds text, integers or NULL, and gives the Python lines' digest; else Python writes it."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, a, b TEXT)")
    conn.execute("CREATE VIEW v AS SELECT k, coalesce(a, b) AS c FROM t")
    conn.executemany("INSERT INTO t (a, b) VALUES (?, ?)", rows)
    stored = conn.execute("SELECT k, c FROM v ORDER BY k").fetchall()
    want = hashlib.sha256(("x" + audit._rows_json(stored)).encode()).hexdigest()
    got = audit._sql_digest(conn, "v", ["k", "c"], " WHERE (:key = :key)", "k", {"key": ""}, "x")
    assert got is None or got == {"rows": len(rows), "sha256": want}
    if not any(isinstance(v, (bytes, float)) for _, v in stored):
        assert got is not None


def test_a_busy_ledger_delays_the_agents_checkpoint(tmp_path):
    """Another writer holds the ledger: the checkpoint waits for it on its own thread (the loop does
    not), and is made once the writer is done."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    line.unit(0)
    other = sqlite3.connect(dbfile, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    every = audit.Checkpointer(conn, "serialine-agent", units=1, seconds=float("inf"))
    assert every.note(4) and not every.wait(0.2) and every.made == 0  # waiting for the lock, off the loop
    other.execute("ROLLBACK")
    other.close()
    assert every.wait(60) and every.made == 1 and every.failed == 0
    assert not every.flush()  # e.g. as the agent stops: nothing left
    conn.close()
    assert _verify(dbfile)[0]


def test_a_failed_checkpoint_is_said_and_tried_again(tmp_path, caplog):
    """The ledger stays locked past the checkpoint's busy timeout: one line in the log, the events
    stay pending, and the next attempt (here the agent stopping) seals them; the alarm the console
    lists (FAILED, with its cause, kept while the ledger is locked) and its clearing (SEALED)."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    line.unit(0)
    other = sqlite3.connect(dbfile, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    every = audit.Checkpointer(conn, "serialine-agent", units=1, seconds=float("inf"), busy_s=0.05)
    with caplog.at_level("WARNING", logger="serialine.host.audit"):
        assert every.note(4) and every.wait(60)
    assert every.made == 0 and every.failed == 1 and every.pending == 4 and "locked" in every.error
    said = [r.getMessage() for r in caplog.records if r.name == "serialine.host.audit"]
    assert len(said) == 1 and "\n" not in said[0] and "4 device events wait" in said[0], said
    assert not every.note(0)  # not before RETRY_S
    other.execute("ROLLBACK")
    other.close()
    assert every.flush() and every.made == 1 and every.pending == 0
    said = conn.execute("SELECT source, alarm, detail FROM alarm_log ORDER BY alarm_id").fetchall()
    assert [(s, a) for s, a, _ in said] == [("audit", every.FAILED), ("audit", every.SEALED)], said
    assert "locked" in said[0][2] and "\n" not in said[0][2] and "1 failed attempt" in said[1][2]
    assert all(alarms.explain(kind) != alarms.UNKNOWN for kind in (every.FAILED, every.SEALED))
    conn.close()
    assert _verify(dbfile)[0]


def test_a_run_of_failed_checkpoints_is_one_alarm_cleared_by_the_next_that_seals(tmp_path, monkeypatch):
    """A link appended by another writer during each of the checkpoint's tries (a checkpoint by
    hand, every time it hashes): a failure with the ledger free, its alarm in alarm_log at once;
    the next failure adds none; the next success clears it."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    line.unit(0)
    real = audit._continue_logs

    def meanwhile(*args, **kwargs):  # (on the checkpoint's thread: a connection of its own)
        hand = sqlite3.connect(dbfile, isolation_level=None)
        with transaction(hand):
            audit.append(hand, "qa", audit.CHECKPOINT, {"parts": real(hand)})
        hand.close()
        return real(*args, **kwargs)
    every = audit.Checkpointer(conn, "serialine-agent", units=1, seconds=float("inf"))
    monkeypatch.setattr(audit, "_continue_logs", meanwhile)
    for _ in range(2):
        every.retry_at = 0.0  # (not RETRY_S later)
        assert every.note(4 - 4 * _) and every.wait(60)
    monkeypatch.undo()
    kinds = lambda: [a for (a,) in conn.execute("SELECT alarm FROM alarm_log WHERE source = 'audit' ORDER BY alarm_id")]
    assert every.failed == 2 and "another writer" in every.error and kinds() == [every.FAILED]
    assert every.flush() and kinds() == [every.FAILED, every.SEALED] and every.failing == 0
    conn.close()
    assert _verify(dbfile)[0]


@pytest.mark.parametrize("edit, table", [
    ("UPDATE coder_job_row SET state='queued' WHERE job_id = (SELECT min(job_id) FROM coder_job_row)", "coder_job_row"),
    ("UPDATE coder_job_row SET code='X' WHERE job_id = (SELECT min(job_id) FROM coder_job_row)", "coder_job_row"),
    ("UPDATE coder_template SET tail='X'", "coder_template"),  # every job's code reads otherwise
], ids=["job state", "job code", "template"])
def test_a_closed_batchs_coder_jobs_are_sealed_as_stored(checkpointed_then_closed, edit, table):
    dbfile, _, close, sealed = checkpointed_then_closed
    assert "coder_job_row2" in sealed and "coder_template" in sealed
    c = sqlite3.connect(dbfile, isolation_level=None)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name=?", (table,)).fetchall():
        c.execute(f"DROP TRIGGER {name}")
    assert c.execute(edit).rowcount == 1
    c.close()
    ok, message = _verify(dbfile)
    assert not ok and message.startswith(f"batch B1: table {table} differs from its seal in record {close}"), message


def _links_of(dbfile, part):
    c = sqlite3.connect(dbfile)
    out = [(seq, json.loads(d)["parts"][part]) for seq, d in
           c.execute("SELECT seq, detail FROM audit WHERE action='audit.checkpoint' ORDER BY seq")]
    c.close()
    return out


def _edit_event(dbfile, boot_id, event_seq):
    c = sqlite3.connect(dbfile, isolation_level=None)
    assert c.execute("UPDATE device_event SET unit_seq = unit_seq + 1000 WHERE event_seq = ? AND boot_ref ="
                     " (SELECT ref FROM device_boot_ref WHERE boot_id = ?)", (event_seq, boot_id)).rowcount == 1
    c.close()


def test_a_late_event_that_fills_a_gap_is_sealed_by_the_next_link(tmp_path):
    """device_event's tail is read by key (the ranges the link before left open, `boots`), not by a
    scan of received_at: an event stored after a link, below the highest seq stored then (a gap),
    is in the next link, as a boot's new events are; a boot without new rows is passed over; an
    edit of a row anywhere on the chain is caught by the link that sealed it."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    part = _log("device_event_v2")
    line.unit(0)  # seqs 1..4 of boot 7
    line.event_seq += 1  # 5 is late
    line.unit(1)  # 6..9
    other = Line(line.ledger, boot_id=8)
    other.store([other.event("ALARM", alarm=1, active=1, unit_seq=0, t_us=0)])  # boot 8: seq 1
    audit.checkpoint(conn, "qa")
    first = _links_of(dbfile, part)[-1][1]
    ref7, ref8 = (str(conn.execute("SELECT ref FROM device_boot_ref WHERE boot_id=?", (b,)).fetchone()[0]) for b in (7, 8))
    assert first["rows"] == 9 and first["boots"] == {ref7: [10, [0, 1, 5, 6]], ref8: [2, [0, 1]]}
    line.store([("ALARM", dict(alarm=1, active=1, unit_seq=0, t_us=0, event_seq=5))])  # the late one
    line.unit(2)  # 10..13
    audit.checkpoint(conn, "qa")
    second = _links_of(dbfile, part)[-1][1]
    assert second["rows"] == 9 + 5 and second["boots_changed"] == {ref7: [14, [0, 1]]}  # (boot 8's: as they were)
    (n,) = conn.execute("SELECT count(*) FROM device_event").fetchone()
    assert second["rows"] == n  # every row, each in one link
    conn.close()
    assert _verify(dbfile)[0]
    (ck1, _), (ck2, _) = _links_of(dbfile, part)[-2:]
    for boot, seq, link in ((7, 5, ck2), (7, 11, ck2), (7, 6, ck1), (8, 1, ck1)):
        _edit_event(dbfile, boot, seq)
        ok, message = _verify(dbfile)
        assert not ok and message.startswith(f"checkpoint record {link}: table device_event_v2 differs"), (boot, seq, message)
        _edit_event_back(dbfile, boot, seq)
        assert _verify(dbfile)[0]


def _edit_event_back(dbfile, boot_id, event_seq):
    c = sqlite3.connect(dbfile, isolation_level=None)
    c.execute("UPDATE device_event SET unit_seq = unit_seq - 1000 WHERE event_seq = ? AND boot_ref ="
              " (SELECT ref FROM device_boot_ref WHERE boot_id = ?)", (event_seq, boot_id))
    c.close()


def test_links_made_before_the_key_tail_still_verify(tmp_path, monkeypatch):
    """A link made by a scan of received_at (no `boots`: before the key tail) verifies as it did,
    the next link continues it over the same rows, and an edit of a row it sealed is caught by it."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    part = _log("device_event_v2")
    for u in range(3):
        line.unit(u)
    monkeypatch.setattr(audit, "_KEY_TAILS", {})  # the link as made before
    audit.checkpoint(conn, "qa")
    monkeypatch.undo()
    old = _links_of(dbfile, part)[-1]
    assert "boots" not in old[1] and old[1]["rows"] == 12
    for u in range(3, 6):
        line.unit(u)
    audit.checkpoint(conn, "qa")
    new = _links_of(dbfile, part)[-1][1]
    (ref,) = conn.execute("SELECT ref FROM device_boot_ref WHERE boot_id = 7").fetchone()
    # the rows the old link sealed count as sealed: the next link reads on from seq 25
    assert new["after"] == old[0] and new["rows"] == 24 and new["boots"] == {str(ref): [25, [0, 1]]}
    conn.close()
    close, sealed = _close(dbfile)
    assert sealed[part]["after"] == _links_of(dbfile, part)[-1][0]
    assert _verify(dbfile)[0]
    _edit_event(dbfile, 7, 2)
    ok, message = _verify(dbfile)
    assert not ok and message.startswith(f"checkpoint record {old[0]}: table device_event_v2 differs"), message


def test_a_link_made_while_the_agents_checkpoint_hashes_makes_it_start_again(tmp_path, monkeypatch):
    """checkpoint_aside hashes in a snapshot, off the write lock: a link another writer appends in
    that time (here `audit checkpoint` by hand) is continued, not forked from."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    line.unit(0)
    real, calls = audit._continue_logs, []

    def meanwhile(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            line.unit(1)
            audit.checkpoint(conn, "qa")
        return real(*args, **kwargs)
    monkeypatch.setattr(audit, "_continue_logs", meanwhile)
    audit.checkpoint_aside(str(dbfile), "serialine-agent")
    monkeypatch.undo()
    part = _log("device_event_v2")
    (qa, by_hand), (_, aside) = _links_of(dbfile, part)
    assert len(calls) == 3 and aside["after"] == qa and aside["rows"] == by_hand["rows"] == 8
    conn.close()
    assert _verify(dbfile)[0]


def test_an_alarm_stamped_before_the_last_link_is_still_sealed_by_the_next(tmp_path):
    """Alarms (and outbox bodies) are chained by row id: a row whose time lies before the last
    link's bound (a clock stepped back) is still the next link's, and an edit of it is caught; by
    time it fell between the links and no link ever sealed it."""
    dbfile = tmp_path / "l.db"
    conn, _ = _line(dbfile)
    audit.checkpoint(conn, "qa")
    conn.execute("INSERT INTO alarm_log (at, source, alarm, detail) VALUES (1.0, 'agent', 'X', 'stamped in 1970')")
    audit.checkpoint(conn, "qa")
    (detail,) = conn.execute("SELECT detail FROM audit WHERE action = ? ORDER BY seq DESC", (audit.CHECKPOINT,)).fetchone()
    link = json.loads(detail)["parts"][_log("alarm_log")]
    assert link["rows"] == conn.execute("SELECT count(*) FROM alarm_log").fetchone()[0]
    conn.execute("UPDATE alarm_log SET detail = 'edited' WHERE at = 1.0")
    conn.close()
    ok, message = _verify(dbfile)
    assert not ok and "alarm_log" in message


def test_a_checkpoint_reads_back_only_to_the_last_link(tmp_path, monkeypatch):
    """However many links the trail holds, a checkpoint parses one record to continue them: the
    newest link (it carries every growing log; here every link names every boot's open keys); the
    chain still verifies link by link."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    monkeypatch.setattr(audit, "OPEN_KEYS_EVERY", 1)
    for u in range(4):
        line.unit(u)
        audit.checkpoint(conn, "qa")
    parsed = []
    real = audit._link_parts
    monkeypatch.setattr(audit, "_link_parts", lambda action, text: parsed.append(action) or real(action, text))
    line.unit(4)
    audit.checkpoint(conn, "qa")
    assert parsed == [audit.CHECKPOINT]
    parsed.clear()
    assert audit.verify(conn)[0] and parsed.count(audit.CHECKPOINT) >= 5  # verify reads every link
    conn.close()


def test_links_written_before_form_2_still_verify_and_the_next_write_blobs_as_hex(tmp_path, monkeypatch):
    """A link of the form before (FORM 1: a BLOB as Python's str, no "form") is continued by one
    in form 2 (an outbox body as its hex, by SQLite); both verify, and a body edited behind the
    project's back after the first is caught by the second."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    for u in range(6):
        line.unit(u)
    monkeypatch.setattr(audit, "FORM", 1)
    audit.checkpoint(conn, "qa")  # as the release before wrote it
    monkeypatch.undo()
    (first,) = conn.execute("SELECT max(seq) FROM epcis_outbox").fetchone()
    for u in range(6, 12):
        line.unit(u)
    audit.checkpoint(conn, "qa")
    links = _links_of(dbfile, "log:epcis_outbox2")
    assert [s.get("form") for _, s in links] == [None, audit.FORM] and links[1][1]["rows"] > links[0][1]["rows"]
    assert audit.verify(conn)[0]
    conn.close()
    c = sqlite3.connect(dbfile, isolation_level=None)
    c.execute("DROP TRIGGER epcis_outbox_body_is_immutable")
    c.execute("UPDATE epcis_outbox SET body = CAST(body || 'x' AS BLOB) WHERE seq = (SELECT max(seq) FROM epcis_outbox)")
    assert c.execute("SELECT max(seq) FROM epcis_outbox").fetchone()[0] > first
    c.close()
    ok, message = _verify(dbfile)
    assert not ok and message.startswith(f"checkpoint record {links[1][0]}: table epcis_outbox differs"), message


def test_a_link_names_the_boots_it_changed_and_every_few_links_all(tmp_path, monkeypatch):
    """A key-tailed log's link names only the boots whose open keys it changed (a boot that ended is
    not written again), and every OPEN_KEYS_EVERY links all of them; a checkpoint reads back to the
    last link naming all; verify rebuilds every boot's open keys link by link, and an edited event
    is caught by the link that sealed it."""
    dbfile = tmp_path / "ledger.db"
    conn, line = _line(dbfile)
    monkeypatch.setattr(audit, "OPEN_KEYS_EVERY", 3)
    (part,) = (p for p in audit._KEY_TAILS if p not in audit._FROZEN)  # the device events' chain
    line.unit(0)
    audit.checkpoint(conn, "qa")
    later = Line(line.ledger, boot_id=line.boot_id + 1)  # the device restarted: the first boot ended
    for u in range(4):
        later.unit(u)
        audit.checkpoint(conn, "qa")
    seqs, links = zip(*_links_of(dbfile, part))
    assert ["boots" in s for s in links] == [True, False, False, True, False]
    (ended,) = links[0]["boots"]
    assert all(set(s["boots_changed"]) == set(links[1]["boots_changed"]) != {ended} for s in links[1:3] + links[4:])
    assert set(links[3]["boots"]) == {ended, *links[1]["boots_changed"]}
    parsed = []
    real = audit._link_parts
    monkeypatch.setattr(audit, "_link_parts", lambda action, text: parsed.append(action) or real(action, text))
    later.unit(4)
    audit.checkpoint(conn, "qa")
    assert parsed == [audit.CHECKPOINT] * 2  # the newest link, and the one before naming every boot
    monkeypatch.undo()
    assert audit.verify(conn)[0]
    conn.close()
    _edit_event(dbfile, line.boot_id + 1, 6)  # the second unit's: sealed by the third link
    ok, message = _verify(dbfile)
    assert not ok and message.startswith(f"checkpoint record {seqs[2]}: table device_event"), message
