import datetime as dt

import pytest
from hypothesis import given, settings, strategies as st

from serialine.host import gs1
from serialine.host.devices.camera import CameraLineError, parse_line

GTIN = "09506000134352"


def test_check_digits():
    assert gs1.check_digit("0950600013435") == 2
    assert gs1.valid_check_digit(GTIN)
    assert not gs1.valid_check_digit("09506000134353")
    s = gs1.sscc(0, "9506000", 1)
    assert len(s) == 18 and gs1.valid_check_digit(s) and s.startswith("09506000")


def test_element_string_separators_and_forms():
    pairs = gs1.pack_pairs(GTIN, "ABC123", "L1", dt.date(2027, 12, 31), "714", "12345")
    es = gs1.element_string(pairs)
    # GS after variable-length fields that are not last, never after fixed ones or at the end
    assert es == "0109506000134352172712311" "0L1\x1d21ABC123\x1d71412345"
    assert gs1.hri(pairs) == "(01)09506000134352(17)271231(10)L1(21)ABC123(714)12345"
    assert gs1.digital_link(pairs) == "https://id.gs1.org/01/09506000134352/10/L1/21/ABC123?17=271231&714=12345"


@pytest.mark.parametrize("pairs, words", [
    ([("01", "09506000134353")], "check digit"),
    ([("01", "0950600013435")], "length"),
    ([("21", "A" * 21)], "length"),
    ([("21", "AB#C")], "not allowed"),
    ([("17", "271301")], "not a valid date"),
    ([("17", "27123")], "length"),
    ([("99999", "x")], "not in the GS1 Syntax Dictionary"),
    ([("21", "A"), ("21", "B")], "twice"),
])
def test_validation_refuses(pairs, words):
    with pytest.raises(gs1.GS1Error, match=words):
        gs1.element_string(pairs)


def test_day_zero_means_last_day_of_month():
    assert gs1.parse_yymmdd("270200") == dt.date(2027, 2, 28)


def test_parse_read_with_biip():
    es = gs1.element_string(gs1.pack_pairs(GTIN, "S1", "L1", dt.date(2027, 12, 31)))
    r = gs1.parse_read("]d2" + es)
    assert r.symbology == "]d2" and r.ais == {"01": GTIN, "17": "271231", "10": "L1", "21": "S1"} and r.data == es
    for bad in ("", "]d2", "hello", "]d201095060001343"):
        with pytest.raises(gs1.GS1Error):
            gs1.parse_read(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_parse_read_only_raises_gs1error(text):
    try:
        r = gs1.parse_read(text)
    except gs1.GS1Error:
        return
    gs1.validate(list(r.ais.items()))  # whatever parses is valid by the dictionary


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["01", "10", "17", "21", "00", "714", "8006", "9"]),
                          st.text(alphabet="0123456789ABZ#-\x1d", max_size=25)), max_size=4))
def test_fuzz_validate_round_trips(pairs):
    try:
        es = gs1.element_string(pairs)
    except gs1.GS1Error:
        return
    assert gs1.parse_read("]d2" + es).ais == dict(pairs)


def test_camera_lines():
    r = parse_line("READ 17 B ]d2010950600013435217271231\\x1d10L1", 1.5)
    assert (r.n, r.grade, r.data, r.t) == (17, "B", "]d2010950600013435217271231\x1d10L1", 1.5)
    assert parse_line("NOREAD 3").data is None
    assert parse_line("READ 4 2.5 ]d2x").grade == "2.5"
    for bad in ("READ", "READ 0 A x", "READ x A y", "READ 1 G y", "READ 1 4.5 y", "NOREAD", "NOREAD -1",
                "FOO 1", "READ 1 A \x7f", "READ 1 A é"):
        with pytest.raises(CameraLineError):
            parse_line(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_camera_line_parser(line):
    try:
        r = parse_line(line)
    except CameraLineError:
        return
    assert r.n >= 1 and (r.data is None) == (r.grade is None)
