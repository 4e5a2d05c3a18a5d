"""Transactional outbox: EPCIS events waiting to go upstream, kept after delivery for export.

`enqueue` runs inside the caller's (ledger's) transaction and never commits, so an event exists
exactly when the ledger change that caused it does. The eventID (CBV 2.0 event hash) is unique:
enqueueing the same event again is a no-op.

Delivery is per target (a receiver's address without credentials, `forwarder.target_of`): each
target gets every batch's whole story, in `seq` order, from its first event. Since a batch goes
out in order, what a target has of it is one number, `epcis_delivery.delivered_seq`; its retry
state sits beside it. A receiver added later starts at the batch's beginning; `resend` starts a
target over. The row's own `delivered_at` / `attempts` / `next_try_at` / `last_error` summarise
all targets (first delivery anywhere, failures so far, the latest failure) for the operator's
view; scheduling reads only the per-target state. A restart resumes where each target stopped.

An event's JSON text (the bytes its eventID hashed and every receiver gets) is stored deflated
with a preset dictionary (`pack`, about 30 bytes per unit instead of 230); `body_text` gives
the text back byte for byte. Rows stored as text before (an older outbox) stay text: their
audit seals cover them as they are."""

from __future__ import annotations

import json
import re
import sqlite3
import time
import zlib

from serialine.host.epcis.eventhash import time_ms

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS epcis_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id     TEXT NOT NULL CHECK (length(batch_id) > 0),
    event_id     TEXT NOT NULL CHECK (event_id LIKE 'ni:///sha-256;%?ver=CBV2.0'),
    event_ms     INTEGER NOT NULL,  -- eventhash.time_ms of its eventTime (unique with event_id: below)
    event_type   TEXT NOT NULL,
    body         BLOB NOT NULL CHECK (typeof(body) = 'blob' OR json_valid(body)),  -- pack(text), or text
    enqueued_at  REAL NOT NULL,
    delivered_at REAL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try_at  REAL NOT NULL DEFAULT 0,
    last_error   TEXT)""",
    # an eventID once: its events share their time, so (time, id) is unique as the id alone is, and
    # a new event's entry goes at the index's end (the id alone put each in a random page of it)
    "CREATE UNIQUE INDEX IF NOT EXISTS epcis_outbox_event ON epcis_outbox (event_ms, event_id)",
    """CREATE INDEX IF NOT EXISTS epcis_outbox_pending
    ON epcis_outbox (batch_id, seq) WHERE delivered_at IS NULL""",
    # a delivered event stays delivered: the forwarder never sends it again
    """CREATE TRIGGER IF NOT EXISTS epcis_outbox_delivered_is_final
    BEFORE UPDATE OF delivered_at ON epcis_outbox
    WHEN OLD.delivered_at IS NOT NULL AND NEW.delivered_at IS NOT OLD.delivered_at
    BEGIN SELECT RAISE(ABORT, 'epcis_outbox: a delivered event cannot be undelivered'); END""",
    """CREATE TRIGGER IF NOT EXISTS epcis_outbox_body_is_immutable
    BEFORE UPDATE OF body, event_id, event_ms, batch_id ON epcis_outbox
    BEGIN SELECT RAISE(ABORT, 'epcis_outbox: events are immutable'); END""",
    "CREATE INDEX IF NOT EXISTS epcis_outbox_batch_seq ON epcis_outbox (batch_id, seq)",
    """CREATE TABLE IF NOT EXISTS epcis_delivery (
    target        TEXT NOT NULL CHECK (length(target) > 0),
    batch_id      TEXT NOT NULL,
    delivered_seq INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_try_at   REAL NOT NULL DEFAULT 0,
    last_error    TEXT,
    PRIMARY KEY (target, batch_id)) WITHOUT ROWID""",
    # the outbox's counts, kept by the statements that change them (in their transaction): the
    # status reads one row however long the delivered history grows
    """CREATE TABLE IF NOT EXISTS epcis_outbox_tally (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    events    INTEGER NOT NULL CHECK (events >= 0),
    delivered INTEGER NOT NULL CHECK (delivered >= 0 AND delivered <= events))""",
    """CREATE TRIGGER IF NOT EXISTS epcis_outbox_tally_insert AFTER INSERT ON epcis_outbox
    BEGIN UPDATE epcis_outbox_tally SET events = events + 1,
    delivered = delivered + (NEW.delivered_at IS NOT NULL); END""",
    """CREATE TRIGGER IF NOT EXISTS epcis_outbox_tally_deliver AFTER UPDATE OF delivered_at ON epcis_outbox
    WHEN OLD.delivered_at IS NULL AND NEW.delivered_at IS NOT NULL
    BEGIN UPDATE epcis_outbox_tally SET delivered = delivered + 1; END""",
    """CREATE TRIGGER IF NOT EXISTS epcis_outbox_tally_delete AFTER DELETE ON epcis_outbox
    BEGIN UPDATE epcis_outbox_tally SET events = events - 1,
    delivered = delivered - (OLD.delivered_at IS NOT NULL); END""",
)

_EVENT_ID = re.compile(r"^ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0$")

# The deflate preset dictionary of every packed body: never change it (stored bodies need it).
ZDICT = (b'{"type":"AggregationEvent","eventTime":"","eventTimeZoneOffset":"+01:00","parentID":"urn:epc:id:sscc:",'
         b'"childEPCs":["urn:epc:id:sgtin:"],"action":"ADD","bizStep":"packing","disposition":"in_progress",'
         b'"readPoint":{"id":"urn:epc:id:sgln:"},"bizLocation":{"id":"urn:epc:id:sgln:"},"eventID":"ni:///sha-256;'
         b'?ver=CBV2.0"}')


def pack(text: str) -> bytes:
    """An event's JSON text as stored: deflated, a 16 KiB window (any level inflates alike:
    level 3 with memory level 5 packs a poll's events in 2/3 of the time and 3/4 of the
    instructions of level 6 with memory level 3, for 2 % more bytes)."""
    packer = zlib.compressobj(3, zlib.DEFLATED, 14, 5, zdict=ZDICT)
    return packer.compress(text.encode()) + packer.flush()


def body_text(stored) -> str:
    """The event's JSON text from a stored body (packed, or text in an older outbox)."""
    if isinstance(stored, str):
        return stored
    inflater = zlib.decompressobj(zdict=ZDICT)
    return (inflater.decompress(stored) + inflater.flush()).decode()


_HEAD_TIME = re.compile(r'\{"type":"[A-Za-z]+","eventTime":"([^"\\]+)"')  # how the builders begin an event


def event_time_of(stored) -> str:
    """A stored event's eventTime, read from the head of its text (the builders write `type`,
    then `eventTime`) without inflating and parsing the whole event; else from the whole."""
    if isinstance(stored, str):
        head = stored[:160]
    else:
        head = zlib.decompressobj(zdict=ZDICT).decompress(stored, 160).decode(errors="replace")
    found = _HEAD_TIME.match(head)
    return found.group(1) if found else json.loads(body_text(stored))["eventTime"]


_TEXT_BODY = "body         TEXT NOT NULL CHECK (json_valid(body))"  # the column before packed bodies


_COLUMNS = "seq, batch_id, event_id, event_type, body, enqueued_at, delivered_at, attempts, next_try_at, last_error"


def _stored_ms(body) -> int:
    """A stored row's event_ms; -1 for a body that does not read (broken behind the project's
    back: `audit verify` names it), so the ledger still opens to be verified."""
    try:
        return time_ms(event_time_of(body))
    except Exception:  # noqa: BLE001 - any way a body may be broken
        return -1


def _compact(conn: sqlite3.Connection) -> bool:
    """An outbox of an earlier form gets the current table: one made when bodies were text takes
    packed ones, one without `event_ms` gets each row's (read from its body) and loses the UNIQUE
    (event_id) index that `epcis_outbox_event` replaces. Its rows are copied as they are (their
    seals hold: a seal reads the columns it names), then its indexes and triggers made again
    (ensure_schema). → False: left in its form (a read-only ledger)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'epcis_outbox'").fetchone()
    if row is None or (_TEXT_BODY not in row[0] and " event_ms " in row[0]):
        return True
    conn.execute("SAVEPOINT outbox_compact")
    try:
        try:
            conn.execute(SCHEMA[0].replace("IF NOT EXISTS epcis_outbox (", "epcis_outbox_packed (", 1))
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):
                raise
            conn.execute("RELEASE outbox_compact")
            return False  # a read-only ledger (an archive being exported): its rows read as they are
        conn.create_function("serialine_event_ms", 1, _stored_ms, deterministic=True)
        conn.execute(f"INSERT INTO epcis_outbox_packed ({_COLUMNS}, event_ms)"
                     f" SELECT {_COLUMNS}, serialine_event_ms(body) FROM epcis_outbox")
        conn.create_function("serialine_event_ms", 1, None)
        (given,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'epcis_outbox'").fetchone()
        conn.execute("DROP TABLE epcis_outbox")
        conn.execute("ALTER TABLE epcis_outbox_packed RENAME TO epcis_outbox")
        # a seq once given is never given again (AUTOINCREMENT), also of rows deleted since
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'epcis_outbox'")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'epcis_outbox', MAX(?, COALESCE(MAX(seq), 0))"
                     " FROM epcis_outbox", (given,))
    except BaseException:
        conn.execute("ROLLBACK TO outbox_compact")
        conn.execute("RELEASE outbox_compact")
        raise
    conn.execute("RELEASE outbox_compact")
    return True


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the outbox table, index and triggers if missing (idempotent)."""
    # statement by statement: executescript() would commit the caller's open transaction
    outside = not conn.in_transaction
    if _compact(conn):
        for statement in SCHEMA:
            conn.execute(statement)
    if conn.execute("SELECT 1 FROM epcis_outbox_tally").fetchone() is None:
        # an outbox made before the tally: counted once, after its triggers exist (one statement,
        # so no event falls between the count and the triggers)
        conn.execute("INSERT OR IGNORE INTO epcis_outbox_tally (id, events, delivered)"
                     " SELECT 1, COUNT(*), COUNT(delivered_at) FROM epcis_outbox")
        if outside and conn.in_transaction:  # sqlite3's implicit BEGIN: the caller did not open it
            conn.commit()


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # an event's text, as its receivers get it


def enqueue(conn: sqlite3.Connection, batch_id: str, event: dict) -> bool:
    """Add an event to the outbox inside the caller's transaction (does not commit).
    Returns True if added, False if this eventID was already there for the same batch."""
    if not isinstance(batch_id, str) or not batch_id:
        raise ValueError(f"batch_id must be a non-empty string, got {batch_id!r}")
    event_id = event.get("eventID") if isinstance(event, dict) else None
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise ValueError(f"event needs a CBV 2.0 hash eventID, got {event_id!r}")
    try:
        event_ms = time_ms(event["eventTime"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValueError(f"event needs an ISO 8601 eventTime, got {event.get('eventTime')!r}") from None
    body = pack(_JSON.encode(event))
    cur = conn.execute(
        "INSERT INTO epcis_outbox (batch_id, event_id, event_ms, event_type, body, enqueued_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_ms, event_id) DO NOTHING",
        (batch_id, event_id, event_ms, event.get("type", ""), body, time.time()))
    if cur.rowcount:
        return True
    (other,) = conn.execute("SELECT batch_id FROM epcis_outbox WHERE event_ms = ? AND event_id = ?",
                            (event_ms, event_id)).fetchone()
    if other != batch_id:
        raise ValueError(f"event {event_id} is already in the outbox for batch {other!r}")
    return False


def batch_events(conn: sqlite3.Connection, batch_id: str) -> list[dict]:
    """Every event of a batch in outbox order, delivered or not (for export)."""
    rows = conn.execute("SELECT body FROM epcis_outbox WHERE batch_id = ? ORDER BY seq",
                        (batch_id,))
    return [json.loads(body_text(body)) for (body,) in rows]


def batch_count(conn: sqlite3.Connection, batch_id: str) -> int:
    return conn.execute("SELECT COUNT(*) FROM epcis_outbox WHERE batch_id = ?", (batch_id,)).fetchone()[0]


def batch_bodies(conn: sqlite3.Connection, batch_id: str):
    """Every event of a batch in outbox order as its stored JSON text, streamed (one statement:
    one consistent read, whatever is written meanwhile)."""
    for (body,) in conn.execute("SELECT body FROM epcis_outbox WHERE batch_id = ? ORDER BY seq", (batch_id,)):
        yield body_text(body)


def batch_locations(conn: sqlite3.Connection, batch_id: str) -> list[str]:
    """Every location a batch's events name (bizLocation, readPoint, source, destination), in
    the order they first appear, read in one pass."""
    named: dict[str, None] = {}
    for body in batch_bodies(conn, batch_id):
        event = json.loads(body)
        for field in ("bizLocation", "readPoint"):
            if field in event:
                named[event[field]["id"]] = None
        for name, key in (("sourceList", "source"), ("destinationList", "destination")):
            for item in event.get(name) or ():
                named[item[key]] = None
    return list(named)


def batches(conn: sqlite3.Connection) -> list[str]:
    """Every batch in the outbox (a skip over the (batch_id, seq) index: one probe per batch)."""
    found, last = [], ""
    while (row := conn.execute("SELECT batch_id FROM epcis_outbox WHERE batch_id > ? ORDER BY batch_id"
                               " LIMIT 1", (last,)).fetchone()):
        last = row[0]
        found.append(last)
    return found


def _state(conn: sqlite3.Connection, target: str, batch_id: str) -> tuple[int, int, float]:
    """(delivered_seq, attempts, next_try_at) of a target's delivery of a batch."""
    row = conn.execute("SELECT delivered_seq, attempts, next_try_at FROM epcis_delivery"
                       " WHERE target = ? AND batch_id = ?", (target, batch_id)).fetchone()
    return row or (0, 0, 0.0)


def pending_batches(conn: sqlite3.Connection, target: str) -> list[str]:
    """Batches with events `target` has not had, the one with the oldest such event first."""
    heads = []
    for batch_id in batches(conn):
        done = _state(conn, target, batch_id)[0]
        row = conn.execute("SELECT seq FROM epcis_outbox WHERE batch_id = ? AND seq > ? ORDER BY seq"
                           " LIMIT 1", (batch_id, done)).fetchone()
        if row:
            heads.append((row[0], batch_id))
    return [batch_id for _, batch_id in sorted(heads)]


def next_chunk(conn: sqlite3.Connection, target: str, batch_id: str, size: int, now: float):
    """The batch's next events for `target` (up to `size`) if they are due, else None. In order
    per batch: while its delivery waits for the retry time, the batch waits."""
    done, _, next_try_at = _state(conn, target, batch_id)
    if next_try_at > now:
        return None
    rows = conn.execute("SELECT seq, event_id, body FROM epcis_outbox WHERE batch_id = ? AND seq > ?"
                        " ORDER BY seq LIMIT ?", (batch_id, done, size)).fetchall()
    return [(seq, event_id, json.loads(body_text(body))) for seq, event_id, body in rows] or None


def attempts(conn: sqlite3.Connection, target: str, batch_id: str) -> int:
    """Failures in a row of this target's delivery of the batch."""
    return _state(conn, target, batch_id)[1]


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


_UPSERT = ("INSERT INTO epcis_delivery (target, batch_id, delivered_seq, attempts, next_try_at, last_error)"
           " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (target, batch_id) DO UPDATE SET ")


def mark_delivered(conn: sqlite3.Connection, target: str, batch_id: str, seqs: list[int],
                   now: float) -> None:
    """`target` confirmed these events (the batch's next ones, in order)."""
    with _own_transaction(conn):
        conn.execute(_UPSERT + "delivered_seq = MAX(delivered_seq, excluded.delivered_seq), attempts = 0,"
                     " next_try_at = 0, last_error = NULL", (target, batch_id, max(seqs), 0, 0, None))
        conn.executemany("UPDATE epcis_outbox SET delivered_at = ?, last_error = NULL"
                         " WHERE seq = ? AND delivered_at IS NULL", [(now, s) for s in seqs])


def record_failure(conn: sqlite3.Connection, target: str, batch_id: str, seqs: list[int], error: str,
                   next_try_at: float) -> None:
    error = error[:2000]
    with _own_transaction(conn):
        conn.execute(_UPSERT + "attempts = attempts + 1, next_try_at = excluded.next_try_at,"
                     " last_error = excluded.last_error", (target, batch_id, 0, 1, next_try_at, error))
        conn.executemany("UPDATE epcis_outbox SET attempts = attempts + 1, last_error = ?,"
                         " next_try_at = ? WHERE seq = ? AND delivered_at IS NULL",
                         [(error, next_try_at, s) for s in seqs])


def retry_now(conn: sqlite3.Connection) -> int:
    """Make every waiting delivery due now (the engineer fixed the upstream problem); returns
    how many (target, batch) deliveries were waiting."""
    with _own_transaction(conn):
        conn.execute("UPDATE epcis_outbox SET next_try_at = 0 WHERE delivered_at IS NULL AND next_try_at > 0")
        return conn.execute("UPDATE epcis_delivery SET next_try_at = 0 WHERE next_try_at > 0").rowcount


def resend(conn: sqlite3.Connection, target: str, batch_id: str) -> int:
    """Start `target` over on the batch: its whole history goes again, in order. Runs in the
    caller's transaction (the caller audits it); returns the number of events."""
    (n,) = conn.execute("SELECT COUNT(*) FROM epcis_outbox WHERE batch_id = ?", (batch_id,)).fetchone()
    if n:
        conn.execute(_UPSERT + "delivered_seq = 0, attempts = 0, next_try_at = 0, last_error = NULL",
                     (target, batch_id, 0, 0, 0, None))
    return n


def pending_by_target(conn: sqlite3.Connection) -> list[tuple]:
    """(target, batch_id, pending, attempts, next_try_at, last_error) for every known target and
    batch it still lacks events of."""
    out = []
    targets = [t for (t,) in conn.execute("SELECT DISTINCT target FROM epcis_delivery ORDER BY target")]
    for batch_id in batches(conn):
        for target in targets:
            row = conn.execute("SELECT delivered_seq, attempts, next_try_at, last_error FROM epcis_delivery"
                               " WHERE target = ? AND batch_id = ?", (target, batch_id)).fetchone()
            done, tries, next_try_at, error = row or (0, 0, 0.0, None)
            (pending,) = conn.execute("SELECT COUNT(*) FROM epcis_outbox WHERE batch_id = ? AND seq > ?",
                                      (batch_id, done)).fetchone()
            if pending:
                out.append((target, batch_id, pending, tries, next_try_at, error))
    return out


def pending_rows(conn: sqlite3.Connection, limit: int = 1000) -> list[tuple]:
    """(seq, batch_id, event_type, event_id, attempts, next_try_at, last_error) of pending rows."""
    return conn.execute(
        "SELECT seq, batch_id, event_type, event_id, attempts, next_try_at, last_error"
        " FROM epcis_outbox WHERE delivered_at IS NULL ORDER BY seq LIMIT ?", (limit,)).fetchall()


def counts(conn: sqlite3.Connection, target: str | None = None) -> dict:
    """Events pending / delivered: to `target`, or (None) to no target yet / to some target."""
    if target is None:
        pending, delivered = conn.execute(
            "SELECT events - delivered, delivered FROM epcis_outbox_tally").fetchone()
    else:
        (delivered,) = conn.execute(
            "SELECT COUNT(*) FROM epcis_outbox o JOIN epcis_delivery d ON d.batch_id = o.batch_id"
            " AND d.target = ? WHERE o.seq <= d.delivered_seq", (target,)).fetchone()
        pending = conn.execute("SELECT events FROM epcis_outbox_tally").fetchone()[0] - delivered
    return {"pending": pending, "delivered": delivered}
