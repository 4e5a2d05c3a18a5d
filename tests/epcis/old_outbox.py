"""The outbox as the code before epcis_outbox_event (469c2c2) made it, for the migration tests:
its statements as they were, and the text-body table before them."""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS epcis_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id     TEXT NOT NULL CHECK (length(batch_id) > 0),
    event_id     TEXT NOT NULL UNIQUE CHECK (event_id LIKE 'ni:///sha-256;%?ver=CBV2.0'),
    event_type   TEXT NOT NULL,
    body         BLOB NOT NULL CHECK (typeof(body) = 'blob' OR json_valid(body)),  -- pack(text), or text
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

TEXT_BODY_TABLE = SCHEMA[0].replace(
    "body         BLOB NOT NULL CHECK (typeof(body) = 'blob' OR json_valid(body)),  -- pack(text), or text",
    "body         TEXT NOT NULL CHECK (json_valid(body)),")
assert TEXT_BODY_TABLE != SCHEMA[0]
