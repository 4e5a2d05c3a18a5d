"""The ledger's SQLite connection and schema. Rules that must never break (a serial issued once,
legal state changes, a pack in one case, SSCCs never reused, an append-only audit log) are
constraints and triggers here, so no code path can get around them."""

from __future__ import annotations

import logging
import sqlite3
import time

from . import devevents

log = logging.getLogger(__name__)

SERIAL_STATES = ("available", "allocated", "printed", "commissioned", "rejected", "destroyed",
                 "sampled", "decommissioned")

# (old, new) pairs a serial may take; allocated -> available is also checked against batch state.
TRANSITIONS = (
    ("available", "allocated"), ("allocated", "printed"), ("allocated", "available"),
    ("printed", "commissioned"), ("printed", "rejected"),
    ("allocated", "rejected"),  # sent to a coder but never seen printed: may exist, never reissued
    ("printed", "destroyed"), ("printed", "sampled"), ("printed", "decommissioned"),
    ("commissioned", "destroyed"), ("commissioned", "sampled"), ("commissioned", "decommissioned"),
)

# `=` chains, not IN lists: in a trigger an IN list of 3+ values is an ephemeral table built per row
_legal = "CASE OLD.state " + " ".join(
    f"WHEN '{a}' THEN " + " OR ".join(f"NEW.state = '{b}'" for x, b in TRANSITIONS if x == a)
    for a in dict.fromkeys(a for a, _ in TRANSITIONS)) + " ELSE 0 END"
_states = ",".join(f"'{s}'" for s in SERIAL_STATES)

# serial_history keeps a state as its place in SERIAL_STATES (one byte) and a time as ms since 1970 UTC
STATE_CODE = {s: i for i, s in enumerate(SERIAL_STATES)}


def state_code_sql(expr: str) -> str:
    """SQL giving the code of the state name `expr`."""
    return f"CASE {expr} " + " ".join(f"WHEN '{s}' THEN {i}" for s, i in STATE_CODE.items()) + " END"


def state_name_sql(expr: str) -> str:
    """SQL giving the state name of the code `expr`."""
    return f"CASE {expr} " + " ".join(f"WHEN {i} THEN '{s}'" for s, i in STATE_CODE.items()) + " END"


def ms_sql(text: str) -> str:
    """SQL giving ms since 1970 of an SQLite time value (julianday is exact to well under a ms)."""
    return f"CAST(round((julianday({text}) - 2440587.5) * 86400000) AS INTEGER)"


def ms_text_sql(ms: str) -> str:
    """SQL giving the ISO text (strftime '%Y-%m-%dT%H:%M:%fZ', the history's form before) of ms since 1970."""
    return f"strftime('%Y-%m-%dT%H:%M:%S', {ms} / 1000, 'unixepoch') || printf('.%03dZ', {ms} % 1000)"


def serial_key(serial: str):
    """A serial as serial_history keeps it: one of digits only (up to 18) as the integer of '1' and
    its digits (6 bytes for 12 digits, leading zeros kept), any other as its text."""
    return int("1" + serial) if 0 < len(serial) <= 18 and serial.isascii() and serial.isdigit() else serial


def serial_key_sql(expr: str) -> str:
    """SQL of serial_key."""
    return (f"CASE WHEN length({expr}) BETWEEN 1 AND 18 AND {expr} NOT GLOB '*[^0-9]*'"
            f" THEN CAST('1' || {expr} AS INTEGER) ELSE {expr} END")


def serial_text_sql(expr: str) -> str:
    """SQL giving the serial of a serial_history key."""
    return f"CASE WHEN typeof({expr}) = 'integer' THEN substr({expr}, 2) ELSE {expr} END"


# A batch as a small integer (serial_history's rows name it so: 1-2 bytes, not its id's text) and the
# ms since 1970 its history's times count from (its creation: 3-4 bytes a time, not 6). Given when the
# batch is made, never changed. Keyed by batch_id: serial_log finds ref and t0 in one look-up.
BATCH_REF = (
    """CREATE TABLE IF NOT EXISTS batch_ref (
        batch_id TEXT PRIMARY KEY REFERENCES batch (batch_id), ref INTEGER NOT NULL UNIQUE, t0 INTEGER NOT NULL)
        WITHOUT ROWID""",
    f"""CREATE TRIGGER IF NOT EXISTS batch_ref_given AFTER INSERT ON batch
        BEGIN INSERT INTO batch_ref (batch_id, ref, t0)
              SELECT NEW.batch_id, coalesce(max(ref), 0) + 1, {ms_sql("'now'")} FROM batch_ref; END""",
    """CREATE TRIGGER IF NOT EXISTS batch_ref_fixed BEFORE UPDATE ON batch_ref
        BEGIN SELECT RAISE(ABORT, 'a batch''s ref never changes'); END""",
    """CREATE TRIGGER IF NOT EXISTS batch_ref_kept BEFORE DELETE ON batch_ref
        BEGIN SELECT RAISE(ABORT, 'a batch''s ref never changes'); END""",
)
# One row per change of a serial's state, appended by serial_log, never changed. Only what the
# rest of the ledger does not say: the serial by its serial_id, the batch by its ref, the time as ms
# since the batch's t0; the state it left is the one the row before for that serial reached
# ('available' before the first). seq: the order of the changes, never reused (rows are never deleted).
# No foreign keys: serial_history has no index on serial_id, so each delete of a serial (an abandoned
# import's) would scan it; serial_log writes only ids that exist, and serials with a history stay.
SERIAL_HISTORY = """CREATE TABLE IF NOT EXISTS serial_history (
        seq INTEGER PRIMARY KEY, serial_id INTEGER NOT NULL, batch_ref INTEGER NOT NULL, state INTEGER NOT NULL,
        at INTEGER NOT NULL)"""
# a serial without a batch has no ref: NULL, refused by NOT NULL (as batch_id was before)
SERIAL_LOG = f"""CREATE TRIGGER IF NOT EXISTS serial_log AFTER UPDATE OF state ON serial
        WHEN NEW.state <> OLD.state
        BEGIN INSERT INTO serial_history (serial_id, batch_ref, state, at)
              SELECT NEW.serial_id, r.ref, {state_code_sql("NEW.state")}, {ms_sql("'now'")} - r.t0
              FROM (SELECT 1) LEFT JOIN batch_ref r ON r.batch_id = COALESCE(NEW.batch_id, OLD.batch_id); END"""
# the rows in the columns of the form before (seq, batch_id, serial key, state, ms since 1970): the
# seals made then read them (host/audit.py log:serial_history2), byte for byte
SERIAL_HISTORY_V2 = f"""CREATE VIEW IF NOT EXISTS serial_history_v2 AS
        SELECT h.seq AS seq, r.batch_id AS batch_id, {serial_key_sql("s.serial")} AS serial, h.state AS state,
               r.t0 + h.at AS at
        FROM serial_history h JOIN batch_ref r ON r.ref = h.batch_ref JOIN serial s ON s.serial_id = h.serial_id"""
# that form's table (the migrations of the forms before it write it; _migrate_serial_history_ref moves it on)
_SERIAL_HISTORY_V2_TABLE = """CREATE TABLE IF NOT EXISTS serial_history (
        seq INTEGER PRIMARY KEY, batch_id TEXT NOT NULL, serial NOT NULL, state INTEGER NOT NULL,
        at INTEGER NOT NULL)"""
# the history as a QA reviewer reads it: GTIN, serial, both states by name, batch, ISO time (the
# command `batch history`, tests and sqlite3 users)
SERIAL_TRAIL = f"""CREATE VIEW IF NOT EXISTS serial_trail AS
        SELECT h.seq AS seq, s.gtin AS gtin, s.serial AS serial,
               COALESCE(lag({state_name_sql("h.state")}) OVER (PARTITION BY s.gtin, s.serial ORDER BY h.seq),
                        'available') AS old_state,
               {state_name_sql("h.state")} AS new_state, r.batch_id AS batch_id, {ms_text_sql("(r.t0 + h.at)")} AS at
        FROM serial_history h JOIN batch_ref r ON r.ref = h.batch_ref JOIN serial s ON s.serial_id = h.serial_id"""

_OLD_BATCH_STATES = "CHECK (state IN ('created', 'running', 'closing', 'closed'))"
_BATCH_STATES = "CHECK (state IN ('created', 'running', 'closing', 'closed', 'aborted', 'reopened'))"

# a rowid table's index carries the row's serial_id, not (gtin, serial): the pick names serial (allocate
# gives the serial with its id; USABLE looks up its grants) so the index holds it; a new import's rows
# append at the index's end (its import_id is the highest), in the key order each chunk is drawn in
SERIAL_PICK = "CREATE INDEX IF NOT EXISTS serial_pick ON serial (gtin, state, import_id, serial) WHERE state = 'available'"
# a batch's serials by state, then serial_id (the seal serial3 reads them in that order, host/audit.py)
SERIAL_BATCH = "CREATE INDEX IF NOT EXISTS serial_batch ON serial (batch_id, state) WHERE batch_id IS NOT NULL"

# every new serial: available, and staged only into an import still staging (one trigger: a
# generated pool runs it once per row, host/serials.py)
SERIAL_BORN = """CREATE TRIGGER IF NOT EXISTS serial_born BEFORE INSERT ON serial
        WHEN NEW.state <> 'available' OR (NEW.import_id IS NOT NULL
             AND (SELECT state FROM serial_import WHERE import_id = NEW.import_id) IS NOT 'staging')
        BEGIN SELECT RAISE(ABORT, 'a new serial must be available') WHERE NEW.state <> 'available';
              SELECT RAISE(ABORT, 'serials are staged only into an import that is still staging'); END"""

# Every rule on a serial's state change, (condition, message) in the order checked: one trigger
# (each trigger costs a program run per row; a unit changes its serial three times), column
# comparisons first, a lookup only for the transitions it concerns.
_SERIAL_RULES = (
    (f"NEW.state <> OLD.state AND NOT ({_legal})", "illegal serial state transition"),
    # an aborted, closed or reopened batch takes no new serials (what it held was returned or written off);
    # nor one of another GTIN (serial_history takes a serial's GTIN from its batch)
    ("NEW.state = 'allocated' AND OLD.state <> 'allocated'"
     " AND (SELECT state = 'running' AND gtin = NEW.gtin FROM batch WHERE batch_id = NEW.batch_id) IS NOT 1",
     "serials are allocated only to a running batch of their GTIN"),
    ("OLD.state = 'allocated' AND NEW.state = 'available'"
     " AND (SELECT state FROM batch WHERE batch_id = OLD.batch_id) IS NOT 'closing'",
     "allocated serials return to the pool only at batch close"),
    ("NEW.state <> OLD.state AND NEW.state IN ('allocated', 'available') AND EXISTS (SELECT 1 FROM serial_grant g"
     " WHERE g.gtin = OLD.gtin AND g.serial = OLD.serial AND g.state <> 'returned')",
     "this serial was handed out over OPEN-SCS and not returned"),
    ("NEW.state <> OLD.state AND NEW.state = 'allocated'"
     " AND EXISTS (SELECT 1 FROM serial_upstream_return r WHERE r.gtin = OLD.gtin AND r.serial = OLD.serial)",
     "this serial goes back to the upstream pool it came from"),
    # only an available serial can be of an unpublished import (published is final, serial_import_final)
    ("NEW.import_id IS NOT NULL AND (OLD.state = 'available' OR NEW.import_id IS NOT OLD.import_id)"
     " AND (SELECT state FROM serial_import WHERE import_id = NEW.import_id) IS NOT 'published'",
     "a serial of an unpublished import cannot be used"),
)
# A legal change into a state outside the pool's (a print, an outcome: two of a unit's three) on the same
# import: no rule above can apply (each needs an illegal pair, a pool state, a serial leaving 'available'
# or a new import), so the trigger stops at its WHEN. The rules in the WHEN too cost more (~30 % of the
# trigger, callgrind) than running the body for the other changes (an allocation, a return).
_OUT_OF_POOL = " OR ".join(f"OLD.state = '{a}' AND NEW.state = '{b}'" for a, b in TRANSITIONS
                           if b not in ("allocated", "available"))
SERIAL_TRANSITION = ("CREATE TRIGGER IF NOT EXISTS serial_transition BEFORE UPDATE OF state ON serial\n        WHEN "
                     f"NOT (({_OUT_OF_POOL}) AND NEW.import_id IS OLD.import_id)\n        BEGIN "
                     + "\n              ".join(f"SELECT RAISE(ABORT, '{m}') WHERE {c};" for c, m in _SERIAL_RULES)
                     + " END")
# before the rules were one trigger (ledgers made then hold these, and the old serial_transition)
_OLD_SERIAL_TRIGGERS = ("serial_unpublished_unused", "serial_granted_stays_out", "serial_returned_upstream_stays_out",
                        "serial_allocated_to_running_batch", "serial_return_only_at_close")

# t0: ms since 1970 the boot's event times count from (when first seen; 0: a boot seen before they did)
DEVICE_EVENT = (
    """CREATE TABLE IF NOT EXISTS device_boot_ref (
        ref INTEGER PRIMARY KEY, device_id TEXT NOT NULL, boot_id INTEGER NOT NULL, t0 INTEGER NOT NULL DEFAULT 0,
        UNIQUE (device_id, boot_id))""",
    """CREATE TRIGGER IF NOT EXISTS device_boot_ref_fixed BEFORE UPDATE ON device_boot_ref
        BEGIN SELECT RAISE(ABORT, 'a device boot''s ref never changes'); END""",
    """CREATE TABLE IF NOT EXISTS device_event (
        boot_ref INTEGER NOT NULL REFERENCES device_boot_ref (ref), event_seq INTEGER NOT NULL,
        msg INTEGER NOT NULL, unit_seq INTEGER, body INTEGER NOT NULL, body2 INTEGER,
        at NOT NULL,  -- ms since the boot's t0; a row from before the compact form: its seconds (REAL), as they were
        PRIMARY KEY (boot_ref, event_seq)) WITHOUT ROWID""",
    devevents.DEVICE_EVENT_V1,
    devevents.DEVICE_EVENT_V2,
)


def _one_of(column: str, values) -> str:
    """`column` is one of `values`, as a CHECK: `=` chains, since SQLite builds an IN list of 3+
    values as an ephemeral table each time the statement runs (each row of an executemany: ~2 us)."""
    return " OR ".join(f"{column} = '{v}'" for v in values)


_UNIT_OUTCOME = _one_of("outcome", ("PASSED", "REJECTED_CONFIRMED", "REJECTED_UNCONFIRMED", "PURGED", "UNKNOWN", "DESTROYED"))
_CODER_JOB_STATE = _one_of("state", ("queued", "bound", "dropped"))
_CONTAINER_STATE = _one_of("state", ("open", "closed", "disaggregated"))
_SERIAL_STATE = _one_of("state", SERIAL_STATES)  # every serial inserted (a pool: ~1.2 us per row) and updated
# what left the site is no longer ours to rework: its containment stays as shipped (two lookups, not
# `IN (OLD.container_id, OLD.parent_id)`: an ephemeral table at every update of a container)
SHIPPED_CONTAINER_FIXED = """CREATE TRIGGER IF NOT EXISTS shipped_container_fixed BEFORE UPDATE OF state, parent_id ON container
        WHEN EXISTS (SELECT 1 FROM shipped s JOIN container p ON p.sscc = s.sscc WHERE p.container_id = OLD.container_id)
          OR EXISTS (SELECT 1 FROM shipped s JOIN container p ON p.sscc = s.sscc WHERE p.container_id = OLD.parent_id)
        BEGIN SELECT RAISE(ABORT, 'this container has been shipped: it left the site'); END"""
# serial_id: the pack's identity as every other table of the ledger refers to it (an integer,
# a few bytes, where (gtin, serial) would be 27 in each table and each index of it)
SERIAL = f"""CREATE TABLE IF NOT EXISTS serial (
        serial_id INTEGER PRIMARY KEY,
        gtin TEXT NOT NULL REFERENCES product (gtin),
        serial TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'available' CHECK ({_SERIAL_STATE}),
        batch_id TEXT REFERENCES batch (batch_id),
        source TEXT NOT NULL,
        import_id INTEGER REFERENCES serial_import (import_id),
        UNIQUE (gtin, serial))"""
# the same CHECKs as ledgers made before hold them: table -> (old text, new text)
# (unit's is gone: _migrate_unit_row makes unit_row anew)
_IN_LIST_CHECKS = {
    "coder_job_row": ("CHECK (state IN ('queued', 'bound', 'dropped'))", f"CHECK ({_CODER_JOB_STATE})"),
    "container": ("CHECK (state IN ('open', 'closed', 'disaggregated'))", f"CHECK ({_CONTAINER_STATE})"),
    "serial": (f"CHECK (state IN ({_states}))", f"CHECK ({_SERIAL_STATE})"),
}

# Codes queued to the coder, in order; the head still 'queued' is bound at the next UNIT_PRINTED.
# A job's code is its batch's element string around its serial (host/ledger.py code_for): the view
# coder_job gives it from the batch's coder_template; a row holds it only where it is not that (a
# ledger made before the template could hold any). Every reader (and every seal) reads the view.
# A job names its pack by serial_id (the view gives gtin, serial).
CODER_JOB = [
    f"""CREATE TABLE IF NOT EXISTS coder_job_row (
        job_id INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_id TEXT NOT NULL REFERENCES batch (batch_id),
        serial_id INTEGER NOT NULL UNIQUE REFERENCES serial (serial_id), code TEXT,
        state TEXT NOT NULL DEFAULT 'queued' CHECK ({_CODER_JOB_STATE}))""",
    # code = head || serial || tail (head ends with AI 21); fixed once a job is written from it
    """CREATE TABLE IF NOT EXISTS coder_template (
        batch_id TEXT PRIMARY KEY REFERENCES batch (batch_id), head TEXT NOT NULL, tail TEXT NOT NULL) WITHOUT ROWID""",
    """CREATE TRIGGER IF NOT EXISTS coder_template_fixed BEFORE UPDATE ON coder_template
        BEGIN SELECT RAISE(ABORT, 'a batch''s code template never changes'); END""",
    """CREATE TRIGGER IF NOT EXISTS coder_template_kept BEFORE DELETE ON coder_template
        BEGIN SELECT RAISE(ABORT, 'a batch''s code template never changes'); END""",
    """CREATE VIEW IF NOT EXISTS coder_job AS SELECT j.job_id AS job_id, j.batch_id AS batch_id, s.gtin AS gtin,
        s.serial AS serial, coalesce(j.code, t.head || s.serial || t.tail) AS code, j.state AS state
        FROM coder_job_row j JOIN serial s ON s.serial_id = j.serial_id LEFT JOIN coder_template t ON t.batch_id = j.batch_id""",
    # the rows as they were stored before serial_id (gtin, serial; code as stored): the seals made then
    """CREATE VIEW IF NOT EXISTS coder_job_row_v1 AS SELECT j.job_id AS job_id, j.batch_id AS batch_id, s.gtin AS gtin,
        s.serial AS serial, j.code AS code, j.state AS state FROM coder_job_row j JOIN serial s ON s.serial_id = j.serial_id""",
    # a batch's jobs in order (its seal, the simulator's report); its queue (a few rows at any time)
    "CREATE INDEX IF NOT EXISTS coder_job_batch ON coder_job_row (batch_id)",
    "CREATE INDEX IF NOT EXISTS coder_job_queue ON coder_job_row (batch_id) WHERE state = 'queued'",
]
# coder_job_row as it was from the code template until serial_id (_migrate_coder_job makes it, then
# _migrate_coder_job_serial_id moves it on)
_CODER_JOB_V1 = [
    f"""CREATE TABLE coder_job_row (
        job_id INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_id TEXT NOT NULL REFERENCES batch (batch_id),
        gtin TEXT NOT NULL, serial TEXT NOT NULL, code TEXT,
        state TEXT NOT NULL DEFAULT 'queued' CHECK ({_CODER_JOB_STATE}),
        UNIQUE (gtin, serial),
        FOREIGN KEY (gtin, serial) REFERENCES serial (gtin, serial))""",
    *CODER_JOB[1:4],
    """CREATE VIEW coder_job AS SELECT j.job_id, j.batch_id, j.gtin, j.serial,
        coalesce(j.code, t.head || j.serial || t.tail) AS code, j.state
        FROM coder_job_row j LEFT JOIN coder_template t ON t.batch_id = j.batch_id""",
]

# A unit names its pack by serial_id (unit_row); the view unit gives the columns it had before, in
# their order, with the same values (readers, the seals made before), and takes writes the old way.
# read_serial: 0 where it is the unit's printed serial (nearly every read: no bytes), else the text read.
_UNIT_COLS = ("device_id, boot_id, unit_seq, batch_id, test, gtin, serial, inspected, read_serial, grade, verdict,"
              " verdict_reason, outcome, reason")
# the view's read_serial as unit_row keeps it (`serial_id`: the unit's serial_id then)
_READ_SERIAL_ROW = ("CASE WHEN NEW.read_serial = (SELECT serial FROM serial WHERE serial_id = {serial_id}) THEN 0"
                    " WHEN typeof(NEW.read_serial) IN ('integer', 'real') THEN CAST(NEW.read_serial AS TEXT)"
                    " ELSE NEW.read_serial END")
_SERIAL_ID_OF_NEW = "(SELECT serial_id FROM serial WHERE gtin = NEW.gtin AND serial = NEW.serial)"
# (gtin, serial) named a serial by a foreign key; NULL in either meant none
_UNIT_NAMES_A_SERIAL = (f"SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed') WHERE (NEW.gtin IS NOT NULL OR NEW.serial IS NOT NULL)"
                        f" AND {_SERIAL_ID_OF_NEW} IS NULL;")
UNIT = [
    f"""CREATE TABLE IF NOT EXISTS unit_row (
        device_id TEXT NOT NULL, boot_id INTEGER NOT NULL, unit_seq INTEGER NOT NULL,
        batch_id TEXT NOT NULL REFERENCES batch (batch_id),
        test INTEGER NOT NULL DEFAULT 0,
        serial_id INTEGER REFERENCES serial (serial_id),
        inspected INTEGER NOT NULL DEFAULT 0,
        read_serial CHECK (read_serial IS NOT 0 OR serial_id IS NOT NULL), grade TEXT,
        verdict TEXT CHECK (verdict IN ('PASS', 'FAIL')), verdict_reason TEXT,
        -- UNKNOWN: the host never heard it (host/ledger.py), until a person resolves it: PASSED or DESTROYED
        outcome TEXT CHECK ({_UNIT_OUTCOME}),
        reason TEXT,
        PRIMARY KEY (device_id, boot_id, unit_seq))""",
    "CREATE UNIQUE INDEX IF NOT EXISTS unit_serial_once ON unit_row (serial_id) WHERE serial_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS unit_batch ON unit_row (batch_id, outcome)",
    # a read recorded as the printed serial (0) would read as another serial
    """CREATE TRIGGER IF NOT EXISTS unit_read_serial_kept BEFORE UPDATE OF serial_id ON unit_row
        WHEN NEW.read_serial IS 0 AND NEW.serial_id IS NOT OLD.serial_id
        BEGIN SELECT RAISE(ABORT, 'a unit''s serial is fixed once its read is recorded as it'); END""",
    f"""CREATE VIEW IF NOT EXISTS unit AS SELECT u.device_id AS device_id, u.boot_id AS boot_id, u.unit_seq AS unit_seq,
        u.batch_id AS batch_id, u.test AS test, s.gtin AS gtin, s.serial AS serial, u.inspected AS inspected,
        CASE WHEN u.read_serial IS 0 THEN s.serial ELSE u.read_serial END AS read_serial, u.grade AS grade,
        u.verdict AS verdict, u.verdict_reason AS verdict_reason, u.outcome AS outcome, u.reason AS reason
        FROM unit_row u LEFT JOIN serial s ON s.serial_id = u.serial_id""",
    f"""CREATE TRIGGER IF NOT EXISTS unit_insert INSTEAD OF INSERT ON unit
        BEGIN {_UNIT_NAMES_A_SERIAL}
              INSERT INTO unit_row (device_id, boot_id, unit_seq, batch_id, test, serial_id, inspected, read_serial, grade,
                                    verdict, verdict_reason, outcome, reason)
              VALUES (NEW.device_id, NEW.boot_id, NEW.unit_seq, NEW.batch_id, coalesce(NEW.test, 0), {_SERIAL_ID_OF_NEW},
                      coalesce(NEW.inspected, 0), {_READ_SERIAL_ROW.format(serial_id=_SERIAL_ID_OF_NEW)}, NEW.grade,
                      NEW.verdict, NEW.verdict_reason, NEW.outcome, NEW.reason); END""",
    f"""CREATE TRIGGER IF NOT EXISTS unit_update INSTEAD OF UPDATE ON unit
        BEGIN {_UNIT_NAMES_A_SERIAL}
              UPDATE unit_row SET device_id = NEW.device_id, boot_id = NEW.boot_id, unit_seq = NEW.unit_seq,
                     batch_id = NEW.batch_id, test = NEW.test, serial_id = {_SERIAL_ID_OF_NEW}, inspected = NEW.inspected,
                     read_serial = {_READ_SERIAL_ROW.format(serial_id=_SERIAL_ID_OF_NEW)}, grade = NEW.grade,
                     verdict = NEW.verdict, verdict_reason = NEW.verdict_reason, outcome = NEW.outcome, reason = NEW.reason
              WHERE device_id = OLD.device_id AND boot_id = OLD.boot_id AND unit_seq = OLD.unit_seq; END""",
    """CREATE TRIGGER IF NOT EXISTS unit_delete INSTEAD OF DELETE ON unit
        BEGIN DELETE FROM unit_row WHERE device_id = OLD.device_id AND boot_id = OLD.boot_id AND unit_seq = OLD.unit_seq; END""",
]

# A pack is in at most one case: the primary key is the pack, by its serial_id (an integer: the
# (gtin, serial) key was 27 bytes in the row and as many again in its index). The view packed gives
# the rows as (gtin, serial, container_id): readers, writers of the old form, the seals made before.
PACKED = [
    """CREATE TABLE IF NOT EXISTS packed_row (
        serial_id INTEGER PRIMARY KEY REFERENCES serial (serial_id),
        container_id INTEGER NOT NULL REFERENCES container (container_id))""",
    "CREATE INDEX IF NOT EXISTS packed_by_container ON packed_row (container_id)",
    """CREATE VIEW IF NOT EXISTS packed AS SELECT s.gtin AS gtin, s.serial AS serial, p.container_id AS container_id
        FROM packed_row p JOIN serial s ON s.serial_id = p.serial_id""",
]
# On packed_row, so a direct write obeys them (a migration copies the rows first: its packs are in
# closed cases). A serial_id the INSERT into the view finds no serial for is -1: not commissioned.
PACKED_RULES = [
    """CREATE TRIGGER IF NOT EXISTS packed_only_commissioned BEFORE INSERT ON packed_row
        WHEN (SELECT state FROM serial WHERE serial_id = NEW.serial_id) IS NOT 'commissioned'
        BEGIN SELECT RAISE(ABORT, 'only a commissioned pack can be packed (destroyed, sampled, rejected or decommissioned packs cannot)'); END""",
    """CREATE TRIGGER IF NOT EXISTS packed_into_open_case BEFORE INSERT ON packed_row
        WHEN (SELECT level || '/' || state FROM container WHERE container_id = NEW.container_id) IS NOT 'case/open'
        BEGIN SELECT RAISE(ABORT, 'packs go only into an open case'); END""",
    """CREATE TRIGGER IF NOT EXISTS shipped_packs_fixed BEFORE DELETE ON packed_row
        WHEN EXISTS (SELECT 1 FROM container c JOIN shipped s
                     ON s.sscc IN (c.sscc, (SELECT sscc FROM container WHERE container_id = c.parent_id))
                     WHERE c.container_id = OLD.container_id)
        BEGIN SELECT RAISE(ABORT, 'this pack has been shipped: it left the site'); END""",
    # moved in place, a pack would skip both rules: it leaves its case and goes into another (rework)
    """CREATE TRIGGER IF NOT EXISTS packed_row_fixed BEFORE UPDATE ON packed_row
        BEGIN SELECT RAISE(ABORT, 'a pack changes case only by leaving one and going into another'); END""",
    """CREATE TRIGGER IF NOT EXISTS packed_insert INSTEAD OF INSERT ON packed
        BEGIN INSERT INTO packed_row (serial_id, container_id) VALUES
              (coalesce((SELECT serial_id FROM serial WHERE gtin = NEW.gtin AND serial = NEW.serial), -1), NEW.container_id); END""",
    """CREATE TRIGGER IF NOT EXISTS packed_delete INSTEAD OF DELETE ON packed
        BEGIN DELETE FROM packed_row WHERE serial_id = (SELECT serial_id FROM serial WHERE gtin = OLD.gtin AND serial = OLD.serial); END""",
]

# a pallet's cases (every reader names the pallet: parent_id = ...): an open case has none, so its row is
# not written here at its open and moved at its close (a page of the index's NULLs written at every commit)
CONTAINER_PARENT = "CREATE INDEX IF NOT EXISTS container_parent ON container (parent_id) WHERE parent_id IS NOT NULL"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS product (
        gtin TEXT PRIMARY KEY CHECK (length(gtin) = 14 AND gtin NOT GLOB '*[^0-9]*'),
        name TEXT NOT NULL,
        market TEXT NOT NULL CHECK (market IN ('EU_FMD', 'US_DSCSA')),
        company_prefix_len INTEGER NOT NULL CHECK (company_prefix_len BETWEEN 6 AND 12),
        nhrn_ai TEXT CHECK (nhrn_ai IS NULL OR nhrn_ai BETWEEN '710' AND '716'),
        nhrn TEXT)""",
    f"""CREATE TABLE IF NOT EXISTS batch (
        batch_id TEXT PRIMARY KEY,
        gtin TEXT NOT NULL REFERENCES product (gtin),
        lot TEXT NOT NULL CHECK (length(lot) BETWEEN 1 AND 20),
        -- a real date ('+0 days' normalises: date() alone keeps 02-30), or YYYY-MM-00: GS1's day 00
        -- (the label shows the month; it means the month's last day)
        expiry TEXT NOT NULL CONSTRAINT expiry_is_a_date CHECK (date(expiry, '+0 days') IS expiry OR (expiry GLOB '[0-9][0-9][0-9][0-9]-[01][0-9]-00' AND date(substr(expiry, 1, 8) || '01') IS NOT NULL)),
        planned INTEGER NOT NULL CHECK (planned > 0),
        case_size INTEGER NOT NULL CHECK (case_size > 0),
        pallet_size INTEGER NOT NULL CHECK (pallet_size > 0),
        state TEXT NOT NULL DEFAULT 'created' {_BATCH_STATES},
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        closed_at TEXT)""",
    # Where and what, for EPCIS (host/masterdata.py checks the values): locations (our sites with
    # their IANA time zone, partners without), a product's DSCSA master data, a batch's site and
    # read point. Tables of their own, so ledgers made before them just gain them.
    """CREATE TABLE IF NOT EXISTS location (
        sgln TEXT PRIMARY KEY CHECK (sgln LIKE 'urn:epc:id:sgln:%'),
        name TEXT NOT NULL CHECK (name <> ''),
        street TEXT, city TEXT, state TEXT, postal TEXT,
        country TEXT CHECK (country IS NULL OR (length(country) = 2 AND country NOT GLOB '*[^A-Z]*')),
        tz TEXT)""",
    """CREATE TABLE IF NOT EXISTS product_master (
        gtin TEXT PRIMARY KEY REFERENCES product (gtin),
        ndc TEXT CHECK (ndc IS NULL OR (length(ndc) = 11 AND ndc NOT GLOB '*[^0-9]*')),
        dosage_form TEXT, strength TEXT, net_content TEXT, manufacturer TEXT)""",
    """CREATE TABLE IF NOT EXISTS batch_site (
        batch_id TEXT PRIMARY KEY REFERENCES batch (batch_id),
        site TEXT NOT NULL REFERENCES location (sgln),
        read_point TEXT NOT NULL CHECK (read_point LIKE 'urn:epc:id:sgln:%'))""",
    # Pallets (or loose cases) that left the site: each SSCC once (host/ship.py).
    """CREATE TABLE IF NOT EXISTS shipment (
        shipment_id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, user TEXT NOT NULL CHECK (user <> ''),
        destination TEXT NOT NULL, po TEXT NOT NULL, desadv TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS shipped (
        sscc TEXT PRIMARY KEY REFERENCES container (sscc),
        shipment_id INTEGER NOT NULL REFERENCES shipment (shipment_id))""",
    """CREATE TRIGGER IF NOT EXISTS batch_lot_once BEFORE INSERT ON batch
        WHEN EXISTS (SELECT 1 FROM batch WHERE gtin = NEW.gtin AND lot = NEW.lot)
        BEGIN SELECT RAISE(ABORT, 'this lot is already used by another batch of the same GTIN'); END""",
    # A large pool is staged in chunks (short write locks) and published in one step: until then
    # its serials exist (so they stay unique) but nobody can use them (host/serials.py).
    """CREATE TABLE IF NOT EXISTS serial_import (
        import_id INTEGER PRIMARY KEY AUTOINCREMENT, gtin TEXT NOT NULL REFERENCES product (gtin),
        source TEXT NOT NULL, count INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'staging' CHECK (state IN ('staging', 'published', 'abandoned')),
        started_at REAL NOT NULL, heartbeat REAL NOT NULL, published_at REAL)""",
    """CREATE TRIGGER IF NOT EXISTS serial_import_final BEFORE UPDATE OF state ON serial_import
        WHEN OLD.state <> 'staging' AND NEW.state <> OLD.state
        BEGIN SELECT RAISE(ABORT, 'a published or abandoned serial import is final'); END""",
    SERIAL,
    SERIAL_BORN,
    # Serials handed to another system over OPEN-SCS (host/opcua/openscs.py): out of this pool, never
    # issued here, until that system returns them ('returned'); 'used' ones (encoded there) never come back.
    """CREATE TABLE IF NOT EXISTS serial_grant (
        token TEXT NOT NULL, gtin TEXT NOT NULL, serial TEXT NOT NULL, lot TEXT,
        state TEXT NOT NULL DEFAULT 'out' CHECK (state IN ('out', 'returned', 'used')),
        user TEXT NOT NULL CHECK (user <> ''), at REAL NOT NULL,
        PRIMARY KEY (token, gtin, serial),
        FOREIGN KEY (gtin, serial) REFERENCES serial (gtin, serial)) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX IF NOT EXISTS serial_grant_once ON serial_grant (gtin, serial) WHERE state <> 'returned'",
    # the foreign key's child index: removing an abandoned import's serial looks here, not at every grant
    "CREATE INDEX IF NOT EXISTS serial_grant_of ON serial_grant (gtin, serial)",
    """CREATE TRIGGER IF NOT EXISTS serial_grant_from_pool BEFORE INSERT ON serial_grant
        WHEN NEW.state <> 'out' OR (SELECT state FROM serial WHERE gtin = NEW.gtin AND serial = NEW.serial)
             IS NOT (CASE WHEN NEW.lot IS NULL THEN 'available' ELSE 'allocated' END)
        BEGIN SELECT RAISE(ABORT, 'only a serial of the pool (or allocated to the lot) can be handed out'); END""",
    """CREATE TRIGGER IF NOT EXISTS serial_grant_final BEFORE UPDATE ON serial_grant
        WHEN NOT (OLD.state = 'out' AND NEW.state IN ('returned', 'used') AND NEW.token = OLD.token
                  AND NEW.gtin = OLD.gtin AND NEW.serial = OLD.serial)
        BEGIN SELECT RAISE(ABORT, 'a handed-out serial is returned or used, once'); END""",
    # Serials that came from an upstream OPEN-SCS pool manager and a batch close left unused
    # (host/opcua/client.py return_unused): 'due' until the upstream took them back ('returned');
    # from 'due' on they are out of this pool for good.
    """CREATE TABLE IF NOT EXISTS serial_upstream_return (
        gtin TEXT NOT NULL, serial TEXT NOT NULL, source TEXT NOT NULL, batch_id TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'due' CHECK (state IN ('due', 'returned')), at REAL NOT NULL,
        PRIMARY KEY (gtin, serial),
        FOREIGN KEY (gtin, serial) REFERENCES serial (gtin, serial)) WITHOUT ROWID""",
    """CREATE TRIGGER IF NOT EXISTS serial_upstream_return_final BEFORE UPDATE ON serial_upstream_return
        WHEN NOT (OLD.state = 'due' AND NEW.state = 'returned' AND NEW.gtin = OLD.gtin AND NEW.serial = OLD.serial)
        BEGIN SELECT RAISE(ABORT, 'a serial due upstream is returned, once'); END""",
    """CREATE TRIGGER IF NOT EXISTS serial_upstream_return_no_delete BEFORE DELETE ON serial_upstream_return
        BEGIN SELECT RAISE(ABORT, 'serials due upstream are never forgotten'); END""",
    """CREATE TRIGGER IF NOT EXISTS serial_returned_upstream_not_granted BEFORE INSERT ON serial_grant
        WHEN EXISTS (SELECT 1 FROM serial_upstream_return r WHERE r.gtin = NEW.gtin AND r.serial = NEW.serial)
        BEGIN SELECT RAISE(ABORT, 'this serial goes back to the upstream pool it came from'); END""",
    # partial: serial_pick holds the available serials (covering the pick, import_id for USABLE),
    # serial_batch those of a batch; a new pool's rows write one index, not two (host/serials.py)
    SERIAL_PICK,
    SERIAL_BATCH,
    *BATCH_REF,
    SERIAL_HISTORY,
    """CREATE TRIGGER IF NOT EXISTS serial_history_no_update BEFORE UPDATE ON serial_history
        BEGIN SELECT RAISE(ABORT, 'a serial''s history is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS serial_history_no_delete BEFORE DELETE ON serial_history
        BEGIN SELECT RAISE(ABORT, 'a serial''s history is append-only'); END""",
    SERIAL_TRAIL,
    SERIAL_HISTORY_V2,
    # ... except those of an import abandoned before it was published: they were never in a pool
    """CREATE TRIGGER IF NOT EXISTS serial_never_deleted BEFORE DELETE ON serial
        WHEN OLD.import_id IS NULL OR (SELECT state FROM serial_import WHERE import_id = OLD.import_id) IS NOT 'abandoned'
        BEGIN SELECT RAISE(ABORT, 'serials are never deleted'); END""",
    SERIAL_TRANSITION,
    """CREATE TRIGGER IF NOT EXISTS serial_identity_fixed BEFORE UPDATE OF gtin, serial ON serial
        BEGIN SELECT RAISE(ABORT, 'a serial''s identity never changes'); END""",
    SERIAL_LOG,
    # Every device event once, keyed by the device's identity; the row is the durable copy acked.
    # The boot as a small integer, msg the protocol's id, body/body2 the other fields packed as the
    # schema lays them out, or JSON text (host/devevents.py, which every reader goes through).
    *DEVICE_EVENT,
    *UNIT,
    *CODER_JOB,
    # Cases and pallets. An SSCC is given when the container closes and is never given again.
    f"""CREATE TABLE IF NOT EXISTS container (
        container_id INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_id TEXT NOT NULL REFERENCES batch (batch_id),
        level TEXT NOT NULL CHECK (level IN ('case', 'pallet')),
        sscc TEXT UNIQUE CHECK (sscc IS NULL OR (length(sscc) = 18 AND sscc NOT GLOB '*[^0-9]*')),
        parent_id INTEGER REFERENCES container (container_id),
        state TEXT NOT NULL DEFAULT 'open' CHECK ({_CONTAINER_STATE}),
        partial INTEGER NOT NULL DEFAULT 0,
        closed_at TEXT)""",
    """CREATE TRIGGER IF NOT EXISTS container_never_deleted BEFORE DELETE ON container
        BEGIN SELECT RAISE(ABORT, 'containers (and their SSCCs) are never deleted'); END""",
    """CREATE TRIGGER IF NOT EXISTS sscc_fixed BEFORE UPDATE OF sscc ON container
        WHEN OLD.sscc IS NOT NULL BEGIN SELECT RAISE(ABORT, 'an SSCC is never changed or reused'); END""",
    """CREATE TABLE IF NOT EXISTS sscc_counter (
        company_prefix TEXT PRIMARY KEY, next_ref INTEGER NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS sscc_counter_forward BEFORE UPDATE ON sscc_counter
        WHEN NEW.next_ref <= OLD.next_ref BEGIN SELECT RAISE(ABORT, 'the SSCC counter only moves forward'); END""",
    *PACKED,
    "CREATE INDEX IF NOT EXISTS container_open ON container (batch_id, level, state)",
    CONTAINER_PARENT,
    *PACKED_RULES,
    SHIPPED_CONTAINER_FIXED,
    """CREATE TABLE IF NOT EXISTS rework (
        rework_id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, user TEXT NOT NULL CHECK (user <> ''),
        action TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL CHECK (reason <> ''), detail TEXT)""",
    # Every device boot each batch's agent has opened a session with: a restarted agent that finds
    # its device's boot here resumes it (the line may have run on) instead of starting it afresh.
    """CREATE TABLE IF NOT EXISTS device_boot (
        device_id TEXT NOT NULL, boot_id INTEGER NOT NULL, batch_id TEXT NOT NULL, first_seen REAL NOT NULL,
        PRIMARY KEY (device_id, boot_id, batch_id)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS alarm_log (
        alarm_id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, source TEXT NOT NULL,
        alarm TEXT NOT NULL, detail TEXT)""",
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY, at TEXT NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL,
        detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL UNIQUE)""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    # People (host/users.py): a ledger without any keeps the free-text --user of before. The password
    # column holds only the scrypt hash with its salt and parameters. Users are disabled, never deleted.
    """CREATE TABLE IF NOT EXISTS users (
        name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 2 AND 32 AND name NOT GLOB '*[^a-z0-9._-]*'),
        full_name TEXT NOT NULL CHECK (trim(full_name) <> ''),
        role TEXT NOT NULL CHECK (role IN ('operator', 'engineer', 'qa', 'admin')),
        password TEXT NOT NULL CHECK (password LIKE 'scrypt$%'),
        enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        failures INTEGER NOT NULL DEFAULT 0, locked_until REAL,
        created_at TEXT NOT NULL, changed_at TEXT NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS users_never_deleted BEFORE DELETE ON users
        BEGIN SELECT RAISE(ABORT, 'users are disabled, never deleted (their records name them)'); END""",
    # Site settings (lockout limit, ...): host/users.py SETTINGS holds the names and defaults.
    """CREATE TABLE IF NOT EXISTS setting (name TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    # Electronic signatures (host/signatures.py): each is also an audit record carrying the same
    # fields and the hash of the signed record's content; rows are never changed.
    """CREATE TABLE IF NOT EXISTS signature (
        signature_id INTEGER PRIMARY KEY AUTOINCREMENT,
        record_kind TEXT NOT NULL, record_id TEXT NOT NULL,
        meaning TEXT NOT NULL CHECK (meaning IN ('reviewed', 'approved', 'released', 'performed')),
        user TEXT NOT NULL REFERENCES users (name), full_name TEXT NOT NULL,
        at TEXT NOT NULL, local_at TEXT NOT NULL, tz TEXT NOT NULL,
        content_sha256 TEXT NOT NULL CHECK (length(content_sha256) = 64),
        audit_seq INTEGER NOT NULL UNIQUE REFERENCES audit (seq))""",
    "CREATE INDEX IF NOT EXISTS signature_of ON signature (record_kind, record_id)",
    """CREATE TRIGGER IF NOT EXISTS signature_no_update BEFORE UPDATE ON signature
        BEGIN SELECT RAISE(ABORT, 'a signature is never changed'); END""",
    """CREATE TRIGGER IF NOT EXISTS signature_no_delete BEFORE DELETE ON signature
        BEGIN SELECT RAISE(ABORT, 'a signature is never deleted'); END""",
]


BUSY_TIMEOUT_S = 30.0  # how long one statement waits for another writer's lock
CACHE_KIB = 65536  # page cache per connection, at most (it grows only with the pages read)
# a ledger made before serial_id has every big table rewritten once at its first open: said on stderr
# (logging) when it will take this long, at MIGRATE_MB_PER_S (the released ledger of 100k units,
# 75 MB: 7-8 s, 3.2-3.6 CPU-s on a loaded 2-core machine; tests/host/test_migrate_released.py)
MIGRATE_NOTICE_S = 2.0
MIGRATE_MB_PER_S = 10.0


def connect(path: str) -> sqlite3.Connection:
    """Open (and create) the ledger: WAL, foreign keys on, explicit transactions only."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before the device is told it is stored (it then drops the events);
    # NORMAL would survive a process crash but a power cut of the PC could roll back acknowledged events
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    # a big batch writes random-key indexes (serial, unit, coder_job, packed: ~40 MB each at 1M units);
    # with SQLite's default 2 MB cache each row re-reads their pages from the OS
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    # a migration that rebuilds a table others refer to runs with foreign keys off (SQLite ignores
    # the pragma inside a transaction), then every foreign key is checked before it commits
    rebuilds = _rebuilds_a_parent(conn)
    about, t0 = (_migration_s(conn) if rebuilds else None), time.perf_counter()
    if about is not None and about >= MIGRATE_NOTICE_S:
        log.warning("serialine: migrating this ledger to the current form (once; about %.0f s) …", about)
    if rebuilds:
        conn.execute("PRAGMA foreign_keys=OFF")
    try:
        with transaction(conn):
            _migrate(conn)
            for statement in SCHEMA:
                conn.execute(statement)
            devevents.check_layout(conn)
            try:
                from serialine.host.epcis import outbox
                outbox.ensure_schema(conn)
            except ImportError:  # pragma: no cover - EPCIS package not installed
                pass
            if rebuilds:
                _foreign_keys_hold(conn)
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
    if about is not None and about >= MIGRATE_NOTICE_S:
        log.warning("serialine: ledger migrated in %.1f s", time.perf_counter() - t0)
    return conn


def _migration_s(conn: sqlite3.Connection) -> float:
    """About how long the migration of this ledger takes (it rewrites about every page)."""
    (pages,), (size,) = conn.execute("PRAGMA page_count").fetchone(), conn.execute("PRAGMA page_size").fetchone()
    return pages * size / 1e6 / MIGRATE_MB_PER_S


def _rebuilds_a_parent(conn: sqlite3.Connection) -> bool:
    """A migration below will rebuild a table other tables refer to (serial: _migrate_serial_rowid)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(serial)")}
    return bool(cols) and "serial_id" not in cols


def _foreign_keys_hold(conn: sqlite3.Connection) -> None:
    """IntegrityError (one line; the caller's transaction leaves the ledger as it was) unless every
    foreign key of the ledger finds its row."""
    bad = conn.execute("PRAGMA foreign_key_check").fetchall()
    if bad:
        tables = ", ".join(sorted({f"{t} -> {parent}" for t, _, parent, _ in bad}))
        raise sqlite3.IntegrityError(f"ledger migration: {len(bad)} row(s) would refer to rows that are not there"
                                     f" ({tables}); this ledger is left as it was")


def _migrate(conn: sqlite3.Connection) -> None:
    """Ledgers made before staged serial imports gain the column (and the delete rule that knows it);
    before abort/reopen, the batch states. A CHECK that only admits more values changes no stored
    row, so it is edited in place (SQLite's documented way: writable_schema, schema_version + 1)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(serial)")}
    if cols and "import_id" not in cols:
        conn.execute("ALTER TABLE serial ADD COLUMN import_id INTEGER REFERENCES serial_import (import_id)")
        conn.execute("DROP TRIGGER IF EXISTS serial_never_deleted")
    _migrate_serial_rowid(conn)  # before the other tables' migrations to serial_id
    # before partial pool indexes and one insert trigger (host/serials.py: generation speed)
    for name, sql in (("serial_pick", SERIAL_PICK), ("serial_batch", SERIAL_BATCH)):
        _drop_if_changed(conn, "index", name, sql)
    conn.execute("DROP TRIGGER IF EXISTS serial_staged_only_while_staging")
    if _drop_if_changed(conn, "trigger", "serial_transition", SERIAL_TRANSITION):
        for name in _OLD_SERIAL_TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    conn.execute("DROP TRIGGER IF EXISTS serial_born_available")
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='batch'").fetchone()
    if row and _OLD_BATCH_STATES in row[0]:
        (version,) = conn.execute("PRAGMA schema_version").fetchone()
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_master SET sql=? WHERE type='table' AND name='batch'",
                     (row[0].replace(_OLD_BATCH_STATES, _BATCH_STATES),))
        conn.execute(f"PRAGMA schema_version={version + 1}")
        conn.execute("PRAGMA writable_schema=OFF")
    _migrate_serial_history(conn)
    _migrate_serial_history_ref(conn)  # after it and _migrate_serial_rowid: it needs serial_id
    _migrate_device_event(conn)
    _migrate_device_event_at(conn)
    _migrate_coder_job(conn)
    _migrate_coder_job_serial_id(conn)  # after _migrate_serial_rowid: they need serial_id
    _migrate_unit_row(conn)
    _migrate_packed_row(conn)  # after _migrate_serial_rowid: it needs serial_id
    _migrate_in_lists(conn)
    _drop_if_changed(conn, "index", "container_parent", CONTAINER_PARENT)  # before it was partial


_SERIAL_COLS = "gtin, serial, state, batch_id, source, import_id"


def _migrate_serial_rowid(conn: sqlite3.Connection) -> None:
    """Ledgers made before serial_id (serial WITHOUT ROWID, primary key (gtin, serial)): the table is
    rebuilt in its rowid form (SQLite's way: new table, copy, drop, rename; foreign keys off, connect()
    sees to it), serial_id given in (gtin, serial) order, its indexes and triggers made anew by SCHEMA.
    The other tables' foreign keys still name serial (gtin, serial): the UNIQUE index serves them. Every
    row reads back as it was (the seals made before read these columns); else nothing changes."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(serial)")}
    if not cols or "serial_id" in cols:
        return
    conn.execute(SERIAL.replace("serial (", "serial_new (", 1))
    conn.execute(f"INSERT INTO serial_new ({_SERIAL_COLS}) SELECT {_SERIAL_COLS} FROM serial ORDER BY gtin, serial")
    _reads_back(conn, "serial", "serial", "serial_new", _SERIAL_COLS)
    conn.execute("DROP TABLE serial")  # its indexes and triggers with it
    _rename(conn, "serial_new", "serial")  # (the modern rename checks every trigger naming serial, now absent)


def _drop_if_changed(conn: sqlite3.Connection, kind: str, name: str, sql: str) -> bool:
    """Drop the index, trigger or view `name` if the ledger holds it made from other text than `sql`
    (an earlier schema's): SCHEMA makes it anew. → whether it was dropped."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type=? AND name=?", (kind, name)).fetchone()
    if row and row[0] != sql.replace(" IF NOT EXISTS", ""):
        conn.execute(f"DROP {kind.upper()} {name}")
        return True
    return False


def _reads_back(conn: sqlite3.Connection, what: str, old: str, new: str, cols: str) -> None:
    """A migration's check: every row of the old table `old` reads back from `new` (its new form as
    the seals made before read it), the same rows; else IntegrityError, and the caller's
    transaction leaves the ledger as it was."""
    (differ,) = conn.execute(f"SELECT count(*) FROM (SELECT {cols} FROM {old} EXCEPT SELECT {cols} FROM {new})").fetchone()
    (n_old,), (n_new,) = (conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in (old, new))
    if differ or n_old != n_new:
        raise sqlite3.IntegrityError(f"{what}: {differ or abs(n_old - n_new)} row(s) would not read back as stored;"
                                     " this ledger is left as it was")


def _migrate_device_event(conn: sqlite3.Connection) -> None:
    """Ledgers made before the compact device events (device_id, boot_id, event_seq, msg_name,
    unit_seq, body JSON, received_at): each boot gets its ref in (device_id, boot_id) order, so
    (boot_ref, event_seq) orders the rows as before; a body in the form the ledger wrote is packed,
    any other kept as its text. The view device_event_v1 gives every row back in the old columns,
    which is checked here row for row (the seals made before read it): not exact, nothing changes."""
    _drop_if_changed(conn, "view", "device_event_v1", devevents.DEVICE_EVENT_V1)
    if "msg_name" not in {r[1] for r in conn.execute("PRAGMA table_info(device_event)")}:
        return
    conn.execute("DROP VIEW IF EXISTS device_event_v2")  # (it reads the table as it is now)
    conn.execute("ALTER TABLE device_event RENAME TO device_event_v0")
    for statement in DEVICE_EVENT:
        conn.execute(statement)
    conn.execute("INSERT INTO device_boot_ref (device_id, boot_id) SELECT DISTINCT device_id, boot_id"
                 " FROM device_event_v0 ORDER BY device_id, boot_id")
    conn.execute(devevents.migrate_v1_sql("device_event_v0"))
    _reads_back(conn, "device_event", "device_event_v0", "device_event_v1", ", ".join(devevents.SEALED_V1))
    conn.execute("DROP TABLE device_event_v0")


def _migrate_device_event_at(conn: sqlite3.Connection) -> None:
    """Ledgers made before a device event's time counted from its boot's t0 (received_at, ms since
    1970): every boot gets t0 = 0 and the column is renamed, so each row stays as it was and reads as
    before (t0 + at); only boots seen from now on count from their own t0. The view device_event_v2
    gives every row back in the columns of before, checked here row for row (the seals made then read
    it): not exact, nothing changes."""
    _drop_if_changed(conn, "view", "device_event_v2", devevents.DEVICE_EVENT_V2)
    if "received_at" not in {r[1] for r in conn.execute("PRAGMA table_info(device_event)")}:
        return
    conn.execute("DROP VIEW IF EXISTS device_event_v1")  # (they read the column; made anew below)
    conn.execute("DROP VIEW IF EXISTS device_event_v2")
    conn.execute(f"CREATE TEMP TABLE device_event_v2_rows AS SELECT {', '.join(devevents.SEALED_V2)} FROM device_event")
    conn.execute("ALTER TABLE device_boot_ref ADD COLUMN t0 INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE device_event RENAME COLUMN received_at TO at")
    for statement in DEVICE_EVENT:
        conn.execute(statement)
    _reads_back(conn, "device_event", "temp.device_event_v2_rows", "device_event_v2", ", ".join(devevents.SEALED_V2))
    conn.execute("DROP TABLE temp.device_event_v2_rows")


def serial_trail(conn: sqlite3.Connection, gtin: str, serial: str) -> list[tuple]:
    """A serial's history, oldest first: [(seq, ISO time, old state, new state, batch)]; ValueError
    if there is no such serial."""
    if conn.execute("SELECT 1 FROM serial WHERE gtin=? AND serial=?", (gtin, serial)).fetchone() is None:
        raise ValueError(f"no serial {serial!r} of GTIN {gtin} in this ledger")
    # (SQLite pushes the serial's terms into the view's window partition: a scan, no sort of the whole history)
    return conn.execute("SELECT seq, at, old_state, new_state, batch_id FROM serial_trail WHERE gtin = ? AND serial = ?"
                        " ORDER BY seq", (gtin, serial)).fetchall()


def _migrate_serial_history(conn: sqlite3.Connection) -> None:
    """Ledgers made before the compact serial history (gtin, serial, old_state, new_state, batch_id,
    at text): that table becomes serial_history_v1, kept as it was (the audit seals made before
    cover it, host/audit.py), and its rows are copied into the compact table, so one table holds
    every serial's whole history. A row the compact form cannot say (no batch, or a GTIN not its
    batch's: never written by this ledger) stays only in serial_history_v1. The compact form's
    first version (serials as text, no seal of a released ledger covers it) gets its serials keyed."""
    cols = {name: kind for _, name, kind, *_ in conn.execute("PRAGMA table_info(serial_history)")}
    for kind, name, sql in (("trigger", "serial_log", SERIAL_LOG), ("view", "serial_trail", SERIAL_TRAIL)):
        _drop_if_changed(conn, kind, name, sql)
    if "serial_id" not in cols:
        conn.execute("DROP VIEW IF EXISTS serial_history_v2")  # (it reads the table as it is now)
    if cols.get("serial") == "TEXT" and "old_state" not in cols:  # the first compact form kept serials as text
        conn.execute("DROP VIEW IF EXISTS serial_trail")  # (both read the table; SCHEMA makes them anew)
        conn.execute("DROP TRIGGER IF EXISTS serial_log")
        conn.execute(_SERIAL_HISTORY_V2_TABLE.replace("serial_history", "serial_history_keyed"))
        conn.execute(f"INSERT INTO serial_history_keyed SELECT seq, batch_id, {serial_key_sql('serial')}, state, at"
                     " FROM serial_history ORDER BY seq")
        conn.execute("DROP TABLE serial_history")
        conn.execute("ALTER TABLE serial_history_keyed RENAME TO serial_history")
    if "old_state" not in cols:
        return
    conn.execute("ALTER TABLE serial_history RENAME TO serial_history_v1")
    for what in ("UPDATE", "DELETE"):
        conn.execute(f"""CREATE TRIGGER serial_history_v1_no_{what.lower()} BEFORE {what} ON serial_history_v1
            BEGIN SELECT RAISE(ABORT, 'a serial''s history is append-only'); END""")
    conn.execute(_SERIAL_HISTORY_V2_TABLE)
    conn.execute(f"""INSERT INTO serial_history (batch_id, serial, state, at)
        SELECT h.batch_id, {serial_key_sql("h.serial")}, {state_code_sql("h.new_state")}, {ms_sql("h.at")}
        FROM serial_history_v1 h JOIN batch b ON b.batch_id = h.batch_id AND b.gtin = h.gtin
        WHERE h.new_state IN ({_states}) AND julianday(h.at) IS NOT NULL ORDER BY h.rowid""")


def _migrate_serial_history_ref(conn: sqlite3.Connection) -> None:
    """Every batch gets its ref (batch_ref), t0 its history's first time (else its creation); a ledger
    whose serial_history is of the form before (seq, batch_id, serial key, state, ms since 1970) gets
    its rows copied with the same seq by serial_id and batch ref, and the view serial_history_v2 gives
    each back in the old columns, checked here row for row (the seals made before read it): not
    exact, nothing changes."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='batch'").fetchone() is None:
        return  # a new ledger: SCHEMA makes it all
    _drop_if_changed(conn, "view", "serial_history_v2", SERIAL_HISTORY_V2)
    for statement in BATCH_REF:
        conn.execute(statement)
    old = "batch_id" in {r[1] for r in conn.execute("PRAGMA table_info(serial_history)")}
    if old:
        conn.execute("DROP VIEW IF EXISTS serial_trail")  # (they read the table; SCHEMA makes them anew)
        conn.execute("DROP TRIGGER IF EXISTS serial_log")
        conn.execute("ALTER TABLE serial_history RENAME TO serial_history_v2_rows")
    first = ("(SELECT batch_id, min(at) AS t0 FROM serial_history_v2_rows GROUP BY batch_id)" if old
             else "(SELECT NULL AS batch_id, NULL AS t0)")
    conn.execute(f"""INSERT INTO batch_ref (batch_id, ref, t0)
        SELECT b.batch_id, (SELECT coalesce(max(ref), 0) FROM batch_ref) + row_number() OVER (ORDER BY b.rowid),
               coalesce(f.t0, {ms_sql("b.created_at")}, {ms_sql("'now'")})
        FROM batch b LEFT JOIN {first} f ON f.batch_id = b.batch_id WHERE b.batch_id NOT IN (SELECT batch_id FROM batch_ref)""")
    if not old:
        return
    conn.execute(SERIAL_HISTORY)
    conn.execute(f"""INSERT INTO serial_history (seq, serial_id, batch_ref, state, at)
        SELECT o.seq, s.serial_id, r.ref, o.state, o.at - r.t0 FROM serial_history_v2_rows o
        JOIN batch_ref r ON r.batch_id = o.batch_id JOIN batch b ON b.batch_id = o.batch_id
        JOIN serial s ON s.gtin = b.gtin AND s.serial = {serial_text_sql("o.serial")} ORDER BY o.seq""")
    conn.execute(SERIAL_HISTORY_V2)
    _reads_back(conn, "serial_history", "serial_history_v2_rows", "serial_history_v2", "seq, batch_id, serial, state, at")
    conn.execute("DROP TABLE serial_history_v2_rows")


def _migrate_coder_job(conn: sqlite3.Connection) -> None:
    """Ledgers made before the code template (coder_job a table with each job's code): each batch's
    template is read off its first job, its rows are copied into coder_job_row with the code left out
    where the template gives it, and the view coder_job reads every row back as it was, which is
    checked here (the seals made before read it): not exact, nothing changes."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='coder_job'").fetchone() is None:
        return
    conn.execute("DROP INDEX IF EXISTS coder_job_queue")
    conn.execute("ALTER TABLE coder_job RENAME TO coder_job_v0")
    for statement in _CODER_JOB_V1:
        conn.execute(statement)
    # the first GS ends the lot, the only variable field before AI 21 (host/ledger.py _template)
    conn.execute("""INSERT INTO coder_template (batch_id, head, tail)
        SELECT j.batch_id, substr(code, 1, instr(code, char(29) || '21') + 2),
               substr(code, instr(code, char(29) || '21') + 3 + length(serial))
        FROM (SELECT min(job_id) AS first FROM coder_job_v0 GROUP BY batch_id) f JOIN coder_job_v0 j ON j.job_id = f.first
        WHERE instr(code, char(29) || '21') > 0
          AND substr(code, instr(code, char(29) || '21') + 3, length(serial)) = serial""")
    conn.execute("""INSERT INTO coder_job_row (job_id, batch_id, gtin, serial, code, state)
        SELECT j.job_id, j.batch_id, j.gtin, j.serial,
               CASE WHEN j.code IS t.head || j.serial || t.tail THEN NULL ELSE j.code END, j.state
        FROM coder_job_v0 j LEFT JOIN coder_template t ON t.batch_id = j.batch_id ORDER BY j.job_id""")
    # a job_id once given is never given again (AUTOINCREMENT)
    (given,) = conn.execute("SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name IN ('coder_job', 'coder_job_v0',"
                            " 'coder_job_row')").fetchone()
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'coder_job_row'")
    conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'coder_job_row', max(?, coalesce(max(job_id), 0))"
                 " FROM coder_job_row", (given,))
    _reads_back(conn, "coder_job", "coder_job_v0", "coder_job", "job_id, batch_id, gtin, serial, code, state")
    conn.execute("DROP TABLE coder_job_v0")


def _rename(conn: sqlite3.Connection, table: str, to: str) -> None:
    """A plain rename: triggers and views that name `table` keep naming it (the view of that name made
    next), where the modern rename would point them at `to`, which the migration drops."""
    conn.execute("PRAGMA legacy_alter_table=ON")
    conn.execute(f"ALTER TABLE {table} RENAME TO {to}")
    conn.execute("PRAGMA legacy_alter_table=OFF")


def _migrate_coder_job_serial_id(conn: sqlite3.Connection) -> None:
    """Ledgers made before serial_id in coder_job_row (gtin, serial): the rows are copied with their
    serial's serial_id, job_id and sqlite_sequence kept; the view coder_job_row_v1 reads every row
    back as it was, which is checked here (the seals made before read it): not exact, nothing changes."""
    if "gtin" not in {r[1] for r in conn.execute("PRAGMA table_info(coder_job_row)")}:
        return
    for name in ("VIEW coder_job", "VIEW coder_job_row_v1", "INDEX coder_job_batch", "INDEX coder_job_queue"):
        conn.execute(f"DROP {name.replace(' ', ' IF EXISTS ', 1)}")
    _rename(conn, "coder_job_row", "coder_job_row_v0")  # (its sqlite_sequence row too)
    for statement in CODER_JOB:
        conn.execute(statement)
    conn.execute("""INSERT INTO coder_job_row (job_id, batch_id, serial_id, code, state)
        SELECT j.job_id, j.batch_id, s.serial_id, j.code, j.state
        FROM coder_job_row_v0 j JOIN serial s ON s.gtin = j.gtin AND s.serial = j.serial ORDER BY j.job_id""")
    # a job_id once given is never given again (AUTOINCREMENT)
    (given,) = conn.execute("SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name IN ('coder_job_row',"
                            " 'coder_job_row_v0')").fetchone()
    conn.execute("DELETE FROM sqlite_sequence WHERE name IN ('coder_job_row', 'coder_job_row_v0')")
    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('coder_job_row', ?)", (given,))
    _reads_back(conn, "coder_job_row", "coder_job_row_v0", "coder_job_row_v1", "job_id, batch_id, gtin, serial, code, state")
    conn.execute("DROP TABLE coder_job_row_v0")


def _migrate_unit_row(conn: sqlite3.Connection) -> None:
    """Ledgers made before unit_row (the table unit with gtin, serial): the rows are copied with their
    serial's serial_id (a read of the printed serial kept as 0), and the view unit reads every row
    back as it was, which is checked here (the seals made before read it): not exact, nothing changes."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='unit'").fetchone() is None:
        return
    _rename(conn, "unit", "unit_v0")
    for name in ("unit_serial_once", "unit_batch"):
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    for statement in UNIT:
        conn.execute(statement)
    conn.execute("""INSERT INTO unit_row (device_id, boot_id, unit_seq, batch_id, test, serial_id, inspected, read_serial,
                                          grade, verdict, verdict_reason, outcome, reason)
        SELECT u.device_id, u.boot_id, u.unit_seq, u.batch_id, u.test, s.serial_id, u.inspected,
               CASE WHEN u.read_serial = s.serial THEN 0 ELSE u.read_serial END, u.grade, u.verdict, u.verdict_reason,
               u.outcome, u.reason
        FROM unit_v0 u LEFT JOIN serial s ON s.gtin = u.gtin AND s.serial = u.serial ORDER BY 1, 2, 3""")
    _reads_back(conn, "unit", "unit_v0", "unit", _UNIT_COLS)
    conn.execute("DROP TABLE unit_v0")


def _migrate_packed_row(conn: sqlite3.Connection) -> None:
    """Ledgers made before packed_row (packed a table keyed by (gtin, serial)): its rows are copied
    into packed_row by their serial's serial_id, and the view packed reads every one back as it was,
    which is checked here (the seals made before read it): not exact, nothing changes. The rules
    are made anew on packed_row by SCHEMA after the copy (its packs are in closed cases)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='packed'").fetchone() is None:
        return
    for name in ("packed_only_commissioned", "packed_into_open_case", "shipped_packs_fixed"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    conn.execute("DROP INDEX IF EXISTS packed_by_container")
    _rename(conn, "packed", "packed_v0")
    for statement in PACKED:
        conn.execute(statement)
    conn.execute("INSERT INTO packed_row (serial_id, container_id) SELECT s.serial_id, p.container_id"
                 " FROM packed_v0 p JOIN serial s ON s.gtin = p.gtin AND s.serial = p.serial ORDER BY s.serial_id")
    _reads_back(conn, "packed", "packed_v0", "packed", "gtin, serial, container_id")
    conn.execute("DROP TABLE packed_v0")


def _migrate_in_lists(conn: sqlite3.Connection) -> None:
    """Ledgers made before the host path's CHECKs were `=` chains (_one_of) get them edited in place:
    the same values are admitted, so no stored row changes (as for the batch states in _migrate);
    shipped_container_fixed is made again (SCHEMA) if it is the one with an IN list."""
    _drop_if_changed(conn, "trigger", "shipped_container_fixed", SHIPPED_CONTAINER_FIXED)
    for table, (old, new) in _IN_LIST_CHECKS.items():
        row = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
        if row and old in row[0]:
            (version,) = conn.execute("PRAGMA schema_version").fetchone()
            conn.execute("PRAGMA writable_schema=ON")
            conn.execute("UPDATE sqlite_master SET sql=? WHERE type='table' AND name=?", (row[0].replace(old, new), table))
            conn.execute(f"PRAGMA schema_version={version + 1}")
            conn.execute("PRAGMA writable_schema=OFF")


def id_array(ids) -> str:
    """Integer ids as the JSON array a statement over many rows reads with json_each (one statement,
    not one a row: each row's statement paid its own journal and trigger frames)."""
    return "[" + ",".join(map(str, ids)) + "]"


def file_of(conn: sqlite3.Connection) -> str:
    """The path of the ledger's file ("" for an in-memory ledger)."""
    return next((f for _, name, f in conn.execute("PRAGMA database_list") if name == "main"), "")


class transaction:
    """`with transaction(conn):` — BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error. Nested
    inside an open transaction it is a savepoint, so a change and its audit record can share the
    caller's one transaction (the outermost decides what commits)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.nested = False

    def __enter__(self):
        self.nested = self.conn.in_transaction
        self.conn.execute("SAVEPOINT nested" if self.nested else "BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if self.nested:
            if exc_type is not None:
                self.conn.execute("ROLLBACK TO nested")
            self.conn.execute("RELEASE nested")
        else:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def snapshot(conn: sqlite3.Connection) -> dict:
    """Every row of every table (for tests that prove bad input changed nothing)."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {n: sorted(map(repr, conn.execute(f"SELECT * FROM {n}"))) for n in names}
