"""The outbox stores each event packed (outbox.pack): what comes back out, what is exported and
what is hashed are the bytes the builders made, and an outbox made when bodies were text keeps
its rows as they were."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timedelta, timezone

import pytest

from serialine.host.epcis import document, eventhash, events, outbox

from . import old_outbox

CTX = events.Context(read_point="urn:epc:id:sgln:4012345.00000.7", biz_location="urn:epc:id:sgln:4012345.00000.0",
                     zone="Europe/Berlin")
T0 = datetime(2026, 3, 29, 0, 59, 59, tzinfo=timezone.utc)  # the batch crosses the DST switch


def _sscc(n: int) -> str:
    body = f"0401234500000{n:04d}"
    return body + str(eventhash.check_digit(body))


def batch_events() -> list[dict]:
    out = []
    for n in range(5):
        epcs = [events.sgtin_urn("00350242040624", f"{n}A'(*)+,-.:;=_{k}"[-20:], 7) for k in range(12)]
        out.append(events.commissioning(CTX, epcs, "L1", date(2028, 1, 31), T0 + timedelta(seconds=n)))
        out.append(events.packing(CTX, events.sscc_urn(_sscc(n), 7), epcs, T0 + timedelta(seconds=n, milliseconds=1)))
    out.append(events.decommissioning(CTX, out[0]["epcList"][:2], "destroyed", T0 + timedelta(seconds=9)))
    return out


def text_of(event: dict) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


@pytest.fixture()
def conn():
    c = sqlite3.connect(":memory:", isolation_level=None)
    outbox.ensure_schema(c)
    yield c
    c.close()


def test_packed_bodies_give_back_the_hashed_bytes(conn):
    made = batch_events()
    for event in made:
        assert outbox.enqueue(conn, "B", event)
    rows = conn.execute("SELECT event_id, body FROM epcis_outbox ORDER BY seq").fetchall()
    assert all(isinstance(body, bytes) for _, body in rows)
    assert sum(len(b) for _, b in rows) < 0.4 * sum(len(text_of(e)) for e in made)
    for (event_id, body), event in zip(rows, made):
        text = outbox.body_text(body)
        assert text == text_of(event)  # byte for byte what was hashed
        assert eventhash.event_hash(json.loads(text)) == event_id == event["eventID"]
    assert outbox.batch_events(conn, "B") == made
    assert list(outbox.batch_bodies(conn, "B")) == [text_of(e) for e in made]
    # the export's document is the whole document of the builders' events
    created = datetime(2026, 12, 1, tzinfo=timezone.utc)
    head, tail = document.envelope(created)
    assert head + b",".join(b.encode() for b in outbox.batch_bodies(conn, "B")) + tail == \
        document.dumps(document.epcis_document(made, created))
    chunk = outbox.next_chunk(conn, "t", "B", 100, 0)
    assert [e for _, _, e in chunk] == made
    assert outbox.batch_locations(conn, "B") == [CTX.biz_location, CTX.read_point]
    assert not outbox.enqueue(conn, "B", made[0])  # the same event again: a no-op, as ever


def test_an_outbox_of_text_bodies_keeps_its_rows_and_takes_packed_ones():
    c = sqlite3.connect(":memory:", isolation_level=None)
    c.execute(old_outbox.TEXT_BODY_TABLE)
    made = batch_events()
    for event in made[:4]:
        c.execute("INSERT INTO epcis_outbox (batch_id, event_id, event_type, body, enqueued_at) VALUES (?,?,?,?,?)",
                  ("B", event["eventID"], event["type"], text_of(event), 1.5))
    c.execute("DELETE FROM epcis_outbox WHERE seq = 4")  # AUTOINCREMENT: seq 4 is never given again
    before = c.execute("SELECT * FROM epcis_outbox ORDER BY seq").fetchall()
    outbox.ensure_schema(c)
    assert c.execute(f"SELECT {outbox._COLUMNS} FROM epcis_outbox ORDER BY seq").fetchall() == before  # seals hold
    assert "BLOB" in c.execute("SELECT sql FROM sqlite_master WHERE name = 'epcis_outbox'").fetchone()[0]
    assert outbox.counts(c) == {"pending": 3, "delivered": 0}
    for event in made[4:]:
        assert outbox.enqueue(c, "B", event)
    assert outbox.batch_events(c, "B") == made[:3] + made[4:]
    assert c.execute("SELECT min(seq), count(*) FROM epcis_outbox WHERE typeof(body) = 'blob'").fetchone() == (5, 7)
    assert outbox.counts(c) == {"pending": 10, "delivered": 0}
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        c.execute("UPDATE epcis_outbox SET body = x'00' WHERE seq = 5")
    outbox.ensure_schema(c)  # again: nothing to do
    assert outbox.batch_events(c, "B") == made[:3] + made[4:]


def test_a_read_only_outbox_of_text_bodies_is_read_as_it_is(tmp_path):
    path = tmp_path / "archive.db"
    c = sqlite3.connect(path, isolation_level=None)
    c.execute(old_outbox.TEXT_BODY_TABLE)
    for statement in old_outbox.SCHEMA[1:]:
        c.execute(statement)
    c.execute("INSERT INTO epcis_outbox_tally VALUES (1, 0, 0)")
    made = batch_events()[:3]
    for event in made:
        c.execute("INSERT INTO epcis_outbox (batch_id, event_id, event_type, body, enqueued_at) VALUES (?,?,?,?,?)",
                  ("B", event["eventID"], event["type"], text_of(event), 1.5))
    c.close()
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    outbox.ensure_schema(ro)
    assert outbox.batch_events(ro, "B") == made and outbox.counts(ro)["pending"] == 3
    ro.close()


def test_the_event_time_is_read_from_the_head_of_a_stored_event():
    for event in batch_events():
        text = text_of(event)
        assert outbox.event_time_of(outbox.pack(text)) == outbox.event_time_of(text) == event["eventTime"]
    odd = json.dumps({"eventTime": "2026-12-01T08:00:00.000Z", "type": "ObjectEvent"})  # another key order
    assert outbox.event_time_of(outbox.pack(odd)) == outbox.event_time_of(odd) == "2026-12-01T08:00:00.000Z"
