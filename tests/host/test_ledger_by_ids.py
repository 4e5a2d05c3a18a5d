"""A flush changes its serials' states and binds its jobs in one statement a rule over the poll's
serial_ids (not one statement a row); each change still logged once, and a refused one leaves the
poll's transaction as it was."""

import sqlite3

import pytest

from serialine.host import db
from serialine.host.db import transaction

from hostkit import Line


def _store(line, events):
    """One poll's events in one store_batch, as the agent stores a poll."""
    L = line.ledger
    with transaction(L.conn):
        L.store_batch(line.device_id, line.boot_id, events)
        L.flush_events()


def _poll(line, units, outcome=1):
    """A poll of every unit's detected/printed/inspected events, then a poll of their outcomes."""
    events = []
    for u in units:
        events += [line.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0),
                   line.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0),
                   line.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)]
    _store(line, events)
    _store(line, [line.event("UNIT_OUTCOME", unit_seq=u, outcome=outcome, reason=0, gate_error=0, pos=0, t_us=0)
                  for u in units])


def test_a_polls_state_changes_are_one_statement_a_rule(ledger):
    c = ledger.conn
    with transaction(c):
        ledger.queue_codes(30)
    line = Line(ledger)
    runs = []
    c.set_trace_callback(runs.append)  # a statement's text with its values (executemany: each row's)
    _poll(line, range(12))
    c.set_trace_callback(None)
    for sql in ("UPDATE serial SET state='printed'", "UPDATE serial SET state='commissioned'",
                "UPDATE coder_job_row SET state='bound'"):
        assert len({s for s in runs if s.startswith(sql)}) == 1, sql  # (its triggers say its text again)
    ids = [i for (i,) in c.execute("SELECT serial_id FROM unit_row WHERE batch_id='B1' ORDER BY unit_seq")]
    assert len(ids) == 12
    assert c.execute("SELECT count(*) FROM coder_job_row WHERE state='bound'").fetchone() == (12,)
    for i in ids:  # each change once, in the unit's order of life
        states = [s for (s,) in c.execute("SELECT state FROM serial_history WHERE serial_id=? ORDER BY seq", (i,))]
        assert states == [1, 2, 3], i  # allocated, printed, commissioned (db.SERIAL_STATES)
    _poll(line, range(12, 15), outcome=2)
    assert c.execute("SELECT count(*) FROM serial WHERE batch_id='B1' AND state='rejected'").fetchone() == (3,)


def test_a_refused_change_leaves_the_poll_as_it_was(ledger):
    c = ledger.conn
    with transaction(c):
        ledger.queue_codes(10)
    line = Line(ledger)
    _poll(line, range(2))
    # one pack of the next poll already decommissioned behind the ledger's back: its print is refused
    (third,) = c.execute("SELECT serial_id FROM coder_job_row WHERE state='queued' ORDER BY job_id LIMIT 1 OFFSET 1"
                         ).fetchone()
    c.execute("DROP TRIGGER serial_transition")
    c.execute("UPDATE serial SET state='decommissioned' WHERE serial_id=?", (third,))
    c.execute(db.SERIAL_TRANSITION)
    before = c.execute("SELECT serial_id, state FROM serial WHERE batch_id='B1' ORDER BY serial_id").fetchall()
    with pytest.raises(sqlite3.IntegrityError, match="illegal serial state transition"):
        _store(line, [line.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0) for u in (2, 3, 4)]
                   + [line.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0) for u in (2, 3, 4)])
    assert c.execute("SELECT serial_id, state FROM serial WHERE batch_id='B1' ORDER BY serial_id").fetchall() == before
    assert c.execute("SELECT count(*) FROM unit_row WHERE unit_seq >= 2").fetchone() == (0,)


def test_a_top_up_is_one_statement_its_jobs_in_order(ledger):
    c = ledger.conn
    runs = []
    c.set_trace_callback(runs.append)
    with transaction(c):
        jobs = ledger.queue_codes(7)
    c.set_trace_callback(None)
    assert len({s for s in runs if s.startswith("INSERT INTO coder_job_row")}) == 1
    assert c.execute("SELECT serial, code FROM coder_job WHERE batch_id='B1' ORDER BY job_id").fetchall() == jobs
    assert c.execute("SELECT count(*) FROM coder_job_row WHERE code IS NOT NULL").fetchone() == (0,)  # the template's
