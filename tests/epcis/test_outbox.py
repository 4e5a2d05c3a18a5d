"""Outbox: written in the caller's transaction, idempotent by eventID, bad input changes nothing."""

from __future__ import annotations

import sqlite3

import pytest

from serialine.host.epcis import outbox

from .conftest import all_kinds


@pytest.fixture
def conn(tmp_path):
    conn = sqlite3.connect(tmp_path / "ledger.db")
    outbox.ensure_schema(conn)
    outbox.ensure_schema(conn)  # idempotent
    return conn


def test_rolled_back_transaction_leaves_no_event(conn, ctx):
    events = all_kinds(ctx)
    with pytest.raises(RuntimeError):
        with conn:
            for event in events:
                outbox.enqueue(conn, "B1", event)
            raise RuntimeError("ledger change failed")
    assert outbox.counts(conn) == {"pending": 0, "delivered": 0}
    with conn:
        for event in events:
            outbox.enqueue(conn, "B1", event)
    assert outbox.batch_events(conn, "B1") == events


def test_enqueue_is_idempotent_on_event_id(conn, ctx):
    events = all_kinds(ctx)
    with conn:
        added = [outbox.enqueue(conn, "B1", e) for e in events + events]
    assert added == [True] * len(events) + [False] * len(events)
    assert outbox.counts(conn)["pending"] == len(events)
    with pytest.raises(ValueError, match="already in the outbox for batch"):
        outbox.enqueue(conn, "B2", events[0])


@pytest.mark.parametrize("batch,event", [
    ("", {"type": "ObjectEvent", "eventID": "ni:///sha-256;" + "a" * 64 + "?ver=CBV2.0"}),
    ("B1", {"type": "ObjectEvent"}),
    ("B1", {"type": "ObjectEvent", "eventID": "urn:uuid:1234"}),
    ("B1", "not an event"),
])
def test_bad_input_is_refused_and_changes_nothing(conn, batch, event):
    with pytest.raises(ValueError):
        outbox.enqueue(conn, batch, event)
    conn.commit()
    assert outbox.counts(conn) == {"pending": 0, "delivered": 0}


def test_database_keeps_delivered_events_final_and_immutable(conn, ctx):
    with conn:
        outbox.enqueue(conn, "B1", all_kinds(ctx)[0])
    outbox.mark_delivered(conn, "directory:/x", "B1", [1], 100.0)
    with pytest.raises(sqlite3.IntegrityError, match="cannot be undelivered"):
        with conn:
            conn.execute("UPDATE epcis_outbox SET delivered_at = NULL")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        with conn:
            conn.execute("UPDATE epcis_outbox SET body = '{}'")


def test_failure_holds_the_batch_until_due_and_retry_now_releases_it(conn, ctx):
    with conn:
        for event in all_kinds(ctx):
            outbox.enqueue(conn, "B1", event)
    outbox.record_failure(conn, "http://a", "B1", [1, 2], "HTTP 503: busy", next_try_at=5000.0)
    assert outbox.next_chunk(conn, "http://a", "B1", 10, now=4999.0) is None
    assert len(outbox.next_chunk(conn, "http://b", "B1", 10, now=4999.0)) == 7  # another target: not held
    assert outbox.pending_rows(conn)[0][4:] == (1, 5000.0, "HTTP 503: busy")
    assert outbox.retry_now(conn) == 1
    assert [seq for seq, _, _ in outbox.next_chunk(conn, "http://a", "B1", 3, now=0.0)] == [1, 2, 3]


def test_each_target_has_its_own_progress_and_a_resend_starts_it_over(conn, ctx):
    with conn:
        for event in all_kinds(ctx):
            outbox.enqueue(conn, "B1", event)
        outbox.enqueue(conn, "B2", all_kinds(ctx, batch="B2")[0])
    outbox.mark_delivered(conn, "http://a", "B1", [1, 2, 3, 4, 5, 6, 7], 10.0)
    outbox.mark_delivered(conn, "http://a", "B2", [8], 10.0)
    assert outbox.pending_batches(conn, "http://a") == []
    assert outbox.pending_batches(conn, "http://b") == ["B1", "B2"]  # a later receiver: whole story
    assert [s for s, _, _ in outbox.next_chunk(conn, "http://b", "B1", 100, now=0)] == [1, 2, 3, 4, 5, 6, 7]
    assert outbox.counts(conn) == {"pending": 0, "delivered": 8}
    assert outbox.counts(conn, "http://a") == {"pending": 0, "delivered": 8}
    assert outbox.counts(conn, "http://b") == {"pending": 8, "delivered": 0}
    with conn:
        assert outbox.resend(conn, "http://a", "B1") == 7
        assert outbox.resend(conn, "http://a", "nope") == 0
    assert outbox.pending_batches(conn, "http://a") == ["B1"]
    assert outbox.pending_by_target(conn) == [("http://a", "B1", 7, 0, 0.0, None)]
