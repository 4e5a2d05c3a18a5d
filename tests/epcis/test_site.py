"""Where and when: the site's SGLN, the line's read point and the plant's time zone are ledger
configuration (audited), checked when entered, and carried by every event the batch emits."""

from __future__ import annotations

import datetime as dt

import pytest

from serialine.host import cli, db, masterdata, reporting
from serialine.host.epcis import outbox

GTIN = "09506000134352"
SITE_GLN = "4012345000009"  # GS1 example GLN, company prefix 4012345
SITE = "urn:epc:id:sgln:4012345.00000.0"


@pytest.fixture
def ledger(tmp_path):
    path = tmp_path / "ledger.db"
    conn = db.connect(str(path))
    masterdata.add_product(conn, GTIN, "Aspirin 100 mg", "EU_FMD", 7)
    conn.close()
    return str(path)


def run(ledger, *argv):
    return cli.main(["batch", *argv, "--db", ledger, "--user", "ann"])


def site(ledger, *extra):
    return run(ledger, "site", SITE_GLN, "--prefix-len", "7", "--name", "Plant Berlin", "--street",
               "Allee 1", "--city", "Berlin", "--postal", "10115", "--country", "DE", *extra)


def test_site_read_point_and_zone_reach_the_events_with_the_local_offset(ledger):
    assert site(ledger, "--tz", "Europe/Berlin") == 0
    assert run(ledger, "create", "B1", GTIN, "L1", "2030-01-31", "--planned", "10", "--case-size", "2",
               "--pallet-size", "2", "--read-point", f"{SITE_GLN}.7") == 0
    conn = db.connect(ledger)
    batch = masterdata.get_batch(conn, "B1")
    assert (batch.site, batch.read_point, batch.tz) == (SITE, "urn:epc:id:sgln:4012345.00000.7", "Europe/Berlin")
    winter = dt.datetime(2026, 1, 15, 12, tzinfo=dt.timezone.utc)
    summer = dt.datetime(2026, 7, 15, 12, tzinfo=dt.timezone.utc)
    assert reporting.context_for(batch, winter).tz_offset == "+01:00"
    assert reporting.context_for(batch, summer).tz_offset == "+02:00"
    ctx = reporting.context_for(batch, summer)
    with db.transaction(conn):
        reporting.commissioned(conn, ctx, batch, ["S1"])
    (event,) = outbox.batch_events(conn, "B1")
    assert event["bizLocation"]["id"] == SITE
    assert event["readPoint"]["id"] == "urn:epc:id:sgln:4012345.00000.7"
    offset = ctx.offset_at(dt.datetime.fromisoformat(event["eventTime"]))  # the event's own, not summer's
    assert event["eventTimeZoneOffset"] == offset and event["eventTime"].endswith(offset)
    actions = [a for (a,) in conn.execute("SELECT action FROM audit ORDER BY seq")]
    assert actions[-2:] == ["location.set", "batch.create"]


@pytest.mark.parametrize("args,message", [
    (("site", "4012345000008", "--prefix-len", "7", "--name", "x", "--tz", "UTC"), "wrong check digit"),
    (("site", "4012345000009", "--name", "x", "--tz", "UTC"), "company prefix length"),
    (("site", "urn:epc:id:sgln:4012345.0000.0", "--name", "x", "--tz", "UTC"), "is not an SGLN"),
    (("site", "not a gln", "--name", "x"), "neither a GLN"),
    (("site", "4012345000009", "--prefix-len", "7", "--name", "x", "--tz", "Mars/Base"), "unknown time zone"),
    (("site", "4012345000009", "--prefix-len", "7", "--name", "x", "--country", "Germany"), "alpha-2"),
    (("create", "B2", GTIN, "L2", "2030-01-31", "--planned", "1", "--case-size", "1", "--pallet-size", "1",
      "--site", "4012345000016"), "unknown site"),
    (("create", "B2", GTIN, "L2", "2030-01-31", "--planned", "1", "--case-size", "1", "--pallet-size", "1",
      "--read-point", "4012345000008.1"), "wrong check digit"),
])
def test_bad_where_and_when_is_refused_in_one_line_and_changes_nothing(ledger, capsys, args, message):
    assert site(ledger, "--tz", "Europe/Berlin") == 0
    capsys.readouterr()
    conn = db.connect(ledger)
    before = db.snapshot(conn)
    assert run(ledger, *args) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert db.snapshot(conn) == before


def test_without_a_site_the_batch_keeps_the_placeholder_and_says_so(ledger, capsys):
    assert run(ledger, "create", "B1", GTIN, "L1", "2030-01-31", "--planned", "1", "--case-size", "1",
               "--pallet-size", "1") == 0
    assert "no site configured" in capsys.readouterr().err
    conn = db.connect(ledger)
    ctx = reporting.context_for(masterdata.get_batch(conn, "B1"))
    assert (ctx.biz_location, ctx.tz_offset) == ("urn:epc:id:sgln:9506000.00000.0", "+00:00")


def test_two_sites_need_an_explicit_site_and_a_partner_location_is_no_site(ledger, capsys):
    assert site(ledger, "--tz", "Europe/Berlin") == 0
    assert run(ledger, "site", "urn:epc:id:sgln:0614141.00001.0", "--name", "Wholesaler", "--country", "US") == 0
    assert run(ledger, "site", "urn:epc:id:sgln:4012345.00001.0", "--name", "Plant 2", "--tz", "America/New_York") == 0
    capsys.readouterr()
    create = ("create", "B1", GTIN, "L1", "2030-01-31", "--planned", "1", "--case-size", "1", "--pallet-size", "1")
    assert run(ledger, *create) == 1
    assert "2 sites are configured" in capsys.readouterr().err
    assert run(ledger, *create, "--site", "urn:epc:id:sgln:4012345.00001.0") == 0
    conn = db.connect(ledger)
    assert masterdata.get_batch(conn, "B1").tz == "America/New_York"
    with pytest.raises(masterdata.MasterDataError, match="unknown site"):
        masterdata.create_batch(conn, "B2", GTIN, "L2", "2030-01-31", 1, 1, 1,
                                site="urn:epc:id:sgln:0614141.00001.0")


def test_updating_a_site_changes_what_is_given_and_keeps_the_rest(ledger, capsys):
    assert site(ledger, "--tz", "Europe/Berlin") == 0
    assert run(ledger, "site", SITE, "--name", "Plant Berlin-Mitte", "--street", "Allee 2") == 0
    assert "updated site" in capsys.readouterr().out
    conn = db.connect(ledger)
    loc = masterdata.get_location(conn, SITE)
    assert (loc.name, loc.street, loc.city, loc.tz) == ("Plant Berlin-Mitte", "Allee 2", "Berlin", "Europe/Berlin")
    assert [a for (a,) in conn.execute("SELECT action FROM audit ORDER BY seq")][-2:] == ["location.set"] * 2
