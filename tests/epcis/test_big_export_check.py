"""The export's event check at batch scale (document.EventChecker): an event like one already
validated (same template, other times, IDs and EPCs) is judged by the subschemas its varying
values met, and that judgement is the whole-document validation's, good or bad."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from serialine.host.epcis import document, events, validate

CTX = events.Context(read_point="urn:epc:id:sgln:4012345.00000.7", biz_location="urn:epc:id:sgln:4012345.00000.0",
                     zone="Europe/Berlin")
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def sgtin(i: int) -> str:
    return events.sgtin_urn("00350242040624", f"S{i:07d}", 7)


def batch_events() -> list[dict]:
    out = []
    for n in range(6):
        epcs = [sgtin(10 * n + k) for k in range(10)]
        out.append(events.commissioning(CTX, epcs, "L1", date(2028, 1, 31), T0 + timedelta(seconds=2 * n)))
        out.append(events.packing(CTX, events.sscc_urn(_sscc(n), 7), epcs, T0 + timedelta(seconds=2 * n + 1)))
    return out


def _sscc(n: int) -> str:
    from serialine.host.epcis.eventhash import check_digit
    body = f"0401234500000{n:04d}"
    return body + str(check_digit(body))


def whole(event: dict) -> list[tuple[str, str]]:
    """What validating a whole document holding the event finds: (path in the event, message)."""
    try:
        validate.json_document(document.epcis_document([event]))
    except validate.InvalidDocument as exc:
        return sorted((path.removeprefix("epcisBody/eventList/0").lstrip("/") or "(event)", message[:60])
                      for path, message in (line.split(": ", 1) for line in str(exc).splitlines()[1:]))
    return []


def checked(checker: document.EventChecker, event: dict) -> list[tuple[str, str]]:
    try:
        checker.check(event, "e")
    except validate.InvalidDocument as exc:
        return sorted((path, message[:60]) for path, message in
                      (line.removeprefix("e: ").split(": ", 1) for line in str(exc).splitlines()[1:]))
    return []


@pytest.fixture()
def learnt():
    checker = document.EventChecker(*document.envelope())
    assert checker._templates is not None, "the shipped schema should allow the template shortcut"
    good = batch_events()
    for event in good:
        assert checked(checker, event) == []
    assert len(checker._templates) == 2  # commissioning, packing
    return checker, good


def test_varying_values_are_judged_as_the_whole_document_judges_them(learnt):
    checker, good = learnt
    obj, agg = good[0], good[1]
    mutants = [dict(obj, eventTime="yesterday"), dict(obj, eventTime=7), dict(obj, eventID="x y"),
               dict(obj, epcList=obj["epcList"] + [obj["epcList"][0]]), dict(obj, epcList=["no uri", 7]),
               dict(obj, epcList="urn:epc:id:sgtin:0350242.004062.1"), dict(obj, epcList=[]),
               dict(obj, epcList=["urn:epc:id:sgtin:0350242.004062.A%2FB"]), dict(obj, epcList=[sgtin(999)]),
               dict(agg, childEPCs=[]), dict(agg, parentID="x y"), dict(agg, parentID=5),
               dict(agg, childEPCs=[sgtin(1), "bad uri"]), dict(agg, eventID=None)]
    refused = 0
    for bad in mutants:
        expected = whole(bad)
        refused += bool(expected)
        assert checked(checker, bad) == expected, bad
    assert refused >= 10


def test_a_learnt_template_still_refuses_after_many_good_events(learnt):
    checker, good = learnt
    for event in good * 3:
        assert checked(checker, event) == []
    bad = dict(good[0], eventTime="2026-13-01T00:00:00.000+01:00")
    assert checked(checker, bad) == whole(bad) != []


@settings(max_examples=300, deadline=None)
@given(st.from_regex(document.FAST_URI, fullmatch=True))
def test_what_the_fast_uri_grammar_takes_the_full_uri_check_takes(text):
    from jsonschema import FormatChecker
    assert FormatChecker().conforms(text, "uri")
