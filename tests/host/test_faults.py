"""Faults the ledger must survive without a pack left unaccounted for: a reboot that loses PASSED
outcomes (UNKNOWN until a person resolves each unit), gaps in a unit's life (rows created, a lost
UNIT_PRINTED still takes its coder job), and events that arrive with a value out of range."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serialine.host import audit, reconcile, resolve, rework
from serialine.host.db import snapshot, transaction
from serialine.host.epcis import outbox
from serialine.protocol.schema import Outcome, Reason, Verdict


def unit_row(conn, u, boot=7):
    return conn.execute("SELECT outcome, reason, serial FROM unit WHERE boot_id=? AND unit_seq=?", (boot, u)).fetchone()


def serial_state(conn, serial):
    return conn.execute("SELECT state FROM serial WHERE serial=?", (serial,)).fetchone()[0]


def alarms(conn, kind):
    return [d for (d,) in conn.execute("SELECT detail FROM alarm_log WHERE alarm=? ORDER BY alarm_id", (kind,))]


def in_flight(line, u, verdict):
    """Unit u detected, printed, inspected and judged (verdict recorded as sent), no outcome yet."""
    L = line.ledger
    line.store([line.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0),
                line.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0),
                line.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)])
    if verdict is not None:
        with transaction(L.conn):
            L.record_verdict("dev1", 7, u, verdict, Reason.OK if verdict == Verdict.PASS else Reason.LOW_GRADE,
                             None, "A")


def reboot_with_units_in_flight(line):
    """Units 0-2 passed (one closed case of 3); the device reboots with unit 3 passed by the host
    (its PASSED event lost with the RAM), unit 4 failed and unit 5 never judged."""
    for u in range(3):
        line.unit(u)
    in_flight(line, 3, Verdict.PASS)
    in_flight(line, 4, Verdict.FAIL)
    in_flight(line, 5, None)
    with transaction(line.ledger.conn):
        assert line.ledger.new_boot("dev1", 8) == 3


def test_reboot_books_a_passed_unit_unknown_and_the_rest_rejected(line):
    conn = line.ledger.conn
    reboot_with_units_in_flight(line)
    assert unit_row(conn, 3)[:2] == ("UNKNOWN", "OUTCOME_LOST")
    assert serial_state(conn, unit_row(conn, 3)[2]) == "printed"  # maybe on the market: never rejected
    for u in (4, 5):  # no PASS sent: the device rejected them (fail safe)
        assert unit_row(conn, u)[:2] == ("PURGED", "PURGE")
        assert serial_state(conn, unit_row(conn, u)[2]) == "rejected"
    [alarm] = alarms(conn, "OUTCOME_UNKNOWN")
    assert "dev1:7:3" in alarm and "dev1:7:4" not in alarm
    before = snapshot(conn)
    with pytest.raises(reconcile.ReconcileError, match="unknown outcome.*dev1:7:3"):
        reconcile.close_batch(conn, "B1", "ann")
    assert snapshot(conn) == before


def test_resolve_found_in_a_case_commissions_and_packs_it(line):
    conn = line.ledger.conn
    reboot_with_units_in_flight(line)
    serial = unit_row(conn, 3)[2]
    sscc, first = conn.execute("SELECT c.sscc, p.serial FROM container c JOIN packed p USING (container_id)"
                               " WHERE c.level='case' AND c.state='closed'").fetchone()
    before = snapshot(conn)
    for kwargs, why in (({"found_in": sscc}, "full"), ({"found_in": "000000000000000000"}, "unknown SSCC"),
                        ({}, "--found-in SSCC, --found-at-packer or --destroyed"), ({"found_in": sscc, "destroyed": True}, "--found-in")):
        with pytest.raises(resolve.ResolveError, match=why):
            resolve.resolve(conn, "B1", "dev1:7:3", user="qa", reason="case check", **kwargs)
    with pytest.raises(resolve.ResolveError, match="PURGED, not UNKNOWN"):
        resolve.resolve(conn, "B1", "dev1:7:4", destroyed=True, user="qa", reason="x")
    with pytest.raises(resolve.ResolveError, match="DEVICE:BOOT:SEQ"):
        resolve.resolve(conn, "B1", "dev1-7-3", destroyed=True, user="qa", reason="x")
    assert snapshot(conn) == before  # every refusal changed nothing
    # the case was re-checked: the pack the ledger put in it is not there, the unknown one is
    rework.remove_pack(conn, line.ledger.batch.gtin, first, "qa", "case check: not in this case")
    rework.decommission(conn, line.ledger.batch.gtin, first, "destroyed", "qa", "not found")
    done = resolve.resolve(conn, "B1", "dev1:7:3", found_in=sscc, user="qa", reason="case check: found in it")
    assert sscc in done and serial in done
    assert unit_row(conn, 3)[:2] == ("PASSED", "FOUND_IN_CASE")
    assert serial_state(conn, serial) == "commissioned"
    assert conn.execute("SELECT c.sscc FROM packed p JOIN container c USING (container_id) WHERE p.serial=?",
                        (serial,)).fetchone()[0] == sscc
    [(user, detail)] = conn.execute("SELECT user, detail FROM audit WHERE action='unit.resolve'").fetchall()
    assert user == "qa" and "found in it" in detail and sscc in detail
    assert audit.verify(conn)[0]
    kinds = [(e["type"], e.get("bizStep", "")) for e in outbox.batch_events(conn, "B1")]
    assert kinds[-2:] == [("ObjectEvent", "commissioning"), ("AggregationEvent", "packing")]  # the found pack
    assert reconcile.reconcile(conn, "B1").units.get("unknown") is None


def test_resolve_destroyed_on_the_command_line_then_the_batch_closes(line, tmp_path):
    conn = line.ledger.conn
    reboot_with_units_in_flight(line)
    serial = unit_row(conn, 3)[2]
    db_path = conn.execute("PRAGMA database_list").fetchone()[2]
    cmd = [sys.executable, "-m", "serialine.host.cli", "batch", "resolve", "B1", "--db", db_path, "--user", "qa"]
    bad = subprocess.run(cmd + ["--unit", "dev1:7:9", "--destroyed", "--reason", "pack destroyed"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "no unit dev1:7:9" in bad.stderr
    ok = subprocess.run(cmd + ["--unit", "dev1:7:3", "--destroyed", "--reason", "not found on the line"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert unit_row(conn, 3)[:2] == ("DESTROYED", "RESOLVED") and serial_state(conn, serial) == "destroyed"
    report = reconcile.close_batch(conn, "B1", "ann")
    assert report.units == {"detected": 6, "passed": 3, "rejected": 3}


def test_a_unit_heard_of_first_by_a_later_event_gets_a_row_booked_unknown(line):
    conn = line.ledger.conn
    line.store([line.event("UNIT_DETECTED", unit_seq=0, pos=0, t_us=0, flags=0),
                line.event("UNIT_PRINTED", unit_seq=0, pos=0, t_us=0),
                # UNIT_DETECTED of unit 1 never arrived; nothing at all of unit 2
                line.event("UNIT_PRINTED", unit_seq=1, pos=0, t_us=0),
                line.event("UNIT_DETECTED", unit_seq=3, pos=0, t_us=0, flags=0)])
    assert unit_row(conn, 1)[:2] == ("UNKNOWN", "EVENTS_LOST") and unit_row(conn, 1)[2] is not None
    assert unit_row(conn, 2) == ("UNKNOWN", "EVENTS_LOST", None)
    assert unit_row(conn, 3) == (None, None, None)
    assert len(alarms(conn, "EVENTS_LOST")) == 2
    # the device's word, when it comes, replaces the unknown
    line.store([line.event("UNIT_OUTCOME", unit_seq=1, outcome=int(Outcome.REJECTED_CONFIRMED),
                           reason=int(Reason.NO_VERDICT), gate_error=0, pos=0, t_us=0)])
    assert unit_row(conn, 1)[:2] == ("REJECTED_CONFIRMED", "NO_VERDICT")
    assert serial_state(conn, unit_row(conn, 1)[2]) == "rejected"
    # and an outcome for a unit with no row at all creates it
    line.store([line.event("UNIT_OUTCOME", unit_seq=5, outcome=int(Outcome.REJECTED_UNCONFIRMED),
                           reason=int(Reason.BUFFER_OVERFLOW), gate_error=0, pos=0, t_us=0)])
    assert unit_row(conn, 5)[:2] == ("REJECTED_UNCONFIRMED", "BUFFER_OVERFLOW")
    assert unit_row(conn, 4)[:2] == ("UNKNOWN", "EVENTS_LOST")


def test_a_lost_print_still_takes_its_job_so_later_units_keep_their_codes(line):
    conn = line.ledger.conn
    queued = [s for (s,) in conn.execute("SELECT serial FROM coder_job ORDER BY job_id")]
    ev = [line.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0) for u in range(3)]
    ev += [line.event("UNIT_PRINTED", unit_seq=0, pos=0, t_us=0),
           line.event("UNIT_PRINTED", unit_seq=2, pos=0, t_us=0)]  # unit 1's print event lost
    # unit 3 was not tracked (device buffer full): rejected at detection, never triggered the coder
    ev += [line.event("UNIT_DETECTED", unit_seq=3, pos=0, t_us=0, flags=0),
           line.event("UNIT_OUTCOME", unit_seq=3, outcome=int(Outcome.REJECTED_UNCONFIRMED),
                      reason=int(Reason.BUFFER_OVERFLOW), gate_error=0, pos=0, t_us=0),
           line.event("UNIT_DETECTED", unit_seq=4, pos=0, t_us=0, flags=0),
           line.event("UNIT_PRINTED", unit_seq=4, pos=0, t_us=0)]
    line.store(ev)
    bound = [unit_row(conn, u)[2] for u in range(5)]
    assert bound == [queued[0], queued[1], queued[2], None, queued[3]]
    [lost] = alarms(conn, "PRINT_LOST")
    assert "unit(s) 1..1:" in lost
    assert line.ledger.expected_code("dev1", 7, 2).count(queued[2]) == 1


def test_the_binding_survives_a_restarted_ledger(line):
    """The next agent knows where the boot's prints stand: a gap across its start is seen too."""
    from serialine.host.ledger import Ledger
    conn = line.ledger.conn
    queued = [s for (s,) in conn.execute("SELECT serial FROM coder_job ORDER BY job_id")]
    line.store([line.event("UNIT_DETECTED", unit_seq=0, pos=0, t_us=0, flags=0),
                line.event("UNIT_PRINTED", unit_seq=0, pos=0, t_us=0),
                line.event("UNIT_DETECTED", unit_seq=1, pos=0, t_us=0, flags=0)])
    line.ledger = Ledger(conn, "B1")
    line.store([line.event("UNIT_DETECTED", unit_seq=2, pos=0, t_us=0, flags=0),
                line.event("UNIT_PRINTED", unit_seq=2, pos=0, t_us=0)])
    assert [unit_row(conn, u)[2] for u in range(3)] == queued[:3]
    assert len(alarms(conn, "PRINT_LOST")) == 1 and not alarms(conn, "EVENTS_LOST")


def test_an_invalid_event_is_stored_once_never_applied(line):
    conn = line.ledger.conn
    line.store([line.event("UNIT_DETECTED", unit_seq=0, pos=0, t_us=0, flags=0),
                line.event("UNIT_PRINTED", unit_seq=0, pos=0, t_us=0)])
    bad = line.event("UNIT_OUTCOME", unit_seq=0, outcome=1, reason=99, gate_error=0, pos=0, t_us=0,
                     invalid="UNIT_OUTCOME.reason 99 is not a Reason")
    assert line.store([bad]) == [False]
    # not applied, and the device sends no other: the pack may have left the line, so UNKNOWN
    outcome, reason, serial = unit_row(conn, 0)
    assert (outcome, reason) == ("UNKNOWN", "OUTCOME_INVALID") and serial_state(conn, serial) == "printed"
    [alarm] = alarms(conn, "QUARANTINED")
    assert "reason 99" in alarm
    [unknown] = alarms(conn, "OUTCOME_UNKNOWN")
    assert "dev1:7:0" in unknown and serial in unknown
    before = snapshot(conn)
    assert line.store([bad]) == [False]  # resent: recognised, nothing changes, no second alarm
    assert snapshot(conn) == before
    with pytest.raises(reconcile.ReconcileError, match="unknown outcome.*dev1:7:0"):
        reconcile.close_batch(conn, "B1", "ann")
    resolve.resolve(conn, "B1", "dev1:7:0", destroyed=True, user="qa", reason="not found in any case")
    assert unit_row(conn, 0)[:2] == ("DESTROYED", "RESOLVED") and serial_state(conn, serial) == "destroyed"


def test_an_invalid_outcome_never_overrides_a_final_one(line):
    conn = line.ledger.conn
    line.unit(0)
    bad = line.event("UNIT_OUTCOME", unit_seq=0, outcome=1, reason=99, gate_error=0, pos=0, t_us=0,
                     invalid="UNIT_OUTCOME.reason 99 is not a Reason")
    assert line.store([bad]) == [False]
    assert unit_row(conn, 0)[:2] == ("PASSED", "OK") and not alarms(conn, "OUTCOME_UNKNOWN")


def test_a_boot_belongs_to_its_batch_another_batch_purges_none_of_it(line):
    """Two lines on one ledger with the same device_id: the second batch's new boot books only its
    own units (its agent is refused while the first runs: test_faults_agent)."""
    from serialine.host import masterdata
    from serialine.host.ledger import Ledger
    conn = line.ledger.conn
    in_flight(line, 0, Verdict.PASS)
    with transaction(conn):
        line.ledger.new_boot("dev1", 7)
    masterdata.create_batch(conn, "B2", line.ledger.batch.gtin, "L2", "2030-01-31", 10, 3, 2)
    masterdata.start_batch(conn, "B2")
    other = Ledger(conn, "B2")
    assert not other.knows_boot("dev1", 7)  # B1's session is not B2's to resume
    with transaction(conn):
        assert other.new_boot("dev1", 9) == 0
    assert unit_row(conn, 0)[0] is None  # still B1's, in flight
    assert conn.execute("SELECT batch_id FROM device_boot ORDER BY boot_id").fetchall() == [("B1",), ("B2",)]


from hypothesis import given, strategies as st  # noqa: E402


@given(st.text(max_size=40))
def test_unit_keys_parse_or_are_refused_in_one_line(text):
    try:
        device_id, boot, seq = resolve.parse_unit(text)
    except resolve.ResolveError as exc:
        assert "\n" not in str(exc) and "DEVICE:BOOT:SEQ" in str(exc)
    else:
        assert device_id and f"{device_id}:{boot}:{seq}".count(":") >= 2


@given(st.text(min_size=1, max_size=16).filter(lambda s: ":" not in s and s.strip() == s and s),
       st.integers(0, 2 ** 30), st.integers(0, 2 ** 30))
def test_unit_keys_round_trip(device_id, boot, seq):
    assert resolve.parse_unit(f"{device_id}:{boot}:{seq}") == (device_id, boot, seq)


def test_a_unit_seq_far_beyond_any_gap_the_device_can_have_is_quarantined(line):
    """A CRC-valid event whose unit_seq jumps by billions (a device fault) would book every unit in
    between UNKNOWN (2**32 rows: the agent runs out of memory, restarts, is sent it again): it is
    stored, alarmed and not applied. A gap the device can really have still books its units."""
    from serialine.host.ledger import MAX_UNIT_GAP
    conn = line.ledger.conn
    line.store([line.event("UNIT_DETECTED", unit_seq=0, pos=0, t_us=0, flags=0)])
    wild = line.event("UNIT_OUTCOME", unit_seq=2 ** 32 - 1, outcome=1, reason=0, gate_error=0, pos=0, t_us=0)
    assert line.store([wild]) == [False]
    assert conn.execute("SELECT count(*) FROM unit").fetchone()[0] == 1
    [alarm] = alarms(conn, "QUARANTINED")
    assert str(2 ** 32 - 1) in alarm
    assert conn.execute("SELECT count(*) FROM device_event WHERE unit_seq=?", (2 ** 32 - 1,)).fetchone()[0] == 1
    before = snapshot(conn)
    assert line.store([wild]) == [False] and snapshot(conn) == before  # resent: recognised
    line.store([line.event("UNIT_DETECTED", unit_seq=MAX_UNIT_GAP, pos=0, t_us=0, flags=0)])
    assert conn.execute("SELECT count(*) FROM unit WHERE outcome='UNKNOWN'").fetchone()[0] == MAX_UNIT_GAP - 1


def test_resolve_found_at_the_packer_packs_into_the_open_case_on_the_command_line(line, tmp_path):
    from serialine.host.agent import Agent
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "epcis"))
    from story import check_story
    from test_faults_agent import ScriptedLink
    conn, L = line.ledger.conn, line.ledger
    for u in range(5):  # a closed case of 3, packs 3 and 4 in the line's open case
        line.unit(u)
    in_flight(line, 5, Verdict.PASS)
    in_flight(line, 6, Verdict.PASS)
    with transaction(conn):
        L.new_boot("dev1", 8)  # both PASSED outcomes lost with the RAM; the packs went on downstream
    found = {u: unit_row(conn, u)[2] for u in (5, 6)}
    db_path = conn.execute("PRAGMA database_list").fetchone()[2]
    cmd = [sys.executable, "-m", "serialine.host.cli", "batch", "resolve", "B1", "--db", db_path, "--user", "qa",
           "--found-at-packer", "--reason", "found at the case packer"]
    agent = Agent(conn, "B1", ScriptedLink())  # the line's agent is filling the open case
    agent.start()
    before = snapshot(conn)
    busy = subprocess.run(cmd + ["--unit", "dev1:7:5"], capture_output=True, text=True)
    assert busy.returncode == 1 and busy.stderr.count("\n") == 1, busy.stderr
    assert "open case is being filled by an agent (pid" in busy.stderr
    assert snapshot(conn) == before
    agent.release()  # line stopped
    events = conn.execute("SELECT count(*) FROM epcis_outbox").fetchone()[0]
    ok = subprocess.run(cmd + ["--unit", "dev1:7:5"], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("unit dev1:7:5 serial "), ok.stderr
    (sscc,) = conn.execute("SELECT c.sscc FROM packed p JOIN container c USING (container_id) WHERE p.serial=?",
                           (found[5],)).fetchone()
    assert sscc and f"packed in case {sscc}, which it filled" in ok.stdout  # the open case was full: closed
    new = [(t, json.loads(outbox.body_text(b))) for t, b in conn.execute(
        "SELECT event_type, body FROM epcis_outbox ORDER BY seq LIMIT -1 OFFSET ?", (events,))]
    # commissioned, then the case it filled packed, then the pallet of 2 that case filled
    assert [(t, b.get("bizStep")) for t, b in new] == [("ObjectEvent", "commissioning")] + [("AggregationEvent", "packing")] * 2
    assert len(new[1][1]["childEPCs"]) == 3 and new[1][1]["childEPCs"][-1].endswith(found[5])
    ok = subprocess.run(cmd + ["--unit", "dev1:7:6"], capture_output=True, text=True)  # no open case: a new one
    assert ok.returncode == 0 and "packed in the open case" in ok.stdout, ok.stderr
    for u in (5, 6):
        assert unit_row(conn, u)[:2] == ("PASSED", "FOUND_AT_PACKER") and serial_state(conn, found[u]) == "commissioned"
    details = [json.loads(d) for (d,) in conn.execute("SELECT detail FROM audit WHERE action='unit.resolve'")]
    assert [(d["unit"], d["case"]) for d in details] == [("dev1:7:5", sscc), ("dev1:7:6", "open")]
    assert audit.verify(conn)[0]
    report = reconcile.close_batch(conn, "B1", "ann")  # the open case closes as a partial one
    assert report.units == {"detected": 7, "passed": 7, "rejected": 0}
    check_story(conn, "B1")  # every pack commissioned before it is packed, containment as the ledger's
