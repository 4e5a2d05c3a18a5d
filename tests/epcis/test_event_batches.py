"""The host path's EPCIS shortcuts give what the rule a value at a time gives: a poll's SGTINs
(sgtin_urns), check digits, local event times, packed bodies, and the times of the events one
ledger change enqueues (each after the one just added, read back when one was not added)."""

from __future__ import annotations

import datetime as dt
import zlib
import zoneinfo

import pytest
from hypothesis import given, settings, strategies as st

from serialine.host import db, masterdata, reporting, serials
from serialine.host.epcis import events as ev
from serialine.host.epcis import outbox
from serialine.host.epcis.eventhash import check_digit

GTIN = "09506000134352"
SITE = "urn:epc:id:sgln:4012345.00000.0"

_serial = st.one_of(st.text("ABZaz09", min_size=1, max_size=20),
                    st.text(st.sampled_from(list("Az09!\"%&'/<>?._ \né") + ["\u0663"]), max_size=22))


def _one(serial):
    try:
        return ev.sgtin_urn(GTIN, serial, 7)
    except ValueError as exc:
        return str(exc)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_serial, st.integers(0, 9)), max_size=6))
def test_a_polls_sgtins_are_each_serials_own_or_the_same_refusal(serials_):
    each = [_one(s) for s in serials_]
    refused = next((e for e in each if not e.startswith("urn:")), None)
    if refused is None:
        assert ev.sgtin_urns(GTIN, serials_, 7) == each
    else:
        with pytest.raises(ValueError) as exc:
            ev.sgtin_urns(GTIN, serials_, 7)
        assert str(exc.value) == refused  # the first wrong serial, in the words sgtin_urn uses


@settings(max_examples=300, deadline=None)
@given(st.text("0123456789", max_size=18))
def test_check_digit_is_gs1_mod_10(digits):
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    assert check_digit.__wrapped__(digits) == (10 - total % 10) % 10


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2090, 1, 1),
                    timezones=st.just(dt.timezone.utc)),
       st.sampled_from(["Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "Australia/Lord_Howe", None]))
def test_an_events_local_time_is_the_sites_at_that_instant(when, zone):
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    ctx = ev.Context(read_point=SITE, biz_location=SITE, zone=zone, tz_offset="-03:30")
    tz = zoneinfo.ZoneInfo(zone) if zone else dt.timezone(-dt.timedelta(hours=3, minutes=30))
    offset = when.astimezone(tz).utcoffset()
    local = when.astimezone(dt.timezone(dt.timedelta(minutes=round(offset.total_seconds() / 60))))
    assert ev._time(ctx, when) == (local.isoformat(timespec="milliseconds"), ev._offset(offset))


def test_bodies_packed_before_read_as_they_were(ctx):
    from .conftest import all_kinds
    for event in all_kinds(ctx, 64):
        text = outbox._JSON.encode(event)
        assert outbox.body_text(outbox.pack(text)) == text
        old = zlib.compressobj(6, zlib.DEFLATED, 14, 3, zdict=outbox.ZDICT)  # how bodies were packed before
        assert outbox.body_text(old.compress(text.encode()) + old.flush()) == text
        assert outbox.event_time_of(outbox.pack(text)) == event["eventTime"]


def test_the_events_of_one_change_each_follow_the_last_one_added(tmp_path):
    conn = db.connect(str(tmp_path / "ledger.db"))
    masterdata.add_product(conn, GTIN, "Aspirin 100 mg", "EU_FMD", 7)
    serials.generate(conn, GTIN, 10)
    masterdata.set_location(conn, masterdata.Location(SITE, "Plant Berlin", country="DE", tz="Europe/Berlin"))
    batch = masterdata.create_batch(conn, "B1", GTIN, "L1", "2030-01-31", 10, 2, 2, read_point="4012345000009.7")
    ctx = reporting.context_for(batch)
    later = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=1)  # ahead of the clock
    epcs = [reporting.sgtin(batch, f"S{i}") for i in range(4)]
    first = ev.commissioning(ctx, epcs[:1], batch.lot, batch.expiry, later)

    def times():
        rows = conn.execute("SELECT body FROM epcis_outbox WHERE batch_id = 'B1' ORDER BY seq").fetchall()
        return [dt.datetime.fromisoformat(outbox.event_time_of(b)) for (b,) in rows]

    with db.transaction(conn):
        outbox.enqueue(conn, "B1", first)
        # the same event again (not added: the batch's last event stays `first`), then two new ones
        reporting._enqueue(conn, batch, [lambda when: first,
                                         lambda when: ev.commissioning(ctx, epcs[1:2], batch.lot, batch.expiry, when),
                                         lambda when: ev.commissioning(ctx, epcs[2:3], batch.lot, batch.expiry, when)])
    ms = dt.timedelta(milliseconds=1)
    assert times() == [later, later + ms, later + 2 * ms]
    # a case that waited for its packs' commissioning goes out right after it, in one change
    with db.transaction(conn):
        reporting.packed(conn, ctx, batch, "095060000000000015", epcs[3:], after_commissioning=True)
        reporting.commissioned(conn, ctx, batch, ["S3"])
    assert times()[3:] == [later + 3 * ms, later + 4 * ms]
    assert [e["type"] for e in outbox.batch_events(conn, "B1")][3:] == ["ObjectEvent", "AggregationEvent"]
    conn.close()


def test_a_case_that_waited_in_a_change_rolled_back_is_not_reported(tmp_path):
    conn = db.connect(str(tmp_path / "ledger.db"))
    masterdata.add_product(conn, GTIN, "Aspirin 100 mg", "EU_FMD", 7)
    masterdata.set_location(conn, masterdata.Location(SITE, "Plant Berlin", country="DE", tz="Europe/Berlin"))
    made = [masterdata.create_batch(conn, b, GTIN, "L" + b, "2030-01-31", 10, 2, 2, read_point="4012345000009.7")
            for b in ("B1", "B2")]
    b1, b2 = made
    ctx = reporting.context_for(b1)
    case, other = "095060000000000015", "095060000000000022"
    for _ in range(2):  # the first time the rollback also takes the temp table with it
        with pytest.raises(RuntimeError):
            with db.transaction(conn):
                reporting.packed(conn, ctx, b1, case, [reporting.sgtin(b1, "S1")], after_commissioning=True)
                raise RuntimeError("the poll failed")
    with db.transaction(conn):
        reporting.packed(conn, ctx, b1, other, [reporting.sgtin(b1, "S2")], after_commissioning=True)
        reporting.packed(conn, ctx, b2, case, [reporting.sgtin(b2, "S3")], after_commissioning=True)
        reporting.packed(conn, ctx, b1, case, [reporting.sgtin(b1, "S4")], after_commissioning=True)
        reporting.commissioned(conn, ctx, b1, ["S2", "S4"])
    told = [(e["type"], e.get("parentID"), e.get("childEPCs") or e.get("epcList")) for e in outbox.batch_events(conn, "B1")]
    assert told == [("ObjectEvent", None, ev.sgtin_urns(GTIN, ["S2", "S4"], 7)),
                    ("AggregationEvent", reporting.sscc(b1, other), [reporting.sgtin(b1, "S2")]),
                    ("AggregationEvent", reporting.sscc(b1, case), [reporting.sgtin(b1, "S4")])]
    assert outbox.batch_events(conn, "B2") == []  # B2's case waits for B2's commissioning
    with db.transaction(conn):
        reporting.commissioned(conn, ctx, b2, ["S3"])
        reporting.commissioned(conn, ctx, b2, [])  # nothing waits now
    assert [e["type"] for e in outbox.batch_events(conn, "B2")] == ["ObjectEvent", "AggregationEvent"]
    conn.close()
