"""The outbox's counts come from a tally its own triggers keep in the writer's transaction: right
through enqueue, rollback, delivery, resend, retry and archiving (delete), initialised once on an
outbox made before it, and read without scanning the history."""

from __future__ import annotations

import sqlite3

import pytest

from serialine.host.epcis import outbox
from serialine.host.epcis.forwarder import Forwarder
from serialine.host.epcis.sinks import from_config

from .conftest import all_kinds


def scanned(conn) -> dict:
    """What the counts must be, by reading every row."""
    pending, delivered = conn.execute(
        "SELECT COUNT(*) - COUNT(delivered_at), COUNT(delivered_at) FROM epcis_outbox").fetchone()
    return {"pending": pending, "delivered": delivered}


@pytest.fixture
def conn(tmp_path):
    c = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    outbox.ensure_schema(c)
    yield c
    c.close()


def kinds(ctx, batch):
    """all_kinds of another batch, less the pallet's packing (the same event in every batch)."""
    return [e for i, e in enumerate(all_kinds(ctx, batch=batch)) if i != 2]


def enqueue(conn, batch, events):
    conn.execute("BEGIN IMMEDIATE")
    for event in events:
        outbox.enqueue(conn, batch, event)
    conn.execute("COMMIT")


def test_counts_follow_enqueue_rollback_delivery_resend_and_archive(conn, ctx, tmp_path):
    b1, b2 = all_kinds(ctx, batch="B1"), kinds(ctx, "B2")
    enqueue(conn, "B1", b1)
    enqueue(conn, "B1", b1)  # the same events again: no-ops, not counted
    conn.execute("BEGIN IMMEDIATE")
    for event in b2:
        outbox.enqueue(conn, "B2", event)
    conn.execute("ROLLBACK")
    assert outbox.counts(conn) == scanned(conn) == {"pending": 7, "delivered": 0}
    enqueue(conn, "B2", b2)
    sink = from_config({"kind": "directory", "path": str(tmp_path / "to")})
    forwarder = Forwarder(conn, sink, doc_size=3)
    assert forwarder.run_once("B1") == 7
    # another target, a resend: the events were delivered already, the count stays
    other = Forwarder(conn, from_config({"kind": "directory", "path": str(tmp_path / "other")}), doc_size=5)
    assert outbox.counts(conn) == scanned(conn) == {"pending": 6, "delivered": 7}
    assert other.run_once() == 13
    assert outbox.counts(conn) == scanned(conn) == {"pending": 0, "delivered": 13}
    conn.execute("BEGIN IMMEDIATE")
    assert outbox.resend(conn, forwarder.target, "B2") == 6
    conn.execute("COMMIT")
    assert forwarder.run_once() == 6
    assert outbox.counts(conn) == scanned(conn) == {"pending": 0, "delivered": 13}
    assert outbox.counts(conn, forwarder.target) == {"pending": 0, "delivered": 13}
    enqueue(conn, "B3", kinds(ctx, "B3")[:2])
    seqs = [s for (s,) in conn.execute("SELECT seq FROM epcis_outbox WHERE batch_id = 'B3'")]
    outbox.record_failure(conn, forwarder.target, "B3", seqs, "HTTP 500", 1e12)
    outbox.retry_now(conn)
    assert outbox.counts(conn) == scanned(conn) == {"pending": 2, "delivered": 13}
    # archived (moved out of the ledger): what stays is counted
    conn.execute("DELETE FROM epcis_outbox WHERE batch_id = 'B1'")
    assert outbox.counts(conn) == scanned(conn) == {"pending": 2, "delivered": 6}
    conn.execute("DELETE FROM epcis_outbox WHERE batch_id = 'B3'")
    assert outbox.counts(conn) == scanned(conn) == {"pending": 0, "delivered": 6}


def test_an_outbox_made_before_the_tally_is_counted_once(conn, ctx, tmp_path):
    enqueue(conn, "B1", all_kinds(ctx, batch="B1"))
    Forwarder(conn, from_config({"kind": "directory", "path": str(tmp_path / "to")}), doc_size=2).run_once()
    enqueue(conn, "B2", kinds(ctx, "B2")[:3])
    for name in ("insert", "deliver", "delete"):
        conn.execute(f"DROP TRIGGER epcis_outbox_tally_{name}")
    conn.execute("DROP TABLE epcis_outbox_tally")
    outbox.ensure_schema(conn)
    outbox.ensure_schema(conn)  # again: counted once
    assert outbox.counts(conn) == scanned(conn) == {"pending": 3, "delivered": 7}
    assert not conn.in_transaction


def test_status_reads_one_row_not_the_history(conn, ctx):
    enqueue(conn, "B1", all_kinds(ctx, batch="B1"))
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    outbox.counts(conn)
    conn.set_trace_callback(None)
    assert statements and all("epcis_outbox_tally" in s for s in statements)
    plan = " ".join(str(r) for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT events - delivered, delivered FROM epcis_outbox_tally"))
    assert "epcis_outbox " not in plan + " "
