"""Transactional outbox: EPCIS events waiting to go upstream, kept after delivery for export.

`enqueue` runs inside the caller's (ledger's) transaction and never commits, so an event exists
exactly when the ledger change that caused it does. The eventID (CBV 2.0 event hash) is unique:
enqueueing the same event again is a no-op. The forwarder reads pending rows in `seq` order
per batch and records delivery or failure here, so a restart resumes where it stopped."""

from __future__ import annotations

import json
import re
import sqlite3
import time

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS epcis_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id     TEXT NOT NULL CHECK (length(batch_id) > 0),
    event_id     TEXT NOT NULL UNIQUE CHECK (event_id LIKE 'ni:///sha-256;%?ver=CBV2.0'),
    event_type   TEXT NOT NULL,
    body         TEXT NOT NULL CHECK (json_valid(body)),
    enqueued_at  REAL NOT NULL,
    delivered_at REAL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try_at  REAL NOT NULL DEFAULT 0,
    last_error   TEXT)""",
    """CREATE INDEX IF NOT EXISTS epcis_outbox_pending
    ON epcis_outbox (batch_id, seq) WHERE delivered_at IS NULL""",
    # a delivered event stays delivered: the forwarder never sends it again
    """CREATE TRIGGER IF NOT EXISTS epcis_outbox_delivered_is_final
    BEFORE UPDATE OF delivered_at ON epcis_outbox
    WHEN OLD.delivered_at IS NOT NULL AND NEW.delivered_at IS NOT OLD.delivered_at
    BEGIN SELECT RAISE(ABORT, 'epcis_outbox: a delivered event cannot be undelivered'); END""",
    """CREATE TRIGGER IF NOT EXISTS epcis_outbox_body_is_immutable
    BEFORE UPDATE OF body, event_id, batch_id ON epcis_outbox
    BEGIN SELECT RAISE(ABORT, 'epcis_outbox: events are immutable'); END""",
)

_EVENT_ID = re.compile(r"^ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0$")


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the outbox table, index and triggers if missing (idempotent)."""
    # statement by statement: executescript() would commit the caller's open transaction
    for statement in SCHEMA:
        conn.execute(statement)


def enqueue(conn: sqlite3.Connection, batch_id: str, event: dict) -> bool:
    """Add an event to the outbox inside the caller's transaction (does not commit).
    Returns True if added, False if this eventID was already there for the same batch."""
    if not isinstance(batch_id, str) or not batch_id:
        raise ValueError(f"batch_id must be a non-empty string, got {batch_id!r}")
    event_id = event.get("eventID") if isinstance(event, dict) else None
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise ValueError(f"event needs a CBV 2.0 hash eventID, got {event_id!r}")
    body = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    cur = conn.execute(
        "INSERT INTO epcis_outbox (batch_id, event_id, event_type, body, enqueued_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        (batch_id, event_id, event.get("type", ""), body, time.time()))
    if cur.rowcount:
        return True
    (other,) = conn.execute("SELECT batch_id FROM epcis_outbox WHERE event_id = ?",
                            (event_id,)).fetchone()
    if other != batch_id:
        raise ValueError(f"event {event_id} is already in the outbox for batch {other!r}")
    return False


def batch_events(conn: sqlite3.Connection, batch_id: str) -> list[dict]:
    """Every event of a batch in outbox order, delivered or not (for export)."""
    rows = conn.execute("SELECT body FROM epcis_outbox WHERE batch_id = ? ORDER BY seq",
                        (batch_id,))
    return [json.loads(body) for (body,) in rows]


def pending_batches(conn: sqlite3.Connection) -> list[str]:
    """Batches with undelivered events, oldest first."""
    rows = conn.execute("SELECT batch_id, MIN(seq) AS first FROM epcis_outbox"
                        " WHERE delivered_at IS NULL GROUP BY batch_id ORDER BY first")
    return [batch for batch, _ in rows]


def next_chunk(conn: sqlite3.Connection, batch_id: str, size: int, now: float):
    """The batch's oldest undelivered events (up to `size`) if they are due, else None.
    In order per batch: if the head row is waiting for its retry time, the batch waits."""
    rows = conn.execute(
        "SELECT seq, event_id, body, next_try_at FROM epcis_outbox"
        " WHERE batch_id = ? AND delivered_at IS NULL ORDER BY seq LIMIT ?",
        (batch_id, size)).fetchall()
    if not rows or rows[0][3] > now:
        return None
    return [(seq, event_id, json.loads(body)) for seq, event_id, body, _ in rows]


class _own_transaction:
    """The forwarder's own short write transaction, for connections in either sqlite3 mode
    (the ledger's connections use isolation_level=None with explicit BEGIN IMMEDIATE)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        if self.conn.in_transaction:
            raise RuntimeError("the forwarder needs its own connection, not one inside a transaction")
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def mark_delivered(conn: sqlite3.Connection, seqs: list[int], now: float) -> None:
    with _own_transaction(conn):
        conn.executemany("UPDATE epcis_outbox SET delivered_at = ?, last_error = NULL"
                         " WHERE seq = ? AND delivered_at IS NULL", [(now, s) for s in seqs])


def record_failure(conn: sqlite3.Connection, seqs: list[int], error: str, next_try_at: float) -> None:
    with _own_transaction(conn):
        conn.executemany("UPDATE epcis_outbox SET attempts = attempts + 1, last_error = ?,"
                         " next_try_at = ? WHERE seq = ? AND delivered_at IS NULL",
                         [(error[:2000], next_try_at, s) for s in seqs])


def retry_now(conn: sqlite3.Connection) -> int:
    """Make every pending event due now (the engineer fixed the upstream problem)."""
    with _own_transaction(conn):
        return conn.execute("UPDATE epcis_outbox SET next_try_at = 0"
                            " WHERE delivered_at IS NULL AND next_try_at > 0").rowcount


def pending_rows(conn: sqlite3.Connection, limit: int = 1000) -> list[tuple]:
    """(seq, batch_id, event_type, event_id, attempts, next_try_at, last_error) of pending rows."""
    return conn.execute(
        "SELECT seq, batch_id, event_type, event_id, attempts, next_try_at, last_error"
        " FROM epcis_outbox WHERE delivered_at IS NULL ORDER BY seq LIMIT ?", (limit,)).fetchall()


def counts(conn: sqlite3.Connection) -> dict:
    pending, delivered = conn.execute(
        "SELECT COUNT(*) - COUNT(delivered_at), COUNT(delivered_at) FROM epcis_outbox").fetchone()
    return {"pending": pending, "delivered": delivered}
