"""One consistent, verifiable EPCIS story: every eventID survives re-hashing in each rendering a
receiver gets; event times follow the line; replaying the events gives the ledger's containment
and serial states after every kind of rework; sampling per CBV 2.0; SSCC capacity."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from serialine.host import aggregation, db, masterdata, rework, serials
from serialine.host.db import snapshot, transaction
from serialine.host.epcis import document, events as ev, outbox, validate, xml12
from serialine.host.ledger import Ledger

from .conftest import GTIN as EPCIS_GTIN, all_kinds
from .story import StoryError, check_story, rehash, renderings, replay

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "host"))
from hostkit import GTIN, PREFIX_LEN, Line  # noqa: E402

PARTNER = "urn:epc:id:sgln:0614141.00001.0"


def test_every_rendering_rehashes_to_the_event_id(tmp_path, ctx):
    events = all_kinds(ctx)
    # serials and a lot that exercise the canonicalisation: escapes, DL percent-encoding, digits
    events.append(ev.commissioning(ctx, [ev.sgtin_urn(EPCIS_GTIN, "a(1)/*:+,!&", 7),
                                         ev.sgtin_urn(EPCIS_GTIN, "0012", 7)], "00123", date(2027, 12, 31),
                                   datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)))
    paths = renderings(events, ctx.biz_location, PARTNER, tmp_path)
    for name in ("jsonld", "jsonld_declared"):
        validate.json_document(json.loads(paths[name].read_text()))
    validate.xml_document(paths["xml12"].read_bytes(), "1.2")
    n = len(events)
    assert rehash(events, paths) == {name: {"events": n, "reference": n, "own": n} for name in paths}


@settings(max_examples=8, deadline=None)
@given(lot=st.text(alphabet="!\"%&'()*+,-./0123456789:;<=>?AZ_az", min_size=1, max_size=20),
       serials=st.lists(st.text(alphabet="!\"%&'()*+,-./0123456789:;<=>?AZ_az", min_size=1, max_size=20),
                        min_size=1, max_size=3, unique=True),
       offset=st.sampled_from(["+00:00", "-05:30", "+14:00"]))
def test_every_rendering_rehashes_to_the_event_id_fuzzed(tmp_path_factory, lot, serials, offset):
    """Lots and serials with XML's and Digital Link's special characters, numeric-looking ones."""
    ctx = ev.Context(read_point=ev.sgln_urn("4012345000009", 7, "A.1"),
                     biz_location=ev.sgln_urn("4012345000009", 7), tz_offset=offset)
    epcs = [ev.sgtin_urn(EPCIS_GTIN, s, 7) for s in serials]
    events = [ev.commissioning(ctx, epcs, lot, date(2030, 2, 28), datetime(2026, 3, 4, 5, 6, 7, 89000, tzinfo=timezone.utc))]
    paths = renderings(events, ctx.biz_location, PARTNER, tmp_path_factory.mktemp("r"))
    assert rehash(events, paths) == {name: {"events": 1, "reference": 1, "own": 1} for name in paths}


def test_documents_declare_the_prefixes_their_event_hashes_expand():
    """The reference expands only prefixes the document declares: without the inline declaration
    it would hash `cbvmda:lotNumber` literally and miss every commissioning eventID."""
    assert {"cbvmda": "urn:epcglobal:cbv:mda:"} in document.epcis_document([])["@context"]
    assert xml12.CBVMDA_NS == "urn:epcglobal:cbv:mda:"


@pytest.fixture
def line(tmp_path):
    conn = db.connect(str(tmp_path / "ledger.db"))
    masterdata.add_product(conn, GTIN, "Aspirin 100 mg", "EU_FMD", PREFIX_LEN)
    serials.generate(conn, GTIN, 300)
    masterdata.create_batch(conn, "B1", GTIN, "L1", "2030-01-31", 100, 3, 2)  # cases of 3, pallets of 2
    masterdata.start_batch(conn, "B1")
    ledger = Ledger(conn, "B1")
    with transaction(conn):
        ledger.queue_codes(40)
    yield Line(ledger)
    conn.close()


def _all_in_one_poll(line, units):
    """Whole units (detected .. outcome) in one transaction, as the agent stores a poll."""
    L = line.ledger
    for u in units:
        line.store([line.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0),
                    line.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0),
                    line.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)])
        code = L.expected_code(line.device_id, line.boot_id, u)
        with transaction(L.conn):
            v, r, s = L.judge.decide("]d2" + code, "A", code)
            L.record_verdict(line.device_id, line.boot_id, u, v, r, s, "A")
    with transaction(L.conn):
        L.store_batch(line.device_id, line.boot_id, [
            line.event("UNIT_OUTCOME", unit_seq=u, outcome=1, reason=0, gate_error=0, pos=0, t_us=0) for u in units])
        L.flush_events()


def test_commissioned_before_packed_in_time_and_order(line):
    conn = line.ledger.conn
    for u in range(4):           # one transaction per pack: the case closes with its last pack
        line.unit(u)
    _all_in_one_poll(line, range(4, 13))  # many packs, cases and a pallet in one transaction
    events = outbox.batch_events(conn, "B1")
    steps = [e["bizStep"] for e in events]
    assert steps.count("packing") == 4 + 2 and steps.count("commissioning") == 4 + 1
    replay(events)  # strictly increasing eventTimes; nothing packed before it is commissioned
    check_story(conn, "B1")


def test_replay_refuses_packing_before_commissioning(ctx):
    unit = ev.sgtin_urn(EPCIS_GTIN, "1", 7)
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    case = ev.sscc_urn("340123450000000017", 7)
    with pytest.raises(StoryError, match="uncommissioned"):
        replay([ev.packing(ctx, case, [unit], t), ev.commissioning(ctx, [unit], "L", date(2030, 1, 1), t + timedelta(milliseconds=1))])
    with pytest.raises(StoryError, match="not after"):
        replay([ev.commissioning(ctx, [unit], "L", date(2030, 1, 1), t), ev.packing(ctx, case, [unit], t)])


def _new_events(conn, before: int) -> list[tuple[str, str, str]]:
    return [(e["type"], e["action"], e["bizStep"]) for e in outbox.batch_events(conn, "B1")[before:]]


def _cases(conn):
    """{case SSCC: (pallet SSCC or None, [serials])} of the closed cases."""
    out = {}
    for cid, sscc, parent in conn.execute("SELECT c.container_id, c.sscc, p.sscc FROM container c LEFT JOIN container p"
                                          " ON p.container_id = c.parent_id AND p.state='closed'"
                                          " WHERE c.level='case' AND c.state='closed' ORDER BY c.container_id"):
        out[sscc] = (parent, [s for (s,) in conn.execute("SELECT serial FROM packed WHERE container_id=? ORDER BY rowid",
                                                         (cid,))])
    return out


def test_rework_story_matches_the_ledger_after_every_kind(line):
    conn = line.ledger.conn
    _all_in_one_poll(line, range(24))   # 8 cases of 3 on 4 pallets of 2
    check_story(conn, "B1")
    cases = _cases(conn)
    (c1, (p1, s1)), (c2, (_, s2)), (c3, (p2, s3)), (c4, _), (c5, (p3, s5)), (c6, _), (c7, (p4, s7)), (c8, _) = cases.items()
    done = []

    def change(call, expected):
        n = len(outbox.batch_events(conn, "B1"))
        call()
        assert _new_events(conn, n) == expected, call
        check_story(conn, "B1")
        done.append(expected)

    unpack = ("AggregationEvent", "DELETE", "unpacking")
    pack = ("AggregationEvent", "ADD", "packing")
    observe = ("ObjectEvent", "OBSERVE", "sampling")
    end = {"destroyed": ("ObjectEvent", "DELETE", "destroying"),
           "sampled": ("ObjectEvent", "DELETE", "decommissioning"),
           "decommissioned": ("ObjectEvent", "DELETE", "decommissioning")}
    change(lambda: rework.remove_pack(conn, GTIN, s1[0], "ann", "damaged"), [unpack])
    change(lambda: rework.add_pack(conn, c1, GTIN, s1[0], "ann", "repaired"), [pack])
    change(lambda: rework.remove_pack(conn, GTIN, s1[1], "ann", "move"), [unpack])
    change(lambda: rework.replace_pack(conn, GTIN, s2[0], s1[1], "ann", "swap"), [unpack, pack])
    change(lambda: rework.decommission(conn, GTIN, s2[0], "sampled", "qa", "retained sample"), [observe, end["sampled"]])
    change(lambda: rework.decommission(conn, GTIN, s1[2], "destroyed", "ann", "crushed"), [unpack, end["destroyed"]])
    change(lambda: rework.decommission(conn, GTIN, s2[1], "decommissioned", "ann", "recode"),
           [unpack, end["decommissioned"]])
    change(lambda: rework.disaggregate(conn, c3, "ann", "relabel"), [unpack, unpack])       # off p2, then emptied
    change(lambda: rework.disaggregate(conn, p2, "ann", "restack"), [unpack])               # its other case
    change(lambda: rework.decommission_container(conn, c5, "sampled", "qa", "stability"),  # off p3, emptied, ended
           [unpack, unpack, observe, end["sampled"]])
    change(lambda: rework.decommission_container(conn, p4, "destroyed", "ann", "flood"),   # pallet, 2 cases, packs
           [unpack, unpack, unpack, end["destroyed"]])
    states = dict(conn.execute("SELECT state, count(*) FROM serial WHERE batch_id='B1' GROUP BY state"))
    assert states["sampled"] == 1 + 3 and states["destroyed"] == 1 + 6 and states["decommissioned"] == 1
    # every event the rework produced is valid in both syntaxes
    events = outbox.batch_events(conn, "B1")
    validate.json_document(document.epcis_document(events))
    validate.xml_document(xml12.document(events, events[0]["bizLocation"]["id"], PARTNER), "1.2")


def test_impossible_rework_changes_no_story(line):
    conn = line.ledger.conn
    _all_in_one_poll(line, range(6))
    (c1, (p1, s1)), _ = _cases(conn).items()
    rework.decommission_container(conn, c1, "destroyed", "ann", "flood")
    before = snapshot(conn)
    with pytest.raises(rework.ReworkError):
        rework.disaggregate(conn, c1, "ann", "again")   # retired: no second unpacking
    with pytest.raises(rework.ReworkError):
        rework.decommission(conn, GTIN, s1[0], "sampled", "qa", "again")
    assert snapshot(conn) == before
    check_story(conn, "B1")


def test_sscc_uses_the_extension_digit_and_says_when_a_prefix_is_exhausted(tmp_path):
    conn = db.connect(str(tmp_path / "ledger.db"))
    prefix = "950600013435"  # 12 digits: 4-digit serial references
    with transaction(conn):
        conn.execute("INSERT INTO sscc_counter VALUES (?, ?)", (prefix, 9_999))
        last0, first1 = aggregation.next_sscc(conn, prefix), aggregation.next_sscc(conn, prefix)
    assert (last0[0], last0[13:17], first1[0], first1[13:17]) == ("0", "9999", "1", "0000")
    assert aggregation.sscc_capacity(prefix) == 99_999
    with transaction(conn):
        conn.execute("UPDATE sscc_counter SET next_ref=? WHERE company_prefix=?", (99_999, prefix))
        assert aggregation.next_sscc(conn, prefix).startswith("9" + prefix + "9999")
    before = snapshot(conn)
    with pytest.raises(aggregation.AggregationError) as err:
        with transaction(conn):
            aggregation.next_sscc(conn, prefix)
    assert "\n" not in str(err.value) and f"company prefix {prefix} has no SSCC left" in str(err.value)
    assert snapshot(conn) == before
    # the shortest prefix: 10 ** 10 SSCCs, the first one as before
    assert aggregation.sscc_capacity("9506000") == 10 ** 10 - 1
    conn.close()


def test_rework_on_the_line_s_open_pallet_reports_only_what_was_reported(line):
    """A case on the pallet still open on the line: that pallet has no SSCC and no packing event
    yet, so taking the case off it is a ledger change only; the pallet closes later without it."""
    conn = line.ledger.conn
    _all_in_one_poll(line, range(9))  # cases 1+2 on a closed pallet, case 3 on the open one
    (c3, (parent, _)) = list(_cases(conn).items())[2]
    assert parent is None
    n = len(outbox.batch_events(conn, "B1"))
    rework.disaggregate(conn, c3, "ann", "relabel")
    assert _new_events(conn, n) == [("AggregationEvent", "DELETE", "unpacking")]
    check_story(conn, "B1")
    _all_in_one_poll(line, range(9, 15))  # two more cases: the open pallet fills with them
    pallets = conn.execute("SELECT count(*) FROM container WHERE level='pallet' AND state='closed'").fetchone()[0]
    assert pallets == 2
    check_story(conn, "B1")
