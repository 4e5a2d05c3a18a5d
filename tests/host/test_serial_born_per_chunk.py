"""A staged chunk's INSERT runs without serial_born's row trigger (serials._without_born): the
trigger is dropped and made again from its own text inside the chunk's write transaction, the
statement proves the rule for its rows, and every other statement and writer keeps the trigger."""

from __future__ import annotations

import sqlite3

import pytest

from serialine.host import db, serials
from serialine.host.db import snapshot, transaction

from hostkit import GTIN

BORN = "SELECT sql FROM sqlite_master WHERE type='trigger' AND name='serial_born'"


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(serials, "YIELD_S", 0.0)
    monkeypatch.setattr(serials, "HOLD_S", None)  # chunks of CHUNK
    monkeypatch.setattr(serials, "CHUNK", 400)  # several chunks, several transactions


def statements(conn, fn):
    seen = []
    conn.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        conn.set_trace_callback(None)
    return seen


def test_the_trigger_is_left_out_only_inside_each_chunks_transaction_and_comes_back_as_it_was(conn):
    before = conn.execute(BORN).fetchone()
    seen = statements(conn, lambda: serials.generate_pool(conn, GTIN, 1000))
    assert conn.execute(BORN).fetchone() == before
    drops = [i for i, s in enumerate(seen) if s == "DROP TRIGGER serial_born"]
    assert len(drops) == 3  # 1000 serials in chunks of 400
    for i in drops:
        begin = max(j for j in range(i) if seen[j] == "BEGIN IMMEDIATE")
        end = next(j for j in range(i, len(seen)) if seen[j] in ("COMMIT", "ROLLBACK"))
        assert seen[end] == "COMMIT" and before[0] in seen[i:end]  # made again before the commit
        assert not any(s.startswith(("COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")) for s in seen[begin + 1:i])
    # ... and the rule still holds for every other insert
    with pytest.raises(sqlite3.IntegrityError, match="must be available"):
        conn.execute("INSERT INTO serial (gtin, serial, state, source) VALUES (?, 'X1', 'printed', 'f')", (GTIN,))
    with pytest.raises(sqlite3.IntegrityError, match="staged only into an import that is still staging"):
        conn.execute("INSERT INTO serial (gtin, serial, source, import_id) VALUES (?, 'X2', 'f', 1)", (GTIN,))


def test_another_connection_never_sees_the_ledger_without_the_trigger(conn, tmp_path):
    other = db.connect(str(tmp_path / "ledger.db"))
    seen_by_other = []

    def look(sql):
        if sql.startswith("INSERT OR IGNORE INTO serial"):  # the chunk's insert, the trigger dropped
            seen_by_other.append(other.execute(BORN).fetchone())
    conn.set_trace_callback(look)
    try:
        serials.generate_pool(conn, GTIN, 1000)
    finally:
        conn.set_trace_callback(None)
    assert len(seen_by_other) == 3 and all(s is not None for s in seen_by_other)
    with pytest.raises(sqlite3.IntegrityError, match="must be available"):
        with transaction(other):
            other.execute("INSERT INTO serial (gtin, serial, state, source) VALUES (?, 'X3', 'printed', 'f')", (GTIN,))
    other.close()


def test_a_chunk_that_fails_leaves_the_trigger_and_adds_nothing(conn):
    before, rows = conn.execute(BORN).fetchone(), snapshot(conn)["serial"]
    with pytest.raises(serials.SerialError, match="random source gave serials already known"):
        serials.generate_pool(conn, GTIN, 20, randbytes=lambda n: bytes(n))  # one serial, again and again
    assert conn.execute(BORN).fetchone() == before and snapshot(conn)["serial"] == rows


def test_a_chunk_into_an_import_no_longer_staging_adds_nothing(conn):
    """The statement's own join: an import abandoned meanwhile takes no row, even without the trigger."""
    now = 0.0
    with transaction(conn):
        imp = conn.execute("INSERT INTO serial_import (gtin, source, started_at, heartbeat, state) VALUES"
                           " (?, 'generated', ?, ?, 'staging')", (GTIN, now, now)).lastrowid
        conn.execute("UPDATE serial_import SET state='abandoned' WHERE import_id=?", (imp,))
    insert = serials.STAGE_INSERT.format(or_ignore="OR IGNORE ")
    with transaction(conn), serials._without_born(conn):
        assert conn.execute(insert, ("generated", '["AAAAAAAAAAAA"]', imp)).rowcount == 0
    assert conn.execute("SELECT count(*) FROM serial WHERE import_id=?", (imp,)).fetchone() == (0,)


def test_the_trigger_is_never_left_out_outside_a_transaction(conn):
    with pytest.raises(RuntimeError, match="inside the chunk's write transaction"):
        with serials._without_born(conn):
            pass
    assert conn.execute(BORN).fetchone() is not None
