"""container_parent holds only containers on a pallet (WHERE parent_id IS NOT NULL): an open case is
not written there at its open and moved at its close. Every reader of a pallet's cases still
searches it; a ledger with the full index of before gets the partial one, its seals still verify."""

import sqlite3

from serialine.host import db

import oldledger

# the index as ledgers made before it was partial hold it
OLD_PARENT = "CREATE INDEX container_parent ON container (parent_id)"
# the readers of a pallet's cases (host/aggregation.py, host/rework.py, host/release.py)
READERS = ("SELECT sscc FROM container WHERE parent_id=?1 AND state='closed' ORDER BY container_id",
           "SELECT count(*) FROM container WHERE parent_id=?1 AND state='closed'",
           "SELECT 1 FROM packed_row WHERE container_id=?1 UNION ALL SELECT 1 FROM container WHERE parent_id=?1 AND state='closed'",
           "UPDATE container SET parent_id=NULL WHERE parent_id=?1",
           "SELECT c.sscc, (SELECT count(*) FROM container WHERE parent_id = c.container_id) FROM container c"
           " WHERE c.batch_id=?1 ORDER BY c.container_id")


def _index_sql(conn):
    return conn.execute("SELECT sql FROM sqlite_master WHERE type='index' AND name='container_parent'").fetchone()[0]


def test_only_a_container_on_a_pallet_is_in_container_parent_and_its_readers_search_it(tmp_path):
    conn = oldledger.ledger(tmp_path / "l.db")
    oldledger.run(conn, "B1", 10)  # cases of 3 on pallets of 2: a full pallet, a case on the next, an open case
    assert _index_sql(conn) == db.CONTAINER_PARENT.replace(" IF NOT EXISTS", "")
    (indexed,) = conn.execute("SELECT count(*) FROM container INDEXED BY container_parent WHERE parent_id IS NOT NULL"
                              ).fetchone()
    assert indexed == conn.execute("SELECT count(*) FROM container WHERE parent_id IS NOT NULL").fetchone()[0] == 3
    for sql in READERS:
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, (1,)))
        assert "INDEX container_parent (parent_id=?)" in plan, (sql, plan)


def test_a_ledger_with_the_full_index_gets_the_partial_one_and_its_seals_still_verify(tmp_path, capsys):
    path = tmp_path / "old.db"
    conn = oldledger.ledger(path, ("B1", "B2"))
    conn.execute("DROP INDEX container_parent")
    conn.execute(OLD_PARENT)
    oldledger.run(conn, "B1", 6, close_cases=True)
    oldledger.run(conn, "B2", 4)
    oldledger.close_states(conn, "B1")
    rows = conn.execute("SELECT * FROM container ORDER BY container_id").fetchall()
    sealed = conn.execute("SELECT * FROM container WHERE batch_id = 'B1' ORDER BY container_id").fetchall()
    parents = conn.execute("SELECT parent_id, container_id FROM container WHERE parent_id IS NOT NULL ORDER BY 1, 2"
                           ).fetchall()
    oldledger.seal(conn, "batch.close", {"batch_id": "B1", "seal": {"container": oldledger.part(
        [r[1] for r in conn.execute("PRAGMA table_info(container)")], sealed)}})
    conn.close()
    conn = db.connect(str(path))
    assert _index_sql(conn) == db.CONTAINER_PARENT.replace(" IF NOT EXISTS", "")
    assert conn.execute("SELECT parent_id, container_id FROM container INDEXED BY container_parent"
                        " WHERE parent_id IS NOT NULL ORDER BY 1, 2").fetchall() == parents
    assert conn.execute("SELECT * FROM container ORDER BY container_id").fetchall() == rows
    oldledger.close_and_verify(conn, path, capsys)
    c = sqlite3.connect(path)
    assert _index_sql(c) == db.CONTAINER_PARENT.replace(" IF NOT EXISTS", "")  # connect again changes nothing
    c.close()
