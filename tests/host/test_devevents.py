"""device_event in its compact form (host/devevents.py: boot ref, protocol id, fields packed as the
schema lays them out): every event reads back as it came, the view device_event_v1 renders each row
in the old columns byte for byte, and a ledger made with the old form is migrated with every audit
seal made before still verifying."""

import json
import sqlite3
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serialine.host import audit, db, devevents, tune
from serialine.host.db import transaction
from serialine.protocol import schema

import oldledger
from hostkit import Line

# device_event's DDL before the compact form (its text then), and what a seal of it named
OLD_TABLE = """CREATE TABLE device_event (
        device_id TEXT NOT NULL, boot_id INTEGER NOT NULL, event_seq INTEGER NOT NULL,
        msg_name TEXT NOT NULL, unit_seq INTEGER, body TEXT NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (device_id, boot_id, event_seq)) WITHOUT ROWID"""
OLD_COLS = ["device_id", "boot_id", "event_seq", "msg_name", "unit_seq", "body", "received_at"]
OLD_ORDER = "device_id, boot_id, event_seq"


def _old_body(fields: dict) -> str:  # host/ledger.py _body of the release before
    items = [(k, v) for k, v in fields.items() if k not in ("event_seq", "unit_seq")]
    if all(type(v) is int for _, v in items):
        return "{" + ",".join([f'"{k}":{v}' for k, v in items]) + "}"
    return json.dumps(dict(items), separators=(",", ":"), default=str)


_RANGE = {"B": (0, 2 ** 8 - 1), "H": (0, 2 ** 16 - 1), "h": (-2 ** 15, 2 ** 15 - 1),
          "L": (0, 2 ** 32 - 1), "I": (0, 2 ** 32 - 1), "l": (-2 ** 31, 2 ** 31 - 1), "i": (-2 ** 31, 2 ** 31 - 1)}
EVENTS = [m for m in schema.MESSAGES if m.name in devevents._PACK and m.sequenced and m.direction == "device>host"]


def _event(m):  # fields in schema order, as the codec gives them (fastcodec.as_dict)
    names = [f.name for f in schema.flat_fields(m.payload)]
    return st.tuples(*[st.integers(*_RANGE[f.fmt]) for f in schema.flat_fields(m.payload)]).map(
        lambda values: dict(zip(names, values)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of([_event(m).map(lambda f, n=m.name: (n, f)) for m in EVENTS]), min_size=1, max_size=12))
def test_every_event_reads_back_as_it_came_and_renders_as_before(events):
    conn = db.connect(":memory:")
    ref, t0 = devevents.boot(conn, "dev1", 7)
    for i, (name, f) in enumerate(events):
        f["event_seq"] = i
        row = devevents.row(ref, name, f, devevents.stamp(t0, 1.5))
        assert type(row[4]) is int and row[2] == schema.BY_NAME[name].msg_type  # packed, the protocol's id
        assert devevents.fields(row[2], row[4], row[5]) == {k: v for k, v in f.items() if k not in devevents.IN_COLUMNS}
        conn.execute(devevents.INSERT, row)
    got = list(devevents.events(conn))
    assert [(e.msg_name, {**e.fields, "event_seq": e.event_seq, **({"unit_seq": e.unit_seq} if "unit_seq" in f else {})})
            for e, (_, f) in zip(got, events)] == events
    old = conn.execute(f"SELECT {', '.join(OLD_COLS)} FROM device_event_v1 ORDER BY boot_ref, event_seq").fetchall()
    assert old == [("dev1", 7, f["event_seq"], n, f.get("unit_seq"), _old_body(f), 1.5) for n, f in events]
    for name, f in events:  # SQL reads a packed field as Python does
        for k in devevents._PACK[name].names:
            (v,) = conn.execute(f"SELECT {devevents.sql_field(name, k)} FROM device_event WHERE event_seq=?",
                                (f["event_seq"],)).fetchone()
            assert v == f[k], (name, k)


def test_an_event_outside_its_schema_keeps_its_json():
    odd = [("UNIT_OUTCOME", {"event_seq": 1, "unit_seq": 0, "outcome": 9, "reason": 0, "gate_error": 0, "pos": 0,
                             "t_us": 0, "invalid": "UNIT_OUTCOME.outcome 9 is not a Outcome"}),
           ("UNIT_DETECTED", {"event_seq": 2, "unit_seq": 1, "pos": 2 ** 32, "t_us": 0, "flags": 0}),  # wider than u32
           ("LOG", {"event_seq": 3, "level": 20, "text": 'a "quoted" line'}),
           ("NOT_A_MESSAGE", {"event_seq": 4, "x": 1}),
           ("UNIT_DETECTED", {"event_seq": 5, "pos": 1, "t_us": 2, "flags": 0, "note": 1})]  # its count, not its fields
    conn = db.connect(":memory:")
    ref, t0 = devevents.boot(conn, "dev1", 7)
    for name, f in odd:
        conn.execute(devevents.INSERT, devevents.row(ref, name, f, devevents.stamp(t0, 2.0)))
    assert [type(b) for (b,) in conn.execute("SELECT body FROM device_event")] == [str] * 5
    assert [(e.msg_name, e.fields) for e in devevents.events(conn)] == [
        (n, {k: v for k, v in f.items() if k not in devevents.IN_COLUMNS}) for n, f in odd]
    assert [b for (b,) in conn.execute("SELECT body FROM device_event_v1")] == [_old_body(f) for _, f in odd]




def _to_old_form(conn, extra=()):
    """The ledger's device events as the old release stored them (its DDL, its JSON bodies)."""
    rows = [(e.device_id, e.boot_id, e.event_seq, e.msg_name, e.unit_seq, _old_body(e.fields), e.received_at)
            for e in devevents.events(conn)] + list(extra)
    for sql in ("DROP VIEW device_event_v1", "DROP VIEW device_event_v2", "DROP TABLE device_event", "DROP TRIGGER device_boot_ref_fixed",
                "DROP TABLE device_boot_ref", OLD_TABLE):
        conn.execute(sql)
    conn.executemany("INSERT INTO device_event VALUES (?,?,?,?,?,?,?)", rows)
    return conn.execute(f"SELECT * FROM device_event ORDER BY {OLD_ORDER}").fetchall()


def test_a_ledger_of_the_old_form_is_migrated_and_its_seals_still_verify(tmp_path, capsys):
    path = tmp_path / "old.db"
    conn = oldledger.ledger(path, ("B1", "B2"))
    oldledger.run(conn, "B1", 4)
    t = time.time()
    odd = [  # rows the old releases wrote that the compact form does not say: kept as their text
        ("dev1", 1, 100, "UNIT_OUTCOME", 3, '{"event_seq":100,"unit_seq":3,"outcome":2,"reason":1,"gate_error":0,'
         '"pos":0,"t_us":0}', t),  # before the body left out its key columns
        ("old-dev", 5, 1, "LOG", None, '{"level":20,"text":"hello \\"there\\""}', t),
        ("old-dev", 5, 2, "UNIT_DETECTED", 0, '{"pos":4294967296,"t_us":0,"flags":0}', t),
        ("old-dev", 5, 3, "UNIT_OUTCOME", 0, '{"outcome":9,"reason":0,"gate_error":0,"pos":0,"t_us":0,'
         '"invalid":"UNIT_OUTCOME.outcome 9 is not a Outcome"}', t),
        # ... and ones it does: packed, rendered back the same
        ("old-dev", 5, 4, "UNIT_OUTCOME", 1, '{"outcome":2,"reason":3,"gate_error":-300,"pos":123456789,'
         '"t_us":1073741823}', t - 0.25),
        ("old-dev", 5, 5, "ALARM", 4294967295, '{"alarm":2,"active":1,"t_us":77}', t - 0.5)]
    old_rows = _to_old_form(conn, odd)
    # what the old release sealed: a checkpoint of the whole log, then the batch's close
    upto = time.time()
    logged = conn.execute(f"SELECT * FROM device_event WHERE received_at < ? ORDER BY {OLD_ORDER}", (upto,)).fetchall()
    oldledger.seal(conn, audit.CHECKPOINT, {"parts": {"log:device_event": oldledger.part(OLD_COLS, logged, upto)}})
    oldledger.close_states(conn, "B1")
    batch_rows = conn.execute(f"SELECT * FROM device_event WHERE {audit._BATCH_BOOTS.replace(':key', chr(39) + 'B1' + chr(39))}"
                              f" AND received_at < ? ORDER BY {OLD_ORDER}", (upto,)).fetchall()
    assert len(batch_rows) == 4 * 4 + 1
    oldledger.seal(conn, "batch.close", {"batch_id": "B1",
                                         "seal": {"device_event": oldledger.part(OLD_COLS, batch_rows, upto)}})
    conn.close()

    conn = db.connect(str(path))  # migrates
    view = conn.execute(f"SELECT {', '.join(OLD_COLS)} FROM device_event_v1 ORDER BY boot_ref, event_seq").fetchall()
    assert list(map(repr, view)) == list(map(repr, old_rows))  # every row, in its old order, value and type
    kinds = dict(conn.execute("SELECT typeof(body), count(*) FROM device_event GROUP BY 1"))
    assert kinds == {"integer": 4 * 4 + 2, "text": 4}
    assert "device_event_v0" not in {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    line = oldledger.run(conn, "B2", 2)  # the next batch writes the compact form
    assert line.store([line.event("UNIT_DETECTED", unit_seq=1, pos=0, t_us=0, flags=0)]) == [True]
    line.event_seq -= 1
    assert line.store([line.event("UNIT_DETECTED", unit_seq=1, pos=0, t_us=0, flags=0)]) == [False]  # resent
    oldledger.close_and_verify(conn, path, capsys)

    err = oldledger.verify_after_edit(path, capsys,  # an old row edited: its seals say so
                                      "UPDATE device_event SET body = body + 1 WHERE event_seq = 4 AND boot_ref ="
                                      " (SELECT ref FROM device_boot_ref WHERE device_id = 'old-dev')")
    assert "table device_event_v1 differs from its seal" in err


def test_a_ledger_whose_rows_would_not_read_back_is_left_as_it_was(tmp_path):
    path = tmp_path / "old.db"
    conn = oldledger.ledger(path, ("B1", "B2"))
    old_rows = _to_old_form(conn, [("dev9", 1, 1, "18", None, "{}", 1.0)])  # a name like a number: not its text
    conn.close()
    with pytest.raises(sqlite3.IntegrityError, match="1 row.*would not read back as stored; this ledger is left as it was"):
        db.connect(str(path))
    c = sqlite3.connect(path)
    assert c.execute("SELECT * FROM device_event ORDER BY device_id, boot_id, event_seq").fetchall() == old_rows
    assert c.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE 'device_boot_ref%'").fetchone() == (0,)
    c.close()


def test_tune_reads_the_gate_and_confirm_positions_of_compact_rows(ledger):
    from types import SimpleNamespace
    with transaction(ledger.conn):
        ledger.queue_codes(2)
    line = Line(ledger)
    line.store([line.event("UNIT_DETECTED", unit_seq=0, pos=1000, t_us=5, flags=0),
                line.event("UNIT_OUTCOME", unit_seq=0, outcome=2, reason=16, gate_error=-20, pos=1000 + 3500, t_us=9)])
    cfg = SimpleNamespace(geometry=SimpleNamespace(counts_per_mm=10.0, gate_at_mm=300.0, gate_window_mm=3.0,
                                                   confirm_window_mm=(40.0, 60.0)))
    fig = tune.figures(ledger.conn, cfg)
    [unit] = fig["units"]
    assert unit["outcome"] == "REJECTED_CONFIRMED" and unit["gate_error_mm"] == -2.0 and unit["confirm_mm"] == 50.0


def test_the_console_reads_outcomes_and_detections_of_compact_rows(ledger):
    from serialine.host.console import app, charts
    line = Line(ledger)
    for u, (outcome, reason, gate) in enumerate([(2, 16, -20), (3, 2, 7), (2, 18, 300)]):
        line.store([line.event("UNIT_DETECTED", unit_seq=u, pos=10 * u, t_us=u, flags=0),
                    line.event("UNIT_OUTCOME", unit_seq=u, outcome=outcome, reason=reason, gate_error=gate, pos=0, t_us=0)])
    assert charts.gate_errors(ledger.conn, "B1") == [-20, 7, 300]
    stored = [e.received_at for e in devevents.events(ledger.conn, names=("UNIT_OUTCOME",))]
    assert [t for t, _ in charts.reject_times(ledger.conn, "B1")] == sorted(stored)
    assert app._packs_per_minute(ledger.conn, "dev1", 7, window_s=60) == 3


def test_a_ledger_packed_under_another_layout_is_refused_not_misread(tmp_path):
    path = str(tmp_path / "l.db")
    conn = db.connect(path)
    assert conn.execute("SELECT layout FROM device_event_layout").fetchall() == [(devevents.LAYOUT,)]
    # another release, whose schema lays the fields out otherwise, recorded its layout: while no row
    # is packed that changes nothing a reader needs, and this release records its own
    conn.execute("UPDATE device_event_layout SET layout = 'another release'")
    conn.close()
    conn = db.connect(path)
    assert conn.execute("SELECT layout FROM device_event_layout").fetchall() == [(devevents.LAYOUT,)]
    ref = devevents.boot_ref(conn, "dev1", 1)
    conn.execute(devevents.INSERT, devevents.row(ref, "UNIT_DETECTED", {"event_seq": 0, "unit_seq": 0, "pos": 5,
                                                                         "t_us": 9, "flags": 0}, 0))
    conn.execute("UPDATE device_event_layout SET layout = 'another release'")
    conn.close()
    before = db.snapshot(sqlite3.connect(path))
    with pytest.raises(sqlite3.DatabaseError, match="packed by a release whose protocol schema lays them out otherwise"):
        db.connect(path)
    assert db.snapshot(sqlite3.connect(path)) == before  # refused as it was: nothing migrated, nothing rewritten


def test_a_boots_events_count_their_time_from_its_t0():
    conn = db.connect(":memory:")
    before = int(time.time() * 1000)
    ref, t0 = devevents.boot(conn, "dev1", 7)
    assert before <= t0 <= int(time.time() * 1000) and devevents.boot(conn, "dev1", 7) == (ref, t0)  # given once
    f = {"event_seq": 1, "unit_seq": 0, "pos": 5, "t_us": 9, "flags": 0}
    row = devevents.row(ref, "UNIT_DETECTED", f, devevents.stamp(t0, (t0 + 250.5) / 1000))
    assert row[6] == 250  # two bytes, where ms since 1970 took six
    conn.execute(devevents.INSERT, row)
    [e] = devevents.events(conn)
    assert e.received_at == (t0 + 250) / 1000
    assert conn.execute("SELECT received_at FROM device_event_v2").fetchall() == [(t0 + 250,)]
    assert conn.execute("SELECT received_at FROM device_event_v1").fetchall() == [((t0 + 250) / 1000,)]


# device_event's DDL before the times counted from the boot's t0 (received_at: ms since 1970), and
# device_boot_ref's then; the view device_event_v1 of then read that column
V2_BOOT_REF = """CREATE TABLE device_boot_ref (
        ref INTEGER PRIMARY KEY, device_id TEXT NOT NULL, boot_id INTEGER NOT NULL,
        UNIQUE (device_id, boot_id))"""
V2_TABLE = """CREATE TABLE device_event (
        boot_ref INTEGER NOT NULL REFERENCES device_boot_ref (ref), event_seq INTEGER NOT NULL,
        msg INTEGER NOT NULL, unit_seq INTEGER, body INTEGER NOT NULL, body2 INTEGER,
        received_at NOT NULL,  -- ms since 1970; a row from before the compact form: its seconds (REAL), as they were
        PRIMARY KEY (boot_ref, event_seq)) WITHOUT ROWID"""
V2_V1_VIEW = devevents.DEVICE_EVENT_V1.replace(
    devevents.received_sql(), "(CASE WHEN typeof(e.received_at) = 'real' THEN e.received_at ELSE e.received_at / 1000.0 END)")


def _to_v2_form(conn, extra=()):
    """The ledger's device events as the release before stored them (received_at ms since 1970)."""
    refs = conn.execute("SELECT ref, device_id, boot_id FROM device_boot_ref").fetchall()
    rows = conn.execute(f"SELECT {', '.join(devevents.SEALED_V2)} FROM device_event_v2").fetchall() + list(extra)
    for sql in ("DROP VIEW device_event_v1", "DROP VIEW device_event_v2", "DROP TABLE device_event",
                "DROP TRIGGER device_boot_ref_fixed", "DROP TABLE device_boot_ref", V2_BOOT_REF, V2_TABLE, V2_V1_VIEW):
        conn.execute(sql)
    conn.executemany("INSERT INTO device_boot_ref VALUES (?,?,?)", refs)
    conn.executemany("INSERT INTO device_event VALUES (?,?,?,?,?,?,?)", rows)
    return conn.execute("SELECT * FROM device_event ORDER BY boot_ref, event_seq").fetchall()


def test_a_ledger_of_the_form_before_boot_times_is_migrated_and_its_seals_still_verify(tmp_path, capsys):
    path = tmp_path / "old.db"
    conn = oldledger.ledger(path, ("B1", "B2"))
    oldledger.run(conn, "B1", 4)
    (ref,) = conn.execute("SELECT ref FROM device_boot_ref").fetchone()
    old_rows = _to_v2_form(conn, [(ref, 100, devevents.MSG["LOG"], None, '{"level":20,"text":"x"}', None, 1796163183.125)])
    assert {type(r[6]) for r in old_rows} == {int, float}  # ms since 1970, and a row migrated once before: seconds
    # what the release before sealed: a link of the log's chain (read by key: what it left open per boot)
    upto = int(time.time() * 1000) + 1
    oldledger.seal(conn, audit.CHECKPOINT, {"parts": {"log:device_event2": {
        **oldledger.part(list(devevents.SEALED_V2), old_rows, upto), "after": 0, "boots": {str(ref): [101, [0, 1, 17, 100]]}}}})
    conn.close()

    conn = db.connect(str(path))  # migrates
    assert list(map(repr, conn.execute(f"SELECT {', '.join(devevents.SEALED_V2)} FROM device_event_v2"
                                       " ORDER BY boot_ref, event_seq"))) == list(map(repr, old_rows))
    assert conn.execute("SELECT t0 FROM device_boot_ref").fetchall() == [(0,)]  # its times still count from 1970
    oldledger.run(conn, "B2", 2)  # a new boot: its times count from its own t0
    (t0,) = conn.execute("SELECT t0 FROM device_boot_ref WHERE boot_id = 2").fetchone()
    assert t0 > 0 and all(0 <= at < 600_000 for (at,) in conn.execute(
        "SELECT at FROM device_event WHERE boot_ref = (SELECT ref FROM device_boot_ref WHERE boot_id = 2)"))
    oldledger.close_and_verify(conn, path, capsys)

    err = oldledger.verify_after_edit(path, capsys,  # an old row edited: the link that sealed it says so
                                      f"UPDATE device_event SET at = at + 1 WHERE boot_ref = {ref} AND event_seq = 3")
    assert "checkpoint record 1: table device_event_v2 differs from its seal" in err
