"""Events: identifiers, CBV vocabulary, event hash equal to GS1's reference implementation,
valid against the official EPCIS 2.0 JSON Schema with format checking."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from datetime import date, datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st

from serialine.host.epcis import document, events as ev, eventhash, validate
from .conftest import GTIN, all_kinds, sscc

WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def reference_hashes(tmp_path, events: list[dict]) -> list[str]:
    path = tmp_path / "doc.jsonld"
    path.write_bytes(document.dumps(document.epcis_document(events)))
    out = subprocess.run([sys.executable, "-m", "epcis_event_hash_generator", str(path)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return re.findall(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0", out)


def test_epc_urns_follow_tds():
    assert ev.sgtin_urn(GTIN, "ABC1", 7) == "urn:epc:id:sgtin:4012345.012345.ABC1"
    assert ev.sgtin_urn("4012345123456", "A/B%", 9) == "urn:epc:id:sgtin:401234512.0345.A%2FB%25"
    assert ev.sscc_urn(sscc(7), 7) == "urn:epc:id:sscc:4012345.3000000007"
    assert ev.sgln_urn("4012345000009", 7) == "urn:epc:id:sgln:4012345.00000.0"


@pytest.mark.parametrize("call", [
    lambda: ev.sgtin_urn("04012345123457", "A", 7),        # wrong check digit
    lambda: ev.sgtin_urn(GTIN, "", 7),                      # empty serial
    lambda: ev.sgtin_urn(GTIN, "x" * 21, 7),                # serial too long
    lambda: ev.sgtin_urn(GTIN, "A B", 7),                   # space is not in CSET 82
    lambda: ev.sgtin_urn(GTIN, "AB\n", 7),                  # nor a newline, even at the end
    lambda: ev.sgtin_urn(GTIN, "A", 13),                    # company prefix length
    lambda: ev.sscc_urn("12345", 7),
    lambda: ev.sscc_urn("34012345000000000\u0663", 7),  # an Arabic-Indic digit: int() takes it
    lambda: ev.Context(read_point="urn:x", biz_location="urn:epc:id:sgln:4012345.00000.0"),
])
def test_bad_identifiers_are_refused(call):
    with pytest.raises(ValueError):
        call()


def test_bad_event_input_is_refused(ctx):
    unit = ev.sgtin_urn(GTIN, "1", 7)
    with pytest.raises(ValueError):
        ev.commissioning(ctx, [unit], "L1", date(2028, 1, 1), datetime(2026, 1, 1))  # naive time
    with pytest.raises(ValueError):
        ev.commissioning(ctx, [], "L1", date(2028, 1, 1), WHEN)
    with pytest.raises(ValueError):
        ev.commissioning(ctx, [unit, unit], "L1", date(2028, 1, 1), WHEN)
    with pytest.raises(ValueError):
        ev.decommissioning(ctx, [unit], "lost", WHEN)
    with pytest.raises(ValueError):
        ev.packing(ctx, unit, [unit], WHEN)


def test_vocabulary_per_kind(events_all):
    commission, pack, pallet, unpack, destroyed, sampled, decommissioned = events_all
    assert (commission["type"], commission["action"], commission["bizStep"],
            commission["disposition"]) == ("ObjectEvent", "ADD", "commissioning", "active")
    assert commission["ilmd"] == {"cbvmda:lotNumber": "L0042",
                                  "cbvmda:itemExpirationDate": "2028-01-31"}
    assert (pack["action"], pack["bizStep"]) == ("ADD", "packing")
    assert pallet["childEPCs"] == [pack["parentID"]]
    assert (unpack["action"], unpack["bizStep"]) == ("DELETE", "unpacking")
    assert [(e["action"], e["bizStep"], e["disposition"]) for e in (destroyed, sampled, decommissioned)] == [
        ("DELETE", "destroying", "destroyed"), ("OBSERVE", "sampling", "non_sellable_other"),
        ("DELETE", "decommissioning", "inactive")]
    assert ev.DECOMMISSION_KINDS["sampled"] == ("decommissioning", "inactive")  # a sample's end of life
    assert commission["eventTime"] == "2026-11-24T18:00:00.123+01:00"


def test_same_fact_same_id_different_fact_different_id(ctx):
    a = ev.sgtin_urn(GTIN, "1", 7)
    b = ev.sgtin_urn(GTIN, "2", 7)
    one = ev.decommissioning(ctx, [a, b], "destroyed", WHEN)
    assert one["eventID"] == ev.decommissioning(ctx, [b, a], "destroyed", WHEN)["eventID"]
    assert one["eventID"] != ev.decommissioning(ctx, [a], "destroyed", WHEN)["eventID"]
    assert one["eventID"] != ev.decommissioning(ctx, [a, b], "sampled", WHEN)["eventID"]


def test_hash_equals_reference_for_every_kind(tmp_path, ctx):
    events = all_kinds(ctx)
    # serials and lots that exercise the canonicalisation: escapes, DL percent-encoding, digits
    events.append(ev.commissioning(ctx, [ev.sgtin_urn(GTIN, "a(1)/*:+,!&", 7),
                                         ev.sgtin_urn(GTIN, "0012", 7)], "00123",
                                   date(2027, 12, 31), WHEN))
    assert reference_hashes(tmp_path, events) == [e["eventID"] for e in events]


@settings(max_examples=15, deadline=None)
@given(serials=st.lists(st.text(alphabet="!\"%&'()*+,-./0123456789:;<=>?ABZ_az", min_size=1,
                                max_size=20), min_size=1, max_size=4, unique=True),
       lot=st.text(alphabet="0123456789AZ-", min_size=1, max_size=20),
       micros=st.integers(0, 999) , offset=st.sampled_from(["+00:00", "-05:30", "+14:00"]))
def test_hash_equals_reference_fuzzed(tmp_path_factory, serials, lot, micros, offset):
    ctx = ev.Context(read_point=ev.sgln_urn("4012345000009", 7, "A.1"),
                     biz_location=ev.sgln_urn("4012345000009", 7), tz_offset=offset)
    epcs = [ev.sgtin_urn(GTIN, s, 7) for s in serials]
    when = WHEN.replace(microsecond=micros * 1000)
    events = [ev.commissioning(ctx, epcs, lot, date(2030, 2, 28), when),
              ev.packing(ctx, ev.sscc_urn(sscc(micros), 7), epcs, when)]
    assert reference_hashes(tmp_path_factory.mktemp("h"), events) == [e["eventID"] for e in events]


def test_documents_valid_against_json_schema_with_formats(events_all):
    validate.json_document(document.epcis_document(events_all))


def test_schema_validation_catches_a_bad_event(events_all):
    bad = json.loads(json.dumps(events_all[0]))
    bad["eventTime"] = "2026-13-45T00:00:00Z"   # only a FormatChecker notices this
    with pytest.raises(validate.InvalidDocument):
        validate.json_document(document.epcis_document([bad]))


def test_hash_refuses_unknown_fields(events_all):
    with pytest.raises(ValueError):
        eventhash.event_hash({**events_all[0], "sensorElementList": []})


@settings(max_examples=200, deadline=None)
@given(gtin_body=st.text(alphabet="0123456789", min_size=13, max_size=13),
       serial=st.text(min_size=0, max_size=22), prefix_len=st.integers(4, 14))
def test_sgtin_urn_fuzzed_agrees_with_reference_normaliser(gtin_body, serial, prefix_len):
    """Any input either raises ValueError or gives an EPC URI that GS1's reference normaliser
    maps back to the same GTIN and serial."""
    from epcis_event_hash_generator.dl_normaliser import normaliser
    gtin = gtin_body + str(eventhash.check_digit(gtin_body))
    try:
        urn = ev.sgtin_urn(gtin, serial, prefix_len)
    except ValueError:
        return
    dl = normaliser(urn)
    assert dl is not None and dl == eventhash.canonical_uri(urn)
    assert dl.startswith(f"https://id.gs1.org/01/{gtin}/21/")
    assert urllib.parse.unquote(dl.rsplit("/21/", 1)[1]) == serial


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40) | st.text(alphabet="0123456789", min_size=17, max_size=17).map(
    lambda body: body + str(eventhash.check_digit(body))))
def test_sscc_urn_fuzzed_refuses_or_round_trips(text):
    from epcis_event_hash_generator.dl_normaliser import normaliser
    try:
        urn = ev.sscc_urn(text, 7)
    except ValueError:
        return
    assert normaliser(urn) == f"https://id.gs1.org/00/{text}"
