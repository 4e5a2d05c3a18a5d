"""A host stall (the agent's loop held up for several correlation windows) loses no camera result and
pairs none with the wrong unit: units and results that piled up meanwhile are taken in one step,
stamped alike on the step clock, and pair off in trigger order."""

import time

from serialine.host.correlate import Correlator, StepClock
from serialine.host.devices.camera import CameraResult
from serialine.protocol.schema import Reason, Verdict

from test_agent_devices import agent_line, run_unit

WINDOW_S = 0.3


def test_a_stall_counts_as_one_capped_step():
    clock = StepClock(cap_s=0.05)
    before = clock.tick()
    time.sleep(0.3)  # a real stall of six caps
    assert 0.0 <= clock.tick() - before <= 0.05


def test_results_and_units_taken_in_one_step_pair_whatever_their_arrival():
    c = Correlator(window_s=0.5)
    for u in range(3):
        c.inspected(u, 10.0)
    for n in (1, 2, 3):  # the driver stamped them seconds before the units were stored
        c.result(CameraResult(n, "A", f"]d2x{n}", 2.0), t=10.0)
    assert [(p.unit, p.result.n) for p in c.pairs(now=10.0)] == [(0, 1), (1, 2), (2, 3)]


def _wait(cond, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_host_stall_of_several_windows_loses_no_result(conn):
    with agent_line(conn, fill_ahead=8, window_s=WINDOW_S) as (agent, link, sc, scam):
        assert run_unit(agent, link, sc, scam, 0) == (Verdict.PASS, Reason.OK)
        units = range(1, 5)
        for u in units:  # four packs pass the camera while the agent's loop is held up
            link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
            printed = sc.trigger(u * 1000)[0]
            link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
            scam.trigger(u * 1000, printed, False)
            link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
        scam.deliver(10 ** 12)
        _wait(lambda: len(agent.camera._events) == len(units), "the camera driver to receive the results")
        time.sleep(5 * WINDOW_S)  # the stall: every result arrived well before its unit is stored
        got = {}

        def verdicts():
            agent.step(0)
            got.update({f["unit_seq"]: (Verdict(f["verdict"]), Reason(f["reason"]))
                        for n, f in link.sent if n == "VERDICT"})
            return all(u in got for u in units)

        _wait(verdicts, "the verdicts")
        assert [got[u] for u in units] == [(Verdict.PASS, Reason.OK)] * len(units)
        assert conn.execute("SELECT count(*) FROM alarm_log WHERE alarm='CORRELATION'").fetchone()[0] == 0
        agent.coder.close(); agent.camera.close()
