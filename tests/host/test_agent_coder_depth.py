"""The coder's own buffer under a real Agent and the SimCoder emulator over loopback: while the
device's link is silent (an outage) the coder keeps printing and the device's UNIT_PRINTED events
wait; the agent keeps the coder's PHYSICAL buffer filled (its depth, less the PRINTED lines since),
and the ledger keeps every unreported print queued, bound in order once reported. A coder that
prints nothing on a trigger (EMPTY) makes order-based binding untrustworthy: line stop, clear,
write-off and refill, every unit meanwhile rejected (fail safe)."""

import time

from serialine.host import agent as agent_mod
from serialine.host.agent import Agent
from serialine.host.devices.camera import Camera
from serialine.host.devices.coder import Coder
from serialine.host.sim.camera import SimCamera
from serialine.host.sim.coder import SimCoder
from serialine.protocol.schema import Outcome, Reason, Verdict

from test_agent_coder_faults import STOP, CLEAR_ALARM, _alarms, _bindings_match, _queued
from test_agent_devices import ScriptedLink, run_unit


def _heard(coder: Coder, printed: int, empty: int = 0) -> None:
    """Wait until the driver has read that many PRINTED (and EMPTY) lines: deterministic steps."""
    deadline = time.monotonic() + 5
    while (coder.printed, coder.empty) < (printed, empty) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert (coder.printed, coder.empty) == (printed, empty)


def _verdicts(agent, link, units) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        agent.step(0)
        got = {f["unit_seq"]: (Verdict(f["verdict"]), Reason(f["reason"])) for n, f in link.sent if n == "VERDICT"}
        if set(units) <= set(got):
            return {u: got[u] for u in units}
        time.sleep(0.01)
    raise AssertionError(f"no verdicts for units {units}")


def test_the_coder_stays_full_while_the_device_link_is_silent(conn):
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=4, window_s=0.3)
        agent.start()
        assert run_unit(agent, link, sc, scam, 0) == (Verdict.PASS, Reason.OK)
        codes = {}
        for u in range(1, 11):  # the link is down: the coder prints 10 packs, the device reports none
            printed = sc.trigger(u * 1000)
            assert printed is not None, f"the coder ran dry at unit {u}"
            codes[u] = printed[0]
            _heard(agent.coder, u + 1)
            agent.step(0)
            assert sc.depth == 4  # topped up by its own buffer, not by the ledger's queue
        assert len(_queued(conn)) == 14 and _queued(conn)[10:] == list(sc.buffer)  # 10 printed, unbound
        for u in range(1, 11):  # the link is back: the device's events arrive, in order
            link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
            link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
            scam.trigger(u * 1000, codes[u], False)
            link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
        scam.deliver(10 ** 12)
        assert _verdicts(agent, link, range(1, 11)) == {u: (Verdict.PASS, Reason.OK) for u in range(1, 11)}
        for u in range(1, 11):
            link.event("UNIT_OUTCOME", unit_seq=u, outcome=int(Outcome.PASSED), reason=0, gate_error=0, pos=0, t_us=0)
        agent.step(0)
        assert _bindings_match(conn) and list(sc.buffer) == _queued(conn) and sc.depth == 4
        assert sc.empty_triggers == 0 and _alarms(conn, "CODER_EMPTY") == 0 and not agent.resuming
        agent.coder.close(); agent.camera.close()


def test_a_coder_that_ran_dry_stops_the_line_and_every_unit_meanwhile_fails_safe(conn, monkeypatch):
    """The link stays down past MAX_UNBOUND unreported prints: filling holds, the coder runs dry
    (EMPTY), the agent latches a line stop; once the belt is still the coder is cleared and refilled."""
    monkeypatch.setattr(agent_mod, "MAX_UNBOUND", 3)
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        link.last_status = {"state": 2, "speed_cps": 5000, "queue_fill": 3}
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=2, window_s=0.2)
        agent.start()
        assert run_unit(agent, link, sc, scam, 0) == (Verdict.PASS, Reason.OK)
        link.sent.clear()
        for u in range(1, 5):  # 4 prints unreported: the 3rd holds filling, the 4th empties the coder
            assert sc.trigger(u * 1000) is not None
            _heard(agent.coder, u + 1)
            agent.step(0)
        assert sc.depth == 0 and _alarms(conn, "CODER_FILL_HELD") == 1 and not agent.resuming
        assert sc.trigger(5000) is None  # nothing printed on unit 5
        _heard(agent.coder, 5, empty=1)
        agent.step(0)
        assert agent.resuming and link.sent == [STOP] and _alarms(conn, "CODER_RAN_DRY") == 1
        assert agent.command("CLEAR_ALARM") is False  # held until the coder is reset
        assert sc.trigger(6000) is None  # the line coasting to a stop: no refill meanwhile
        _heard(agent.coder, 5, empty=2)
        agent.step(0)
        assert _alarms(conn, "CODER_RAN_DRY") == 1  # once per episode
        for u in range(1, 7):  # the link is back
            link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
            link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
            link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
        assert _verdicts(agent, link, range(1, 7)) == {u: (Verdict.FAIL, Reason.CORRELATION) for u in range(1, 7)}
        for u in range(1, 7):
            link.event("UNIT_OUTCOME", unit_seq=u, outcome=int(Outcome.REJECTED_CONFIRMED),
                       reason=int(Reason.CORRELATION), gate_error=0, pos=0, t_us=0)
        link.last_status = {"state": 3, "speed_cps": 0, "queue_fill": 0}
        deadline = time.monotonic() + 5
        while agent.resuming and time.monotonic() < deadline:
            agent.step(0)
            time.sleep(0.02)
        assert not agent.resuming and link.sent[-1] == CLEAR_ALARM
        assert list(sc.buffer) == _queued(conn) and sc.depth == 2 and _alarms(conn, "RESUMED") == 1
        assert run_unit(agent, link, sc, scam, 7) == (Verdict.PASS, Reason.OK)
        assert conn.execute("SELECT count(*) FROM unit WHERE outcome='PASSED'").fetchone()[0] == 2  # units 0 and 7
        assert _bindings_match(conn) and list(sc.buffer) == _queued(conn)
        agent.coder.close(); agent.camera.close()


def test_the_drivers_depth_is_the_last_reply_less_the_prints_since(conn):
    with SimCoder() as sc:
        coder = Coder(*sc.address)
        assert coder.buffered() == 0  # nothing replied yet: asks DEPTH
        for i in range(3):
            assert coder.push(f"CODE{i}") == i + 1
        for n in (1, 2):
            sc.trigger(n)
            _heard(coder, n)
            assert coder.buffered() == 3 - n
        coder.close()
