"""The close's seal encodes a chunk of rows in one call (audit._rows_json): the lines, and so every
digest, are exactly the row-by-row ones, whatever the values hold (brackets, quotes, "],[")."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from serialine.host import audit

VALUES = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.binary(max_size=8),
                   st.text(alphabet=st.sampled_from(list('[],"\\\n{}:x é\u2028')), max_size=12))


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.lists(st.tuples(*[VALUES] * n), min_size=1, max_size=20)))
def test_chunk_lines_are_the_row_by_row_lines(rows):
    assert audit._rows_json(rows) == "".join(audit._row_json(r) + "\n" for r in rows)


def test_a_string_holding_a_joint_is_encoded_row_by_row():
    rows = [(1, "a],[b"), (2, None)]
    assert audit._rows_json(rows) == '[1,"a],[b"]\n[2,null]\n'
