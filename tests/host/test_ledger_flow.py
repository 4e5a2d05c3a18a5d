"""Device events through the ledger: idempotent storage, serial life, aggregation, rework, close."""

import pytest

from serialine.host import audit, gs1, reconcile, rework
from serialine.host.db import snapshot, transaction
from serialine.host.epcis import outbox
from serialine.host.ledger import Ledger
from serialine.protocol.schema import Reason, Verdict

from hostkit import GTIN


def states(conn):
    return dict(conn.execute("SELECT state, count(*) FROM serial WHERE batch_id='B1' GROUP BY state"))


def test_retransmitted_events_are_stored_once(line):
    ev = [line.event("UNIT_DETECTED", unit_seq=0, pos=1, t_us=2, flags=0), line.event("UNIT_PRINTED", unit_seq=0, pos=3, t_us=4)]
    assert line.store(ev) == [True, True]
    before = snapshot(line.ledger.conn)
    assert line.store(ev) == [False, False]  # the device resent them: nothing changes
    assert snapshot(line.ledger.conn) == before
    assert states(line.ledger.conn)["printed"] == 1


def test_units_bind_codes_in_print_order_and_pass(line):
    conn = line.ledger.conn
    queued = [c for (c,) in conn.execute("SELECT code FROM coder_job ORDER BY job_id")]
    for u in range(6):
        assert line.unit(u)[:2] == (Verdict.PASS, Reason.OK)
    bound = [conn.execute("SELECT j.code FROM unit u JOIN coder_job j USING (gtin, serial) WHERE unit_seq=?",
                          (u,)).fetchone()[0] for u in range(6)]
    assert bound == queued[:6]
    assert states(conn)["commissioned"] == 6
    # case_size 3, pallet_size 2: two full cases on one full pallet, each with a valid SSCC
    rows = conn.execute("SELECT level, sscc, state FROM container ORDER BY container_id").fetchall()
    assert [(lv, st) for lv, _, st in rows if st == "closed"] == [("case", "closed"), ("pallet", "closed"), ("case", "closed")]
    assert all(gs1.valid_check_digit(s) for _, s, st in rows if st == "closed")
    types = [e["type"] for e in outbox.batch_events(conn, "B1")]
    assert types.count("AggregationEvent") == 3 and types.count("ObjectEvent") == 6


def test_failed_unit_serial_rejected(line):
    v, r, _ = line.unit(0, outcome=2, reason=int(Reason.VERDICT_FAIL), grade="F")
    assert (v, r) == (Verdict.FAIL, Reason.LOW_GRADE)
    assert states(line.ledger.conn)["rejected"] == 1


def test_new_boot_purges_units_in_flight(line):
    L = line.ledger
    line.store([line.event("UNIT_DETECTED", unit_seq=0, pos=0, t_us=0, flags=0),
                line.event("UNIT_PRINTED", unit_seq=0, pos=0, t_us=0),
                line.event("UNIT_DETECTED", unit_seq=1, pos=0, t_us=0, flags=0)])
    with transaction(L.conn):
        assert L.new_boot("dev1", 8) == 2
    rows = L.conn.execute("SELECT unit_seq, outcome, reason FROM unit ORDER BY unit_seq").fetchall()
    assert rows == [(0, "PURGED", "PURGE"), (1, "PURGED", "PURGE")]
    assert states(L.conn)["rejected"] == 1


def test_close_refuses_with_named_serials_then_closes(line):
    conn = line.ledger.conn
    for u in range(4):
        line.unit(u)
    line.store([line.event("UNIT_DETECTED", unit_seq=4, pos=0, t_us=0, flags=0),
                line.event("UNIT_PRINTED", unit_seq=4, pos=0, t_us=0)])
    stuck = conn.execute("SELECT serial FROM unit WHERE unit_seq=4").fetchone()[0]
    before = snapshot(conn)
    with pytest.raises(reconcile.ReconcileError) as err:
        reconcile.close_batch(conn, "B1", "ann")
    assert stuck in str(err.value) and "without an outcome" in str(err.value)
    assert snapshot(conn) == before  # the partial case closed inside the refused close: rolled back
    line.store([line.event("UNIT_OUTCOME", unit_seq=4, outcome=3, reason=int(Reason.NO_VERDICT), gate_error=0, pos=0, t_us=0)])
    report = reconcile.close_batch(conn, "B1", "ann")
    assert report.units == {"detected": 5, "passed": 4, "rejected": 1}
    assert report.serials["commissioned"] == 4 and report.serials["rejected"] == 1 + 15  # 15 pushed, never printed
    assert len(report.partial) == 2  # the second case (1 pack) and its pallet, closed explicitly
    assert conn.execute("SELECT state FROM batch WHERE batch_id='B1'").fetchone()[0] == "closed"
    assert audit.verify(conn)[0]


def test_unused_allocations_return_to_pool(line):
    conn = line.ledger.conn
    line.unit(0)  # a batch that made nothing is aborted, not closed
    with transaction(conn):
        from serialine.host import serials
        serials.allocate(conn, "B1", GTIN, 5)
    report = reconcile.close_batch(conn, "B1", "ann")
    assert report.serials["returned"] == 5  # never sent to a coder; the 19 that were are void
    assert states(conn) == {"commissioned": 1, "rejected": 19}


def test_rework(line):
    conn = line.ledger.conn
    for u in range(9):
        line.unit(u)
    case, packs = conn.execute("SELECT c.sscc, group_concat(p.serial) FROM container c JOIN packed p USING (container_id)"
                               " WHERE c.level='case' GROUP BY c.container_id ORDER BY c.container_id").fetchone()
    a, b, c = packs.split(",")
    loose = conn.execute("SELECT serial FROM packed WHERE container_id=(SELECT max(container_id) FROM container"
                         " WHERE level='case')").fetchone()[0]
    # impossible: a pack into a second case, or into a full case; no reason given
    for call, words in [(lambda: rework.add_pack(conn, case, GTIN, loose, "ann", "r"), "already in case"),
                        (lambda: rework.remove_pack(conn, GTIN, a, "ann", ""), "reason"),
                        (lambda: rework.decommission(conn, GTIN, a, "lost", "ann", "r"), "kind"),
                        (lambda: rework.disaggregate(conn, "000000000000000000", "ann", "r"), "unknown SSCC")]:
        before = snapshot(conn)
        with pytest.raises(rework.ReworkError, match=words):
            call()
        assert snapshot(conn) == before
    assert rework.remove_pack(conn, GTIN, a, "ann", "damaged") == case
    rework.decommission(conn, GTIN, a, "destroyed", "ann", "damaged")
    before = snapshot(conn)
    with pytest.raises(rework.ReworkError, match="destroyed"):
        rework.add_pack(conn, case, GTIN, a, "ann", "oops")
    assert snapshot(conn) == before
    with pytest.raises(rework.ReworkError, match="already in case"):
        rework.replace_pack(conn, GTIN, b, c, "ann", "swap")
    rework.remove_pack(conn, GTIN, loose, "ann", "move")
    assert rework.replace_pack(conn, GTIN, b, loose, "ann", "swap") == case
    assert {s for (s,) in conn.execute("SELECT serial FROM packed p JOIN container USING (container_id)"
                                       " WHERE sscc=?", (case,))} == {c, loose}
    n = rework.decommission_container(conn, case, "sampled", "qa", "stability samples")
    assert n == 2 and states(conn)["sampled"] == 2 and states(conn)["destroyed"] == 1
    assert conn.execute("SELECT count(*) FROM rework").fetchone()[0] >= 4
    assert audit.verify(conn)[0]
    kinds = [(e["type"], e.get("bizStep")) for e in outbox.batch_events(conn, "B1")]
    assert ("ObjectEvent", "destroying") in kinds or any(k[1] and "destroy" in k[1] for k in kinds)
    assert ("AggregationEvent", "unpacking") in kinds


def test_store_batch_matches_store_and_is_idempotent(line):
    """The grouped path used by the agent gives the same ledger as event-by-event storage."""
    L = line.ledger
    ev = []
    for u in range(5):
        ev += [line.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0),
               line.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0),
               line.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0),
               line.event("UNIT_OUTCOME", unit_seq=u, outcome=1 if u != 2 else 2, reason=0 if u != 2 else 1,
                          gate_error=0, pos=0, t_us=0)]
    ev.append(("STATUS", {"state": 2}))  # not an event: ignored by both
    with transaction(L.conn):
        assert L.store_batch("dev1", 7, ev) == [True] * 20 + [False]
        L.flush_events()
    batch_view = (L.conn.execute("SELECT unit_seq, serial, outcome, reason FROM unit ORDER BY unit_seq").fetchall(),
                  states(L.conn), L.conn.execute("SELECT sscc, state FROM container ORDER BY 1").fetchall())
    before = snapshot(L.conn)
    with transaction(L.conn):  # the device resends it all: nothing changes
        assert L.store_batch("dev1", 7, ev) == [False] * 21
    assert snapshot(L.conn) == before
    # same stream, one event at a time, on a second boot id of a fresh run of the same ledger file
    with transaction(L.conn):
        for n, f in ev:
            L.store("dev1", 8, n, f)
        L.flush_events()
    one_by_one = L.conn.execute("SELECT unit_seq, outcome, reason FROM unit WHERE boot_id=8 ORDER BY unit_seq").fetchall()
    assert one_by_one == [(u, o, r) for u, _, o, r in batch_view[0]]
    assert batch_view[1]["commissioned"] == 4 and batch_view[1]["rejected"] == 1
    assert sorted(st for _, st in batch_view[2]) == ["closed", "open", "open"]  # case 1; open pallet, case 2


@pytest.mark.parametrize("nhrn", [None, ("714", "1234567")])
def test_code_template_equals_full_element_string(conn, nhrn):
    import datetime as dt
    from serialine.host import masterdata, serials
    gtin = "09506000134369"
    masterdata.add_product(conn, gtin, "x", "EU_FMD", 7, *(nhrn or (None, None)))
    serials.generate(conn, gtin, 20)
    masterdata.create_batch(conn, "B3", gtin, "LOT-7", "2031-05-31", 10, 2, 2)
    masterdata.start_batch(conn, "B3")
    L = Ledger(conn, "B3")
    with transaction(conn):
        for serial, code in L.queue_codes(5):
            pairs = gs1.pack_pairs(gtin, serial, "LOT-7", dt.date(2031, 5, 31), *(nhrn or (None, None)))
            assert code == gs1.element_string(pairs)
            assert L.judge.known[code] == gs1.parse_read("]d2" + code).ais == dict(pairs)  # as biip reads it
