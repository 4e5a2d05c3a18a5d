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
    got = audit._sql_digest(conn, "t", cols, " WHERE (:key = :key)", "k", {"key": ""}, "x")
    assert got is None or got == {"rows": len(rows), "sha256": want}
    if not any(isinstance(v, (bytes, float)) for r in stored for v in r[1:3]):
        assert got is not None  # text, integers and NULL: SQLite writes them


KEYS = st.one_of(st.integers(-3, 3), st.none(), st.sampled_from(["a", "b"]), st.just(1.5))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(KEYS, KEYS, CELLS, CELLS), min_size=0, max_size=30), st.integers(1, 7),
       st.sampled_from(["", " WITHOUT ROWID"]))
def test_rows_written_by_sqlite_in_chunks_hash_as_the_rows_written_by_python(rows, chunk, form):
    """A table's rows written by SQLite `chunk` rows to a string, chunk after chunk by the key:
    the Python lines' digest whatever the keys and cells hold (NULL or REAL keys, "." and "e" in a
    text beside an integer, one key column shared across a chunk's end or not), or the part left
    to Python (None)."""
    import hashlib
    import sqlite3
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE TABLE t (g INTEGER {'NOT NULL' if form else ''}, k INTEGER {'NOT NULL' if form else ''},"
                 f" a TEXT, b INTEGER, PRIMARY KEY (g, k)){form}")
    if form:
        rows = [r for r in rows if None not in r[:2]]
    rows = list({r[:2]: r for r in rows}.values())  # the key is unique
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    stored = conn.execute("SELECT g, k, a, b FROM t ORDER BY g, k").fetchall()
    want = hashlib.sha256(("x" + audit._rows_json(stored)).encode()).hexdigest()
    got = audit._sql_digest(conn, "t", ["g", "k", "a", "b"], " WHERE (:key = :key)", "g, k", {"key": ""}, "x", chunk)
    assert got is None or got == {"rows": len(stored), "sha256": want}
    plain = not any(isinstance(v, (bytes, float)) for r in stored for v in (r[0], r[1], r[3])) and not any(
        isinstance(r[2], bytes) for r in stored)
    if plain and not any(None in r[:2] for r in stored):
        assert got is not None  # text, integers and NULL, every key comparable: SQLite writes them


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(CELLS, CELLS, st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False),
                                                  st.integers(-10 ** 6, 10 ** 6))), min_size=1, max_size=12),
       st.booleans())
def test_a_blob_in_form_2_is_written_by_sqlite_as_by_python(rows, tail):
    """Form 2 (the links' lines since): a BLOB in a column declared BLOB is written [its hex] by
    SQLite, the Python lines' digest (the body of an outbox row, with or without a REAL after it)."""
    import hashlib
    import sqlite3
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, a TEXT, body BLOB, at REAL)")
    conn.executemany("INSERT INTO t (a, body, at) VALUES (?, ?, ?)", rows)
    cols = ["k", "a", "body", "at"][:4 if tail else 3]
    stored = conn.execute(f"SELECT {', '.join(cols)} FROM t ORDER BY k").fetchall()
    want = hashlib.sha256(("x" + audit._rows_json(stored, 2)).encode()).hexdigest()
    got = audit._sql_digest(conn, "t", cols, " WHERE (:key = :key)", "k", {"key": ""}, "x", 5, form=2)
    assert got is None or got == {"rows": len(rows), "sha256": want}
    if not any(isinstance(r[1], bytes) or isinstance(r[2], float) for r in stored) and audit._sql_writes_hex(conn):
        assert got is not None  # a BLOB where the column says BLOB: SQLite writes it (a REAL there: Python)
