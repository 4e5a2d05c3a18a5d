"""The print cross-check end to end: the real firmware in the MicroPython unix port (virtual time,
link on a pty through HostLink), the real Agent in this process, the emulated coder and camera on
loopback. A coder that prints another code than the ledger bound to the unit (a swap of two jobs)
gives one PRINT_MISMATCH and that unit FAILs although the camera reads the code the ledger
expected; the same line with an honest coder, the serialine or the Videojet one, runs without a
false alarm."""

from __future__ import annotations

import collections
import time

import pytest

from serialine.host.agent import Agent
from serialine.host.devices.camera import Camera
from serialine.host.devices.coder import Coder
from serialine.host.devices.videojet import VideojetCoder
from serialine.host.link import HostLink
from serialine.host.sim.camera import SimCamera
from serialine.host.sim.coder import SimCoder
from serialine.host.sim.faults import FaultyRelay
from serialine.host.sim.unixboard import UnixBoard
from serialine.host.sim.videojet_emu import VideojetEmu
from serialine.protocol.schema import Command, ConfigFields

CFG = dict(config_id=7, coder_at=400, camera_at=800, gate_at=2000, confirm_from=2100,
           confirm_to=2600, counts_per_mm_milli=1000, gate_lead_us=5000, dwell=150,
           dwell_unit=0, debounce_us=200, min_pitch=100, deadline_margin=100,
           max_speed_cps=20000, min_host_budget_us=10000, reject_streak_limit=0,
           link_timeout_ms=1000, link_stop_ms=0, purge_counts=0, virtual_speed_cps=0,
           stall_ms=500, policy=0)
assert list(CFG) == [sc.name for sc in ConfigFields.subcons]


def run_line(conn, tmp_path, sc: SimCoder, n_packs: int, fooled: bool, driver=Coder):
    """n_packs through the line; the camera reads the code the ledger bound when `fooled`, else
    what was printed. → (agent, outcomes {unit: (outcome, reason)})."""
    with SimCamera(latency_ms=0, jitter_ms=0) as scam, FaultyRelay() as relay, \
            UnixBoard(relay.device_path, cfg_path=tmp_path / "s.cfg") as sb:
        link = HostLink(relay.host_path)
        agent = None
        try:
            sb.step(100, 0, 0)
            agent = Agent(conn, "B1", link, driver(*sc.address), Camera(*scam.address), fill_ahead=4, window_s=5.0)
            agent.start()
            assert scam.connected.wait(2)
            link.send("CONFIG_SET", CFG)
            link.send("COMMAND", {"command": int(Command.START), "arg": 0})
            outcomes: dict[int, tuple[int, int]] = {}
            at_coder: collections.deque = collections.deque()  # printed codes between coder and camera
            confirm_at: list[int] = []
            travel, t, pitch, first = 0, 0, 500, 300  # a print never meets the previous pack's read
            end = time.monotonic() + 60
            while len(outcomes) < n_packs and time.monotonic() < end:
                t += 200
                travel += 2  # 10000 counts/s
                x = travel - first
                pe = int(0 <= x < n_packs * pitch and x % pitch < 150)
                confirm = int(any(c <= travel < c + 20 for c in confirm_at))
                edges, _ = sb.step(t, travel, pe, confirm)
                for e in edges:
                    if e.name == "coder":
                        job = sc.trigger(t)
                        at_coder.append(job[0] if job else None)
                    elif e.name == "camera":
                        printed = at_coder.popleft() if at_coder else None
                        unit = scam.triggers  # units are inspected in order from 0
                        if fooled and agent.ledger.expected_code(agent.device_id, agent.boot_id, unit):
                            printed = agent.ledger.expected_code(agent.device_id, agent.boot_id, unit)
                        scam.trigger(t, printed, False)
                    elif e.name == "gate_open":
                        confirm_at.append(e.pos + 350)
                scam.deliver(t)
                agent.step(0)
                for (u, o, r) in conn.execute("SELECT unit_seq, outcome, reason FROM unit WHERE outcome IS NOT NULL"):
                    outcomes[u] = (o, r)
            return agent, outcomes
        finally:
            if agent is not None:
                agent.coder.close()
                agent.camera.close()
            link.close()


def _verdicts(conn):
    return {u: (v, r) for u, v, r in conn.execute("SELECT unit_seq, verdict, verdict_reason FROM unit ORDER BY unit_seq")}


def _alarms(conn, kind):
    return [d for (d,) in conn.execute("SELECT detail FROM alarm_log WHERE alarm=?", (kind,))]


def test_a_clean_line_has_no_print_mismatch(conn, tmp_path):
    with SimCoder() as sc:
        agent, outcomes = run_line(conn, tmp_path, sc, 5, fooled=False)
    assert outcomes == {u: ("PASSED", "OK") for u in range(5)}, outcomes
    assert agent.printcheck.checked == 5 and not _alarms(conn, "PRINT_MISMATCH")


def test_a_videojet_line_has_no_false_alarm(conn, tmp_path):
    with VideojetEmu() as emu:
        agent, outcomes = run_line(conn, tmp_path, emu, 5, fooled=False, driver=VideojetCoder)
    assert outcomes == {u: ("PASSED", "OK") for u in range(5)}, outcomes
    assert agent.printcheck.checked == 5 and not _alarms(conn, "PRINT_MISMATCH")
    assert not _alarms(conn, "CODER_RAN_DRY") and emu.faults["duplicate"] == 0


def test_a_coder_printing_another_code_fails_the_unit_through_the_firmware(conn, tmp_path):
    with SimCoder(swap_at={3}) as sc:
        agent, outcomes = run_line(conn, tmp_path, sc, 3, fooled=True)
    assert sc.faults["swap"] == 1
    (detail,) = _alarms(conn, "PRINT_MISMATCH")
    assert ":2: the coder printed" in detail
    verdicts = _verdicts(conn)
    assert verdicts[0] == verdicts[1] == ("PASS", "OK") and verdicts[2] == ("FAIL", "CODE_MISMATCH"), verdicts
    assert outcomes[0][0] == outcomes[1][0] == "PASSED" and outcomes[2][0] != "PASSED", outcomes
    # the pack that left the line carries the code its unit was bound to
    bound = dict(conn.execute("SELECT unit_seq, serial FROM unit WHERE outcome='PASSED'"))
    assert bound == {u: s for u, s in conn.execute("SELECT unit_seq, read_serial FROM unit WHERE outcome='PASSED'")}


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
