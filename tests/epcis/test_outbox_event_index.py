"""An eventID is in the outbox once, by the index on (event_ms, event_id): its entries go at the
index's end (a new event's time is the batch's latest), not in a random page. An outbox of the form
before (UNIQUE event_id, no event_ms) migrates: every row as it was plus its time, the released
ledger's seals verify, an event enqueued before is still not enqueued again."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from serialine.host import audit, cli_batch, db
from serialine.host.epcis import events, outbox
from serialine.host.epcis.eventhash import canonical_time, event_hash, time_ms

from . import old_outbox
from .conftest import all_kinds

RELEASED = Path(__file__).parents[1] / "host" / "data" / "released_0cb9add"


def _indexes(c) -> set[str]:
    return {n for (n,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'epcis_outbox'")}


def _old_outbox(c, made) -> list:
    for statement in old_outbox.SCHEMA:
        c.execute(statement)
    c.execute("INSERT INTO epcis_outbox_tally VALUES (1, 0, 0)")
    for i, event in enumerate(made):  # as the code before enqueued them
        c.execute("INSERT INTO epcis_outbox (batch_id, event_id, event_type, body, enqueued_at) VALUES (?,?,?,?,?)",
                  ("B1", event["eventID"], event["type"], outbox.pack(outbox._JSON.encode(event)), 1.5 + i))
    return c.execute("SELECT * FROM epcis_outbox ORDER BY seq").fetchall()


def test_an_outbox_before_event_ms_keeps_its_rows_and_each_event_once(ctx):
    c = sqlite3.connect(":memory:", isolation_level=None)
    made = all_kinds(ctx)
    before = _old_outbox(c, made[:5])
    assert "sqlite_autoindex_epcis_outbox_1" in _indexes(c)
    outbox.ensure_schema(c)
    assert c.execute(f"SELECT {outbox._COLUMNS} FROM epcis_outbox ORDER BY seq").fetchall() == before
    assert [ms for (ms,) in c.execute("SELECT event_ms FROM epcis_outbox ORDER BY seq")] == \
        [time_ms(e["eventTime"]) for e in made[:5]]
    assert "sqlite_autoindex_epcis_outbox_1" not in _indexes(c) and "epcis_outbox_event" in _indexes(c)
    assert [outbox.enqueue(c, "B1", e) for e in made] == [False] * 5 + [True] * 2  # the old ones: there
    with pytest.raises(ValueError, match="already in the outbox for batch 'B1'"):
        outbox.enqueue(c, "B2", made[0])
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        c.execute("UPDATE epcis_outbox SET event_ms = event_ms + 1 WHERE seq = 1")
    assert outbox.counts(c) == {"pending": 7, "delivered": 0}
    outbox.ensure_schema(c)  # again: nothing to do
    assert outbox.batch_events(c, "B1") == made


def test_one_event_id_is_one_time_so_the_index_holds_ids_once(ctx):
    """The same instant written in UTC is the same eventID and the same event_ms: refused as the id
    alone was."""
    c = sqlite3.connect(":memory:", isolation_level=None)
    outbox.ensure_schema(c)
    when = datetime(2026, 10, 25, 0, 59, 59, 999000, tzinfo=timezone.utc)
    epc = events.sgtin_urn("04012345123456", "S1", 7)
    event = events.commissioning(ctx, [epc], "L1", date(2028, 1, 31), when)
    assert outbox.enqueue(c, "B1", event)
    other = dict(event, eventTime=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    assert other["eventTime"] != event["eventTime"]
    assert event_hash(other) == event["eventID"]
    assert not outbox.enqueue(c, "B1", other)
    later = events.commissioning(ctx, [epc], "L1", date(2028, 1, 31), when + timedelta(milliseconds=1))
    assert outbox.enqueue(c, "B1", later)
    for bad in (None, "yesterday", 5):
        with pytest.raises(ValueError, match="eventTime"):
            outbox.enqueue(c, "B1", dict(later, eventTime=bad))
    assert outbox.counts(c)["pending"] == 2
    plan = " ".join(r[-1] for r in c.execute(
        "EXPLAIN QUERY PLAN SELECT batch_id FROM epcis_outbox WHERE event_ms = ? AND event_id = ?", (1, "x")))
    assert "epcis_outbox_event" in plan


def test_the_released_ledger_migrates_and_its_seals_verify(tmp_path, capsys):
    for suffix in (".db", ".db.anchors"):
        shutil.copy(f"{RELEASED}{suffix}", tmp_path / f"released{suffix}")
    path = tmp_path / "released.db"
    raw = sqlite3.connect(path)
    before = raw.execute(f"SELECT {outbox._COLUMNS} FROM epcis_outbox ORDER BY seq").fetchall()
    raw.close()
    assert len(before) > 10
    conn = db.connect(str(path))
    assert conn.execute(f"SELECT {outbox._COLUMNS} FROM epcis_outbox ORDER BY seq").fetchall() == before
    for body, ms in conn.execute("SELECT body, event_ms FROM epcis_outbox"):
        assert ms == time_ms(outbox.event_time_of(body))
    assert "epcis_outbox_event" in _indexes(conn)
    ok, _, message = audit.verify(conn)
    assert ok, message
    conn.close()
    assert cli_batch.audit_main(["verify", "--db", str(path)]) == 0, capsys.readouterr().err


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(timezone.utc)),
       st.integers(-14 * 60, 14 * 60), st.sampled_from(["milliseconds", "microseconds", "seconds", "Z"]))
def test_time_ms_is_the_time_the_hash_has(when, minutes, spec):
    text = (when.isoformat(timespec="milliseconds").replace("+00:00", "Z") if spec == "Z"
            else when.astimezone(timezone(timedelta(minutes=minutes))).isoformat(timespec=spec))
    hashed = datetime.fromisoformat(canonical_time(text).replace("Z", "+00:00"))
    assert time_ms(text) == (hashed - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


def test_a_body_broken_behind_the_projects_back_still_migrates_and_verify_names_it(tmp_path, capsys):
    for suffix in (".db", ".db.anchors"):
        shutil.copy(f"{RELEASED}{suffix}", tmp_path / f"released{suffix}")
    path = tmp_path / "released.db"
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER epcis_outbox_body_is_immutable")
    raw.execute("UPDATE epcis_outbox SET body = x'00ff' WHERE seq = (SELECT min(seq) FROM epcis_outbox)")
    raw.commit()
    raw.close()
    conn = db.connect(str(path))
    assert conn.execute("SELECT event_ms FROM epcis_outbox ORDER BY seq LIMIT 1").fetchone() == (-1,)
    conn.close()
    assert cli_batch.audit_main(["verify", "--db", str(path)]) == 1
