"""`serialine ship` and the DSCSA 1.2 export on a real ledger: a batch run through the ledger,
closed, its pallets shipped; the shipping event and the master data are valid JSON-LD and 1.2
XML, hash alike in every rendering (reference generator), and bad shipments change nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from lxml import etree

from serialine.host import cli, db, masterdata, reconcile, reporting
from serialine.host.db import transaction
from serialine.host.epcis import document, outbox, validate
from serialine.host.ledger import Ledger

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "host"))
from hostkit import Line  # noqa: E402

GTIN = "00350242040624"  # US: indicator 0, 03 + NDC 50242-040-62
SITE = "urn:epc:id:sgln:4012345.00000.0"
PARTNER = "urn:epc:id:sgln:0614141.00001.0"
PARTNER_HQ = "urn:epc:id:sgln:0614141.00000.0"
MDA = "urn:epcglobal:cbv:mda#"


def open_batch(conn, batch_id="B1", units=8):
    masterdata.create_batch(conn, batch_id, GTIN, f"L{batch_id}", date.today() + timedelta(days=700), units, 2, 2,
                            read_point="4012345000009.7")
    masterdata.start_batch(conn, batch_id)
    ledger = Ledger(conn, batch_id)
    with transaction(conn):
        ledger.queue_codes(units)
    line = Line(ledger, boot_id=hash(batch_id) % 1000)
    for u in range(units):
        line.unit(u)
    return ledger


@pytest.fixture
def ledger(tmp_path):
    path = str(tmp_path / "ledger.db")
    conn = db.connect(path)
    masterdata.add_product(conn, GTIN, "Examplol 100 mg tablets", "US_DSCSA", 7, ndc="50242-040-62",
                           dosage_form="TABLET", strength="100 mg", net_content="30 tablets",
                           manufacturer="Example Pharma Inc.")
    masterdata.set_location(conn, masterdata.Location(SITE, "Plant Berlin", "Allee 1", "Berlin", None, "10115",
                                                      "DE", "Europe/Berlin"))
    masterdata.set_location(conn, masterdata.Location(PARTNER, "Wholesaler DC", "1 Main St", "Columbus", "OH",
                                                      "43215", "US"))
    serials_for(conn, 60)
    open_batch(conn)
    reconcile.close_batch(conn, "B1", "ann")
    pallets = [s for (s,) in conn.execute(
        "SELECT sscc FROM container WHERE batch_id='B1' AND level='pallet' ORDER BY container_id")]
    cases = [s for (s,) in conn.execute(
        "SELECT sscc FROM container WHERE batch_id='B1' AND level='case' ORDER BY container_id")]
    yield path, conn, pallets, cases
    conn.close()


def serials_for(conn, n):
    from serialine.host import serials
    serials.generate(conn, GTIN, n)


def ship(path, *argv):
    return cli.main(["ship", *argv, "--db", path, "--user", "ann"])


def test_ship_two_pallets_then_export_dscsa_xml_and_jsonld(ledger, tmp_path, capsys):
    path, conn, pallets, cases = ledger
    assert len(pallets) == 2
    assert ship(path, "--sscc", pallets[0], "--sscc", pallets[1], "--to", PARTNER, "--to-party", PARTNER_HQ,
                "--po", "PO-4711", "--desadv", "DA-0815") == 0
    event = outbox.batch_events(conn, "B1")[-1]
    assert (event["bizStep"], event["disposition"], event["action"]) == ("shipping", "in_transit", "OBSERVE")
    batch = masterdata.get_batch(conn, "B1")
    assert event["epcList"] == [reporting.sscc(batch, p) for p in pallets]
    assert event["bizTransactionList"] == [
        {"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:0614141000005:PO-4711"},
        {"type": "desadv", "bizTransaction": "urn:epcglobal:cbv:bt:4012345000009:DA-0815"}]
    assert event["sourceList"] == [{"type": "owning_party", "source": SITE}, {"type": "location", "source": SITE}]
    assert event["destinationList"] == [{"type": "owning_party", "destination": PARTNER_HQ},
                                        {"type": "location", "destination": PARTNER}]
    assert event["eventTimeZoneOffset"] in ("+01:00", "+02:00")  # Berlin
    assert conn.execute("SELECT action FROM audit ORDER BY seq DESC LIMIT 1").fetchone() == ("ship",)

    out = tmp_path / "out"
    assert cli.main(["epcis", "export", "--batch", "B1", "--format", "jsonld", "--out", str(out), "--db", path]) == 0
    assert cli.main(["epcis", "export", "--batch", "B1", "--format", "xml12", "--out", str(out), "--db", path,
                     "--receiver", PARTNER]) == 0
    data = (out / "B1.xml").read_bytes()
    validate.xml_document(data, "1.2")
    root = etree.fromstring(data)
    sbdh = "{http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader}"
    assert root.find(f".//{sbdh}Sender/{sbdh}Identifier").text == SITE
    assert root.find(f".//{sbdh}Receiver/{sbdh}Identifier").text == PARTNER
    vocab = {v.get("type"): {e.get("id"): {a.get("id")[len(MDA):]: a.text for a in e.iter("attribute")}
                             for e in v.iter("VocabularyElement")}
             for v in root.iter("Vocabulary")}
    assert vocab["urn:epcglobal:epcis:vtype:EPCClass"] == {"urn:epc:idpat:sgtin:0350242.004062.*": {
        "additionalTradeItemIdentification": "50242004062", "additionalTradeItemIdentificationTypeCode": "FDA_NDC_11",
        "regulatedProductName": "Examplol 100 mg tablets", "manufacturerOfTradeItemPartyName": "Example Pharma Inc.",
        "dosageFormType": "TABLET", "strengthDescription": "100 mg", "netContentDescription": "30 tablets"}}
    assert vocab["urn:epcglobal:epcis:vtype:Location"] == {
        SITE: {"name": "Plant Berlin", "streetAddressOne": "Allee 1", "city": "Berlin", "postalCode": "10115",
               "countryCode": "DE"},
        PARTNER: {"name": "Wholesaler DC", "streetAddressOne": "1 Main St", "city": "Columbus", "state": "OH",
                  "postalCode": "43215", "countryCode": "US"}}
    ship_xml = root.findall(".//ObjectEvent")[-1]
    assert [b.get("type") for b in ship_xml.iter("bizTransaction")] == ["urn:epcglobal:cbv:btt:po",
                                                                       "urn:epcglobal:cbv:btt:desadv"]
    assert [s.get("type") for s in ship_xml.find("extension/destinationList")] == [
        "urn:epcglobal:cbv:sdt:owning_party", "urn:epcglobal:cbv:sdt:location"]

    # every rendering hashes to the eventID the ledger gave the shipping event
    jsonld = out / "B1.jsonld"
    json.loads(jsonld.read_text())
    for rendering in (jsonld, out / "B1.xml"):
        got = subprocess.run([sys.executable, "-m", "epcis_event_hash_generator", str(rendering)],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        assert re.findall(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0", got)[-1] == event["eventID"], rendering


def test_json_schema_accepts_the_shipping_event(ledger):
    path, conn, pallets, _ = ledger
    partner_gln = masterdata.gln_of(PARTNER)  # a registered location may be named by its GLN
    assert ship(path, "--sscc", pallets[0], "--to", partner_gln, "--po", "urn:epcglobal:cbv:bt:0614141000005:P1",
                "--desadv", "D1", "--read-point", "4012345000009.dock1") == 0
    event = outbox.batch_events(conn, "B1")[-1]
    assert event["destinationList"][1] == {"type": "location", "destination": PARTNER}
    assert event["readPoint"]["id"] == "urn:epc:id:sgln:4012345.00000.dock1"
    assert event["bizTransactionList"][0]["bizTransaction"] == "urn:epcglobal:cbv:bt:0614141000005:P1"
    validate.json_document(document.epcis_document([event]))


def refused(path, conn, capsys, message, *argv):
    before = db.snapshot(conn)
    assert ship(path, *argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert db.snapshot(conn) == before


def test_bad_shipments_are_refused_whole(ledger, capsys):
    path, conn, pallets, cases = ledger
    common = ("--to", PARTNER, "--po", "P1", "--desadv", "D1")
    refused(path, conn, capsys, "unknown SSCC", "--sscc", pallets[0], "--sscc", "340123450000099990", *common)
    refused(path, conn, capsys, "is on pallet", "--sscc", cases[0], *common)
    refused(path, conn, capsys, "named twice", "--sscc", pallets[0], "--sscc", pallets[0], *common)
    refused(path, conn, capsys, "not an SGLN", "--sscc", pallets[0], "--to", "urn:epc:id:sgln:1.2.0",
            "--po", "P1", "--desadv", "D1")
    refused(path, conn, capsys, "wrong check digit", "--sscc", pallets[0], "--to", "0614141000006",
            "--po", "P1", "--desadv", "D1")
    refused(path, conn, capsys, "the PO", "--sscc", pallets[0], "--to", PARTNER, "--po", "P 1", "--desadv", "D1")
    serials_for(conn, 20)
    open_batch(conn, "B2", units=4)  # running, not closed
    open_pallet = conn.execute("SELECT sscc FROM container WHERE batch_id='B2' AND level='pallet'"
                               " AND sscc IS NOT NULL").fetchone()[0]
    refused(path, conn, capsys, "close (reconcile) it before shipping", "--sscc", pallets[0],
            "--sscc", open_pallet, *common)
    assert ship(path, "--sscc", pallets[0], *common) == 0
    capsys.readouterr()
    refused(path, conn, capsys, "already shipped", "--sscc", pallets[1], "--sscc", pallets[0], *common)
    with pytest.raises(Exception, match="shipped"):
        with transaction(conn):
            conn.execute("UPDATE container SET state='disaggregated' WHERE sscc=?", (pallets[0],))
    (serial,) = conn.execute("SELECT p.serial FROM packed p JOIN container c USING (container_id)"
                             " JOIN container pl ON pl.container_id = c.parent_id WHERE pl.sscc = ? LIMIT 1",
                             (pallets[0],)).fetchone()
    assert cli.main(["batch", "reopen", "B1", "--reason", "a complaint", "--db", path, "--user", "qa"]) == 0
    capsys.readouterr()
    assert cli.main(["rework", "remove", GTIN, serial, "--reason", "take it out", "--db", path, "--user", "ann"]) == 1
    assert "shipped" in capsys.readouterr().err


def test_dscsa_export_refuses_what_a_partner_could_not_use(ledger, tmp_path, capsys):
    path, conn, _, _ = ledger
    out = tmp_path / "out"
    base = ["epcis", "export", "--batch", "B1", "--format", "xml12", "--out", str(out), "--db", path]
    assert cli.main(base) == 1
    assert "needs --receiver" in capsys.readouterr().err
    assert cli.main(base + ["--receiver", "not an SGLN"]) == 1
    assert "not an SGLN" in capsys.readouterr().err
    assert cli.main(base + ["--receiver", PARTNER, "--sender", "urn:epc:id:sgln:4012345.0000.0"]) == 1
    assert "not an SGLN" in capsys.readouterr().err
    assert cli.main(base + ["--receiver", SITE]) == 1  # the sender (the batch's site) given as receiver
    assert f"--receiver {SITE} is the sender" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())
    masterdata.add_product(conn, "09506000134352", "EU pack", "EU_FMD", 7)
    masterdata.create_batch(conn, "E1", "09506000134352", "LE1", date.today() + timedelta(days=700), 1, 1, 1)
    with transaction(conn):
        reporting.commissioned(conn, reporting.context_for(masterdata.get_batch(conn, "E1")),
                               masterdata.get_batch(conn, "E1"), ["X1"])
    assert cli.main(base[:3] + ["E1"] + base[4:] + ["--receiver", PARTNER]) == 1
    assert "lacks DSCSA master data: --ndc, --manufacturer" in capsys.readouterr().err
