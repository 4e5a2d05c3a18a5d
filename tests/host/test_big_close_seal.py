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


TEXTS = st.text(alphabet=st.characters(max_codepoint=0x2030), max_size=10)
CELLS = st.one_of(st.none(), TEXTS, st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                  st.binary(max_size=4))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(CELLS, CELLS, st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False),
                                                  st.integers(-10 ** 6, 10 ** 6))), min_size=1, max_size=12))
def test_rows_written_by_sqlite_hash_as_the_rows_written_by_python(rows):
    """Whatever the cells hold (a REAL in the INTEGER column, a BLOB anywhere), SQLite's lines
    give the Python lines' digest, or the part is left to Python (None)."""
    import hashlib
    import sqlite3
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, a TEXT, b INTEGER, at REAL)")
    conn.executemany("INSERT INTO t (a, b, at) VALUES (?, ?, ?)", rows)
    cols = ["k", "a", "b", "at"]
    stored = conn.execute("SELECT k, a, b, at FROM t ORDER BY k").fetchall()
    want = hashlib.sha256(("x" + audit._rows_json(stored)).encode()).hexdigest()
    got = audit._sql_digest(conn, "t", cols, " FROM t WHERE (:key = :key) ORDER BY k", {"key": ""}, "x")
    assert got is None or got == {"rows": len(rows), "sha256": want}
    if not any(isinstance(v, (bytes, float)) for r in stored for v in r[1:3]):
        assert got is not None  # text, integers and NULL: SQLite writes them
