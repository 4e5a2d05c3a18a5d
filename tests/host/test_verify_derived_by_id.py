"""verify's derived check reads a serial's row and a commissioned serial's unit by the history's
serial_id in its one statement (no lookup per serial by (gtin, serial)); an edited unit or a
deleted serial row is still caught, with its serial named."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from serialine.host import audit, db
from serialine.tools import bench_batch


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    path = tmp_path_factory.mktemp("derived") / "ledger.db"
    conn, *_ = bench_batch.make_ledger(str(path), 40, 16)
    conn.close()
    return path


def _edited(ledger, tmp_path, table: str, sql: str):
    """A copy edited with raw sqlite3, the table's triggers dropped first (as an attacker would)."""
    path = tmp_path / "edited.db"
    shutil.copy(ledger, path)
    c = sqlite3.connect(path, isolation_level=None)
    for (t,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name=?", (table,)).fetchall():
        c.execute(f"DROP TRIGGER {t}")
    (gtin, serial, serial_id) = c.execute("SELECT s.gtin, s.serial, s.serial_id FROM unit_row u JOIN serial s"
                                          " USING (serial_id) ORDER BY u.unit_seq LIMIT 1 OFFSET 7").fetchone()
    c.execute(sql, (serial_id,))
    c.close()
    return db.connect(str(path)), f"serial {gtin}/{serial}: "


def test_a_ledger_as_the_line_made_it_passes(ledger):
    conn = db.connect(str(ledger))
    try:
        assert audit._verify_derived(conn) is None
    finally:
        conn.close()


@pytest.mark.parametrize("table, sql, said", [
    ("unit_row", "UPDATE unit_row SET outcome='REJECTED_CONFIRMED' WHERE serial_id=?", "commissioned, but its unit is not PASSED"),
    ("serial", "DELETE FROM serial WHERE serial_id=?", None),  # named by its serial_id then
    ("serial", "UPDATE serial SET state='printed' WHERE serial_id=?", "state printed, but its history ends commissioned"),
])
def test_an_edit_is_caught_naming_its_serial(ledger, tmp_path, table, sql, said):
    conn, which = _edited(ledger, tmp_path, table, sql)
    try:
        problem = audit._verify_derived(conn)
        if said is None:
            assert problem is not None and problem.endswith("it has a history but no row"), problem
            assert problem.startswith("serial ?/serial_id "), problem
        else:
            assert problem == which + said, problem
    finally:
        conn.close()
