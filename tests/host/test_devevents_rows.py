"""devevents.rows (a poll's rows in one loop) gives each sequenced message the row `row` gives it,
skips the unsequenced ones, and every packed body reads back as the fields it was packed from."""

from hypothesis import given, settings, strategies as st

from serialine.host import devevents
from serialine.protocol import schema

_SEQUENCED = sorted(n for n, p in devevents._PACK.items() if p.fields)


def _fields(name, draw):
    msg = next(m for m in schema.MESSAGES if m.name == name)
    out = {}
    for f in schema.flat_fields(msg.payload):
        bits = 8 * f.size
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if f.fmt.islower() else (0, (1 << bits) - 1)
        out[f.name] = draw(st.integers(lo, hi))
    out.setdefault("event_seq", draw(st.integers(0, 1 << 31)))
    return out


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_rows_are_row_each_and_read_back(data):
    names = data.draw(st.lists(st.sampled_from(_SEQUENCED + ["ACK", "LOG"]), max_size=12))
    msgs = []
    for n in names:
        if n == "ACK":
            msgs.append((n, {}))  # no event_seq: no row
        elif n == "LOG":
            msgs.append((n, {"event_seq": 1, "level": 20, "text": "x"}))  # a string: JSON body
        else:
            msgs.append((n, _fields(n, data.draw)))
    got = devevents.rows(3, msgs, 250)
    assert got == [devevents.row(3, n, f, 250) for n, f in msgs if "event_seq" in f]
    for (n, f), (ref, seq, msg, unit, body, body2, at) in zip([m for m in msgs if "event_seq" in m[1]], got):
        assert (ref, seq, unit, at, devevents.name(msg)) == (3, f["event_seq"], f.get("unit_seq"), 250, n)
        assert devevents.fields(msg, body, body2) == {k: v for k, v in f.items() if k not in devevents.IN_COLUMNS}


def test_row_needs_event_seq():
    try:
        devevents.row(1, "UNIT_DETECTED", {"unit_seq": 0, "pos": 0, "t_us": 0, "flags": 0}, 0)
    except KeyError as exc:
        assert exc.args == ("event_seq",)
    else:
        raise AssertionError("a row without event_seq")
