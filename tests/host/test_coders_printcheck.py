"""The coder's own print reports cross-check the print binding, through the real Agent with the
emulated coders over loopback: a coder that prints another code than the ledger bound gives alarm
PRINT_MISMATCH and that unit FAILs (even when the camera is fooled into reading the bound code);
a print no report can be tied to (reports lost with a connection, a print the coder cannot name,
anything until the coder's CLEAR re-arms the check) FAILs too (PRINT_UNTIED) and the coder is
cleared and refilled; a clean run, a reconnect that lost nothing and a Videojet coder (prints
learnt from its counts) give no false alarm; a driver without print reports has no check (logged).
The pairing rules themselves (host/printcheck.py) are tested directly too."""

import time

from serialine.host import agent as agent_mod
from serialine.host.agent import Agent
from serialine.host.devices.camera import Camera
from serialine.host.devices.coder import Coder
from serialine.host.devices.videojet import VideojetCoder
from serialine.host.printcheck import MAX_PENDING, UNTIED, PrintCheck
from serialine.host.sim.camera import SimCamera
from serialine.host.sim.coder import SimCoder
from serialine.host.sim.videojet_emu import VideojetEmu
from serialine.protocol.schema import Outcome, Reason, Verdict

from test_agent_devices import ScriptedLink, agent_line

STOP = ("COMMAND", {"command": 2, "arg": 0})


def _alarms(conn, kind) -> list[str]:
    return [d for (d,) in conn.execute("SELECT detail FROM alarm_log WHERE alarm=? ORDER BY rowid", (kind,))]


def _until(agent, pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        agent.step(0)
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def one_unit(agent, link, coder, camera, u, read=None):
    """Unit u through coder and camera; the coder's report and the device's event are in before the
    camera reads (the coder is upstream). `read`: what the camera reads instead of the print, e.g.
    the code the ledger bound (a fooled camera). → (verdict, reason)."""
    checked = agent.printcheck.checked
    link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
    printed = coder.trigger(u * 1000)[0]
    link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
    assert _until(agent, lambda: agent.printcheck.checked > checked or not agent.printcheck.armed)
    if read == "bound":
        read = agent.ledger.expected_code(agent.device_id, agent.boot_id, u)
    camera.trigger(u * 1000, read or printed, False)
    link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
    camera.deliver(10 ** 12)
    got = []
    assert _until(agent, lambda: got.extend(f for n, f in link.sent if n == "VERDICT" and f["unit_seq"] == u) or got)
    v = got[0]
    outcome = Outcome.PASSED if v["verdict"] == Verdict.PASS else Outcome.REJECTED_CONFIRMED
    link.event("UNIT_OUTCOME", unit_seq=u, outcome=int(outcome),
               reason=0 if outcome == Outcome.PASSED else int(Reason.VERDICT_FAIL), gate_error=0, pos=0, t_us=0)
    agent.step(0)
    return Verdict(v["verdict"]), Reason(v["reason"])


def _finish_resume(agent, link):
    link.last_status = {"state": 3, "speed_cps": 0, "queue_fill": 0}  # stopped, still, all acked
    assert _until(agent, lambda: not agent.resuming)


def test_a_coder_printing_another_code_fails_the_unit_even_when_the_camera_is_fooled(conn):
    with SimCoder(swap_at={3}) as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        link.last_status = {"state": 2, "speed_cps": 5000, "queue_fill": 2}
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=4, window_s=0.2)
        agent.start()
        assert scam.connected.wait(2)  # a result sent before the camera's connection is accepted is lost
        assert agent.printcheck.armed  # the new boot's CLEAR armed it
        assert [one_unit(agent, link, sc, scam, u, read="bound") for u in (0, 1)] == [(Verdict.PASS, Reason.OK)] * 2
        assert one_unit(agent, link, sc, scam, 2, read="bound") == (Verdict.FAIL, Reason.CODE_MISMATCH)
        (detail,) = _alarms(conn, "PRINT_MISMATCH")
        assert "unit line1:42:2" in detail and "it FAILs" in detail and sc.faults["swap"] == 1
        assert agent.resuming and STOP in link.sent  # the queues differ: line stop, clear, refill
        assert conn.execute("SELECT verdict, verdict_reason FROM unit WHERE unit_seq=2").fetchone() == ("FAIL", "CODE_MISMATCH")
        _finish_resume(agent, link)
        assert agent.printcheck.armed and list(sc.buffer) == [c for (c,) in conn.execute(
            "SELECT code FROM coder_job WHERE state='queued' ORDER BY job_id")]
        assert [one_unit(agent, link, sc, scam, u) for u in (3, 4, 5)] == [(Verdict.PASS, Reason.OK)] * 3
        assert len(_alarms(conn, "PRINT_MISMATCH")) == 1
        agent.coder.close(); agent.camera.close()


class GarbledReport(SimCoder):
    """Reports the print of job 3 in a line the driver cannot read (a code with a space in it)."""

    def on_printed(self, code: str) -> None:
        if self.jobs_printed == 3:
            self.send("PRINTED garbled code")
        else:
            super().on_printed(code)


def test_a_print_report_the_driver_cannot_read_fails_that_unit_not_a_later_one(conn):
    with GarbledReport() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        link.last_status = {"state": 2, "speed_cps": 5000, "queue_fill": 2}
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=4, window_s=0.2)
        agent.start()
        assert scam.connected.wait(2)
        assert [one_unit(agent, link, sc, scam, u) for u in (0, 1)] == [(Verdict.PASS, Reason.OK)] * 2
        # unit 2's print came as an unreadable report: a print of no known code, so unit 2 FAILs
        assert one_unit(agent, link, sc, scam, 2) == (Verdict.FAIL, Reason.CODE_MISMATCH)
        assert agent.coder.printed == 3 and agent.resuming and STOP in link.sent
        assert any("unit line1:42:2" in d for d in _alarms(conn, "PRINT_MISMATCH") + _alarms(conn, "PRINT_UNTIED"))
        _finish_resume(agent, link)
        assert [one_unit(agent, link, sc, scam, u) for u in (3, 4)] == [(Verdict.PASS, Reason.OK)] * 2
        agent.coder.close(); agent.camera.close()


def test_a_driver_without_print_reports_has_no_cross_check_and_says_so(conn, caplog):
    """A coder family that reports no prints: the check is off by design (logged at start), and the
    same fault with a fooled camera passes the pack (what the cross-check adds)."""
    caplog.set_level("INFO", logger="serialine.agent")
    with SimCoder(swap_at={3}) as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        coder = Coder(*sc.address)
        coder.printed_codes = None  # a driver without print reports
        agent = Agent(conn, "B1", link, coder, Camera(*scam.address), fill_ahead=4, window_s=0.2)
        agent.start()
        assert scam.connected.wait(2)  # a result sent before the camera's connection is accepted is lost
        assert not agent.printcheck.on and "print cross-check: off (driver Coder gives no print reports)" in caplog.text
        results = [one_unit(agent, link, sc, scam, u, read="bound") for u in (0, 1, 2)]
        assert results == [(Verdict.PASS, Reason.OK)] * 3 and not _alarms(conn, "PRINT_MISMATCH")
        assert not _alarms(conn, "PRINT_UNTIED") and not agent.resuming
        agent.coder.close(); agent.camera.close()


def _verdict(agent, link, u, timeout=10.0):
    got = []
    assert _until(agent, lambda: got.extend(f for n, f in link.sent if n == "VERDICT" and f["unit_seq"] == u) or got,
                  timeout)
    return Verdict(got[0]["verdict"]), Reason(got[0]["reason"])


def test_a_clean_run_and_a_coder_reconnect_that_lost_nothing_give_no_false_alarm(conn, caplog):
    caplog.set_level("INFO", logger="serialine.agent")
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address, timeout=0.5), Camera(*scam.address), fill_ahead=4,
                      window_s=0.2)
        agent.start()
        assert "print cross-check: on (driver Coder reports each print)" in caplog.text
        assert scam.connected.wait(2)  # a result sent before the camera's connection is accepted is lost
        assert [one_unit(agent, link, sc, scam, u) for u in range(4)] == [(Verdict.PASS, Reason.OK)] * 4
        assert agent.printcheck.checked == 4
        epoch = agent.coder.epoch
        sc.drop()  # no print while it is gone: the first report after it names the oldest binding's code
        assert _until(agent, lambda: agent.coder.epoch > epoch and sc.depth == 4 and agent.printcheck.gap)
        assert [one_unit(agent, link, sc, scam, u) for u in (4, 5)] == [(Verdict.PASS, Reason.OK)] * 2
        assert agent.printcheck.checked == 6 and agent.printcheck.armed and not agent.printcheck.gap
        assert not _alarms(conn, "PRINT_MISMATCH") and not _alarms(conn, "PRINT_UNTIED") and not agent.resuming
        agent.coder.close(); agent.camera.close()


def test_a_coder_reconnect_that_lost_a_report_fails_the_untied_units_then_clears_and_refills(conn):
    """The coder's connection drops while unit 4 is printed (its PRINTED line goes to nobody). After
    the reconnect the first report is unit 5's code, not unit 4's: reports were lost, so neither
    print can be tied to its job. Both units FAIL (whatever the camera reads), the line stops, the
    coder is cleared and refilled, and the check re-arms from that CLEAR: later packs PASS."""
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        link.last_status = {"state": 2, "speed_cps": 5000, "queue_fill": 2}
        agent = Agent(conn, "B1", link, Coder(*sc.address, timeout=0.5), Camera(*scam.address), fill_ahead=4,
                      window_s=0.2)
        agent.start()
        assert scam.connected.wait(2)
        assert [one_unit(agent, link, sc, scam, u) for u in range(4)] == [(Verdict.PASS, Reason.OK)] * 4
        epoch = agent.coder.epoch
        sc.drop()
        link.event("UNIT_DETECTED", unit_seq=4, pos=0, t_us=0, flags=0)
        printed4 = sc.trigger(4000)[0]  # its report is lost with the connection
        link.event("UNIT_PRINTED", unit_seq=4, pos=0, t_us=0)
        assert _until(agent, lambda: agent.coder.epoch > epoch and sc.depth == 4)  # reconnected, topped up
        scam.trigger(4000, printed4, False)  # the pack carries its bound code: unknowable from the reports
        link.event("UNIT_INSPECTED", unit_seq=4, pos=0, t_us=0)
        scam.deliver(10 ** 12)
        # inspected after the line stop latched: its camera result is not paired either (CORRELATION)
        assert one_unit(agent, link, sc, scam, 5, read="bound") == (Verdict.FAIL, Reason.CORRELATION)
        assert _verdict(agent, link, 4) == (Verdict.FAIL, Reason.CODE_MISMATCH)
        (untied,) = [d for d in _alarms(conn, "PRINT_UNTIED") if "PRINTED lines were lost" in d]
        assert "line1:42:5" in untied and "line1:42:4" in untied and "they FAIL" in untied
        assert not agent.printcheck.armed and agent.resuming and STOP in link.sent
        link.event("UNIT_OUTCOME", unit_seq=4, outcome=int(Outcome.REJECTED_CONFIRMED), reason=int(Reason.VERDICT_FAIL),
                   gate_error=0, pos=0, t_us=0)
        assert conn.execute("SELECT verdict, verdict_reason FROM unit WHERE unit_seq IN (4, 5) ORDER BY unit_seq").fetchall() == \
            [("FAIL", "CODE_MISMATCH"), ("FAIL", "CORRELATION")]
        _finish_resume(agent, link)
        assert agent.printcheck.armed and list(sc.buffer) == [c for (c,) in conn.execute(
            "SELECT code FROM coder_job WHERE state='queued' ORDER BY job_id")] and sc.depth == 4
        said = len(_alarms(conn, "PRINT_UNTIED"))
        assert [one_unit(agent, link, sc, scam, u) for u in (6, 7, 8)] == [(Verdict.PASS, Reason.OK)] * 3
        assert len(_alarms(conn, "PRINT_UNTIED")) == said and not _alarms(conn, "PRINT_MISMATCH")
        assert agent.printcheck.checked == 4 + 3
        agent.coder.close(); agent.camera.close()


def test_a_verdict_waits_for_the_print_report_and_fails_if_none_comes(conn, monkeypatch):
    """The camera's result for a unit is in before the coder's report of its print (here: the coder
    has not even printed yet): the verdict waits for the report and passes once the print is
    compared. If no report comes within REPORT_WAIT_S the unit FAILs (never passed unchecked)."""
    monkeypatch.setattr(agent_mod, "REPORT_WAIT_S", 0.3)
    with agent_line(conn, fill_ahead=4, window_s=0.2) as (agent, link, sc, scam):
        assert scam.connected.wait(2)
        assert one_unit(agent, link, sc, scam, 0) == (Verdict.PASS, Reason.OK)
        for u, report in ((1, True), (2, False)):
            link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
            link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
            key = (agent.device_id, agent.boot_id, u)
            assert _until(agent, lambda: agent.printcheck.waiting(key))
            scam.trigger(u * 1000, agent.ledger.expected_code(*key), False)
            link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
            scam.deliver(10 ** 12)
            assert _until(agent, lambda: key in agent._report_wait)  # paired with its result, held
            assert not [f for n, f in link.sent if n == "VERDICT" and f["unit_seq"] == u]
            if report:
                sc.trigger(u * 1000)  # the print (and its report) come after the camera's result
                assert _verdict(agent, link, u) == (Verdict.PASS, Reason.OK)
            else:
                assert _verdict(agent, link, u) == (Verdict.FAIL, Reason.CODE_MISMATCH)
                (why,) = _alarms(conn, "PRINT_UNTIED")
                assert f"unit line1:42:{u}: no print report came for it within 0.3 s" in why
            link.event("UNIT_OUTCOME", unit_seq=u, outcome=int(Outcome.PASSED if report else Outcome.REJECTED_CONFIRMED),
                       reason=0 if report else int(Reason.VERDICT_FAIL), gate_error=0, pos=0, t_us=0)
        sc.trigger(2000)  # unit 2's report, late: compared, equal
        assert _until(agent, lambda: agent.printcheck.checked == 3)
        assert agent.printcheck.armed and not _alarms(conn, "PRINT_MISMATCH") and not agent._report_wait
        agent.coder.close(); agent.camera.close()


def test_a_videojet_coder_through_the_agent_checks_every_print(conn):
    with VideojetEmu() as emu, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, VideojetCoder(*emu.address, poll_s=0.002), Camera(*scam.address), fill_ahead=4,
                      window_s=0.2)
        agent.start()
        assert scam.connected.wait(2)  # a result sent before the camera's connection is accepted is lost
        results = []
        for u in range(5):
            assert _until(agent, lambda: emu.depth == 1)  # the line's pitch is longer than a load
            results.append(one_unit(agent, link, emu, scam, u))
        assert results == [(Verdict.PASS, Reason.OK)] * 5 and agent.printcheck.checked == 5
        assert not _alarms(conn, "PRINT_MISMATCH") and not _alarms(conn, "CODER_RAN_DRY")
        assert conn.execute("SELECT count(*) FROM unit WHERE serial IS NOT NULL AND read_serial = serial").fetchone()[0] == 5
        agent.coder.close(); agent.camera.close()


def test_a_videojet_print_inside_a_load_window_fails_its_unit_and_stops_the_line(conn):
    """At a print rate that leaves the driver no gap: unit 2's print comes while its job's JDA is
    being answered (driven from the protocol, no wall clock). The pack does carry the bound code and
    the camera reads it, but which code it carries cannot be known from the counts: the unit FAILs
    and the line stops, never a pass on an unknown code; once the coder is cleared and refilled the
    next packs pass."""
    with VideojetEmu() as emu, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, VideojetCoder(*emu.address, poll_s=0.002), Camera(*scam.address), fill_ahead=4,
                      window_s=0.2)
        agent.start()
        assert scam.connected.wait(2)
        assert _until(agent, lambda: emu.depth == 1)
        assert one_unit(agent, link, emu, scam, 0) == (Verdict.PASS, Reason.OK)
        assert _until(agent, lambda: emu.depth == 1)
        emu.prints_at.append(("JDA", "after"))  # the next load (unit 2's job): printed before its ACK
        assert one_unit(agent, link, emu, scam, 1) == (Verdict.PASS, Reason.OK)
        assert _until(agent, lambda: len(emu.log) == 3)
        link.event("UNIT_DETECTED", unit_seq=2, pos=0, t_us=0, flags=0)
        link.event("UNIT_PRINTED", unit_seq=2, pos=0, t_us=0)
        assert _until(agent, lambda: not agent.printcheck.armed)
        printed = emu.log[2]
        assert printed == agent.ledger.expected_code(agent.device_id, agent.boot_id, 2)  # the right code, unknowable
        scam.trigger(2000, printed, False)
        link.event("UNIT_INSPECTED", unit_seq=2, pos=0, t_us=0)
        scam.deliver(10 ** 12)
        got = []
        assert _until(agent, lambda: got.extend(f for n, f in link.sent if n == "VERDICT" and f["unit_seq"] == 2) or got)
        assert (Verdict(got[0]["verdict"]), Reason(got[0]["reason"])) == (Verdict.FAIL, Reason.CODE_MISMATCH)
        assert STOP in link.sent and _alarms(conn, "PRINT_IN_DOUBT") and len(_alarms(conn, "PRINT_MISMATCH")) == 1
        assert not agent.printcheck.armed  # nothing is compared, every print FAILs until the coder's CLEAR
        link.event("UNIT_OUTCOME", unit_seq=2, outcome=int(Outcome.REJECTED_CONFIRMED), reason=int(Reason.VERDICT_FAIL),
                   gate_error=0, pos=0, t_us=0)
        _finish_resume(agent, link)  # cleared and refilled: the check re-arms from the CLEAR
        assert agent.printcheck.armed
        checked = agent.printcheck.checked
        for u in (3, 4):
            assert _until(agent, lambda: emu.depth == 1)
            assert one_unit(agent, link, emu, scam, u) == (Verdict.PASS, Reason.OK)
        assert agent.printcheck.checked == checked + 2 and len(_alarms(conn, "PRINT_MISMATCH")) == 1
        agent.coder.close(); agent.camera.close()


def test_a_print_the_coder_cannot_name_is_a_mismatch():
    """A Videojet print inside a load window (in doubt: None) fails the unit it is paired with, and
    every binding after it until the next CLEAR."""
    pc = PrintCheck()
    pc.restart(3)
    pc.add_reports([(3, "A"), (3, None)])
    pc.add_bindings([(("d", 1, 0), "A"), (("d", 1, 1), "B"), (("d", 1, 2), "C")])
    m, u = pc.pairs()
    assert m.unit == ("d", 1, 1) and m.printed is None and not pc.armed
    assert (u.unit, u.printed) == (("d", 1, 2), UNTIED) and "cannot name" in u.why
    pc.add_bindings([(("d", 1, 3), "D")])
    assert [(x.unit, x.printed) for x in pc.pairs()] == [(("d", 1, 3), UNTIED)]


def test_an_unknown_report_after_lost_reports_fails_its_unit_and_the_check_stays_off_until_a_clear():
    """D7's case: reports lost with a connection, then a report the coder cannot name. Before, the
    check switched itself off and returned nothing: the unit could pass on a code nobody knew."""
    pc = PrintCheck()
    pc.restart(3)
    pc.add_reports([(3, "A")])
    pc.add_bindings([(("d", 1, 0), "A"), (("d", 1, 1), "B"), (("d", 1, 2), "C")])
    assert pc.pairs() == [] and pc.checked == 1
    pc.add_reports([(4, None)])  # a new connection (B's report lost?), then a print it cannot name
    assert [(m.unit, m.printed) for m in pc.pairs()] == [(("d", 1, 1), UNTIED), (("d", 1, 2), UNTIED)]
    assert not pc.armed and pc.untied == 2
    pc.add_reports([(4, "D")])  # nothing after it is compared, every binding fails ...
    pc.add_bindings([(("d", 1, 3), "D")])
    assert [(m.unit, m.printed) for m in pc.pairs()] == [(("d", 1, 3), UNTIED)] and pc.checked == 1
    pc.restart(5)  # ... until a CLEAR
    pc.add_reports([(5, "E")])
    pc.add_bindings([(("d", 1, 4), "E")])
    assert pc.pairs() == [] and pc.armed and pc.checked == 2


def test_pairing_rules():
    pc = PrintCheck()
    pc.add_reports([(1, "A")])
    pc.add_bindings([(("d", 1, 0), "X")])
    (m,) = pc.pairs()  # before the first CLEAR nothing can be tied: the unit FAILs
    assert (m.unit, m.printed) == (("d", 1, 0), UNTIED) and "no coder CLEAR" in m.why and pc.checked == 0
    pc.restart(2)
    pc.add_reports([(1, "OLD"), (2, "A")])  # a report from before the CLEAR is not ours
    assert pc.pairs() == []
    pc.add_bindings([(("d", 1, 0), "A"), (("d", 1, 1), "B"), (("d", 1, 2), "C")])
    assert pc.pairs() == [] and pc.checked == 1  # B waits for its report
    pc.connection(3)  # a new connection: B's report may be lost
    assert pc.gap and pc.waiting(("d", 1, 1)) and not pc.waiting(("d", 1, 0))
    pc.add_reports([(3, "B")])  # it was not: strict pairing goes on
    assert pc.pairs() == [] and not pc.gap and pc.checked == 2 and pc.armed
    pc.add_reports([(4, "D")])  # another connection: C's report was lost with the old one
    (m,) = pc.pairs()
    assert (m.unit, m.printed) == (("d", 1, 2), UNTIED) and "lost" in m.why and not pc.armed and pc.checked == 2
    pc.restart(5)
    pc.add_bindings([(("d", 1, 3), "D")])
    pc.add_reports([(5, "E")])
    (m,) = pc.pairs()
    assert (m.unit, m.bound, m.printed) == (("d", 1, 3), "D", "E") and not pc.armed
    state = pc.snapshot()
    pc.restart(6)
    pc.restore(state)
    assert not pc.armed


def test_too_many_unpaired_prints_untie_them_and_a_clear_unties_a_binding_whose_report_never_came():
    pc = PrintCheck()
    pc.restart(1)
    pc.add_bindings([(("d", 1, i), f"C{i}") for i in range(MAX_PENDING + 1)])
    out = pc.pairs()
    assert len(out) == MAX_PENDING + 1 and {m.printed for m in out} == {UNTIED} and not pc.armed
    pc.restart(2)
    pc.add_bindings([(("d", 1, 0), "A")])
    pc.restart(3)
    (m,) = pc.pairs()
    assert m.unit == ("d", 1, 0) and m.printed is UNTIED and "before the coder's CLEAR" in m.why and pc.armed


def test_a_coder_without_reports_checks_and_fails_nothing():
    pc = PrintCheck(on=False)
    pc.add_bindings([(("d", 1, 0), "A")])
    pc.restart(1)
    pc.disarm("whatever")
    pc.add_bindings([(("d", 1, 1), "B")])
    assert pc.pairs() == [] and not pc.armed and pc.untied == 0


def test_a_busy_ledger_only_delays_the_pairing(conn):
    """Another writer holds the ledger: the reports taken from the driver wait, the bindings are made
    once the step can store, and each print is checked once: no false alarm."""
    import sqlite3
    path = next(f for _, name, f in conn.execute("PRAGMA database_list") if name == "main")
    with agent_line(conn, fill_ahead=4, window_s=0.5) as (agent, link, sc, scam):
        assert scam.connected.wait(2)
        assert one_unit(agent, link, sc, scam, 0) == (Verdict.PASS, Reason.OK)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        for u in (1, 2):
            link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
            sc.trigger(u * 1000)
            link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
        assert _until(agent, lambda: len(agent.printcheck.reports) == 2 and agent._busy_since is not None)
        assert agent.printcheck.checked == 1  # both reports taken from the driver, neither paired
        other.execute("ROLLBACK")
        other.close()
        assert _until(agent, lambda: agent.printcheck.checked == 3)
        assert not _alarms(conn, "PRINT_MISMATCH") and agent.printcheck.armed
        agent.coder.close(); agent.camera.close()


def test_a_restarted_agent_compares_nothing_until_its_clear(conn):
    """The agent dies; the line prints two packs meanwhile (their reports went to the dead agent's
    connection). The new agent resumes the boot: the bindings of those prints are not compared, the
    check arms at the resume's CLEAR and the next print is checked: no false alarm."""
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        first = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=5, window_s=0.2)
        first.start()
        assert scam.connected.wait(2)
        assert [one_unit(first, link, sc, scam, u) for u in range(2)] == [(Verdict.PASS, Reason.OK)] * 2
        first.coder.close(); first.camera.close(); first.release()
        for u in (2, 3):
            link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
            sc.trigger(u * 1000)
            link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
            link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
        link.last_status = {"state": 2, "speed_cps": 5000, "queue_fill": 6}
        scam.connected.clear()
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=5, window_s=0.2)
        agent.start()
        assert agent.resuming and not agent.printcheck.armed
        agent.step(0)
        for u in (2, 3):
            link.event("UNIT_OUTCOME", unit_seq=u, outcome=int(Outcome.REJECTED_CONFIRMED),
                       reason=int(Reason.CORRELATION), gate_error=0, pos=0, t_us=0)
        _finish_resume(agent, link)
        assert agent.printcheck.armed and agent.printcheck.checked == 0
        assert scam.connected.wait(2)
        assert one_unit(agent, link, sc, scam, 4) == (Verdict.PASS, Reason.OK)
        assert agent.printcheck.checked == 1 and not _alarms(conn, "PRINT_MISMATCH")
        agent.coder.close(); agent.camera.close()
