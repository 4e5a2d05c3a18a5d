"""gs1._plain (the regex a plain AI's value is checked by first) passes exactly what the
Syntax Dictionary's walk passes, and a value it misses still gets the walk's error."""

import pytest
from hypothesis import given, settings, strategies as st

from serialine.host import gs1

PLAIN = sorted(ai for ai in gs1.dictionary() if gs1._plain(ai) is not None)
_TEXT = st.text(alphabet=st.sampled_from(sorted(gs1.CSET82) + [" ", "\x1d", "é", "٣", "²", "\n", "~"]), max_size=40)


def _error(check, ai, value):
    try:
        check(ai, value)
    except gs1.GS1Error as exc:
        return str(exc)
    return None


def test_plain_covers_the_pack_fields():
    assert {"10", "21"} <= set(PLAIN)
    assert "01" not in PLAIN and "17" not in PLAIN  # check digit, date: always the walk


@settings(max_examples=400, deadline=None)
@given(ai=st.sampled_from(PLAIN), value=_TEXT | st.from_regex(r"[0-9]{0,40}", fullmatch=True))
def test_plain_agrees_with_the_walk(ai, value):
    walk = _error(gs1._check_spec, ai, value)
    if gs1._plain(ai).fullmatch(value):
        assert walk is None
    assert _error(gs1._check_value, ai, value) == walk
    assert _error(lambda a, v: gs1.check_each(a, [v]), ai, value) == walk


def test_check_each_raises_at_the_first_bad_value():
    with pytest.raises(gs1.GS1Error, match=r"characters \['~'\]"):
        gs1.check_each("21", ["ABC", "A~", "A" * 21])
    gs1.check_each("21", ["ABC", "0" * 20])
    gs1.check_each("21", [])


@pytest.mark.parametrize("value, words", [("", "length 0 not in 1..20"), ("A" * 21, "length 21"),
                                          ("AB~C", "characters ['~'] not allowed")])
def test_plain_miss_keeps_the_error(value, words):
    with pytest.raises(gs1.GS1Error, match=words.replace("[", r"\[").replace("]", r"\]")):
        gs1.validate([("21", value)])
