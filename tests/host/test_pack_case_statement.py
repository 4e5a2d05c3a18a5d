"""Aggregation writes a case's packs in one statement (a refused pack refuses them all: nothing of
the case half-applied) and closes a case in one UPDATE of its container (SSCC, state and pallet)."""

import sqlite3

import pytest

from serialine.host import reporting
from serialine.host.aggregation import Aggregator
from serialine.host.db import transaction


def _commissioned(conn, n, last="commissioned"):
    ids = [i for (i,) in conn.execute("SELECT serial_id FROM serial WHERE state='available' ORDER BY serial_id LIMIT ?", (n,))]
    for state in ("allocated", "printed", "commissioned"):
        conn.executemany("UPDATE serial SET state=?, batch_id='B1' WHERE serial_id=?",
                         [(state, i) for i in (ids if state != "commissioned" or last == state else ids[:-1])])
    return ids


def _statements(conn, run) -> list[str]:
    seen = []
    conn.set_trace_callback(seen.append)
    try:
        run()
    finally:
        conn.set_trace_callback(None)
    # each statement once (the trace names it again for each trigger program it runs)
    return [" ".join(s.split()) for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]


def test_a_case_is_filled_by_one_statement_and_closed_by_one_update(ledger):
    conn, b = ledger.conn, ledger.batch  # cases of 3, pallets of 2
    with transaction(conn):
        ids = _commissioned(conn, 7)
        agg = Aggregator(conn, b, reporting.context_for(b))
        ran = _statements(conn, lambda: agg.add_packs_by_id(ids))
    assert sum(s.startswith("INSERT INTO packed_row") for s in ran) == 3  # two full cases and the next one's pack
    updates = [s for s in ran if s.startswith("UPDATE container")]
    assert len(updates) == 3  # each case closed in one UPDATE; the pallet they filled in one
    cases = conn.execute("SELECT container_id, state, parent_id, sscc IS NOT NULL FROM container WHERE level='case'"
                         " ORDER BY container_id").fetchall()
    (pallet,) = conn.execute("SELECT container_id FROM container WHERE level='pallet'").fetchone()
    assert cases == [(cases[0][0], "closed", pallet, 1), (cases[1][0], "closed", pallet, 1), (cases[2][0], "open", None, 0)]
    assert conn.execute("SELECT container_id, count(*) FROM packed_row GROUP BY 1 ORDER BY 1").fetchall() == [
        (cases[0][0], 3), (cases[1][0], 3), (cases[2][0], 1)]


@pytest.mark.parametrize("by", ["id", "serial"])
def test_a_refused_pack_refuses_its_whole_case(ledger, by):
    conn, b = ledger.conn, ledger.batch
    with transaction(conn):
        ids = _commissioned(conn, 3, last="printed")  # the third pack is printed, not commissioned
        serial_of = dict(conn.execute("SELECT serial_id, serial FROM serial WHERE serial_id IN (?, ?, ?)", ids))
        agg = Aggregator(conn, b, reporting.context_for(b))
        with pytest.raises(sqlite3.IntegrityError, match="only a commissioned pack can be packed"):
            agg.add_packs_by_id(ids) if by == "id" else agg.add_packs([serial_of[i] for i in ids])
        assert conn.execute("SELECT count(*) FROM packed_row").fetchone() == (0,)  # not the two before it either
        assert conn.execute("SELECT state, sscc FROM container WHERE level='case'").fetchall() == [("open", None)]
