"""Daylight saving: a run that crosses the site's switch gives each event the offset in force at
its own eventTime (Europe/Berlin leaves summer time on 2026-10-25 at 01:00 UTC), not the offset
of the moment the ledger built its context; every eventID is still the hash of the event as sent."""

from __future__ import annotations

import datetime as dt

from serialine.host import db, masterdata, reporting, serials
from serialine.host.epcis import events as ev
from serialine.host.epcis.eventhash import event_hash
from serialine.host.ledger import Ledger

GTIN = "09506000134352"
SITE = "urn:epc:id:sgln:4012345.00000.0"
SWITCH = dt.datetime(2026, 10, 25, 1, 0, tzinfo=dt.timezone.utc)
BEFORE, AFTER = SWITCH - dt.timedelta(milliseconds=1), SWITCH


def _berlin_ledger(tmp_path) -> Ledger:
    conn = db.connect(str(tmp_path / "ledger.db"))
    masterdata.add_product(conn, GTIN, "Aspirin 100 mg", "EU_FMD", 7)
    serials.generate(conn, GTIN, 10)
    masterdata.set_location(conn, masterdata.Location(SITE, "Plant Berlin", country="DE", tz="Europe/Berlin"))
    masterdata.create_batch(conn, "B1", GTIN, "L1", "2030-01-31", 10, 2, 2, read_point="4012345000009.7")
    masterdata.start_batch(conn, "B1")
    return Ledger(conn, "B1")


def test_events_either_side_of_the_switch_carry_their_own_offset(tmp_path):
    ledger = _berlin_ledger(tmp_path)  # the context of the whole run, built once
    ctx, batch = ledger.ctx, ledger.batch
    assert ctx.zone == "Europe/Berlin"
    epc = ev.sgtin_urn(GTIN, "S1", 7)
    built = [ev.commissioning(ctx, [epc], batch.lot, batch.expiry, BEFORE),
             ev.commissioning(ctx, [epc], batch.lot, batch.expiry, AFTER),
             ev.packing(ctx, ev.sscc_urn("095060000000000015", 7), [epc], BEFORE),
             ev.packing(ctx, ev.sscc_urn("095060000000000015", 7), [epc], AFTER),
             ev.decommissioning(ctx, [epc], "destroyed", AFTER)]
    assert [(e["eventTime"], e["eventTimeZoneOffset"]) for e in built] == [
        ("2026-10-25T02:59:59.999+02:00", "+02:00"), ("2026-10-25T02:00:00.000+01:00", "+01:00"),
        ("2026-10-25T02:59:59.999+02:00", "+02:00"), ("2026-10-25T02:00:00.000+01:00", "+01:00"),
        ("2026-10-25T02:00:00.000+01:00", "+01:00")]
    for e in built:
        assert e["eventID"] == event_hash(e)  # the hash of the event as emitted
        assert dt.datetime.fromisoformat(e["eventTime"]) in (BEFORE, AFTER)  # the same instants
    assert built[0]["eventID"] != built[1]["eventID"]
    ledger.conn.close()


def test_the_context_s_offset_follows_the_zone_and_a_fixed_offset_stays_fixed(tmp_path):
    ledger = _berlin_ledger(tmp_path)
    assert (ledger.ctx.offset_at(BEFORE), ledger.ctx.offset_at(AFTER)) == ("+02:00", "+01:00")
    assert reporting.context_for(ledger.batch, BEFORE).tz_offset == "+02:00"
    assert reporting.context_for(ledger.batch, AFTER).tz_offset == "+01:00"
    fixed = ev.Context(read_point=SITE, biz_location=SITE, tz_offset="+05:30")
    assert [ev.sampling(fixed, [ev.sgtin_urn(GTIN, "S1", 7)], t)["eventTimeZoneOffset"]
            for t in (BEFORE, AFTER)] == ["+05:30", "+05:30"]
    ledger.conn.close()


def test_an_unknown_zone_is_refused_in_one_line():
    try:
        ev.Context(read_point=SITE, biz_location=SITE, zone="Mars/Base")
    except ValueError as exc:
        assert "unknown time zone 'Mars/Base'" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("an unknown zone was accepted")
