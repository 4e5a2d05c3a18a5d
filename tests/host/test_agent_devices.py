"""The agent with the line simulator's coder and camera as real TCP servers on loopback: codes go
to the coder ahead of the line, print order binds serials to units, camera reads come back over
TCP and are correlated and judged. The line device's event stream is scripted (the link itself is
tested by its owner; end to end runs in the line simulator)."""

import contextlib
import time

from serialine.host.agent import Agent
from serialine.host.devices.camera import Camera
from serialine.host.devices.coder import Coder
from serialine.host.sim.camera import SimCamera
from serialine.host.sim.coder import SimCoder
from serialine.protocol.schema import Outcome, Reason, Verdict


class ScriptedLink:
    """Stands in for HostLink: hands the agent device events, records what it sends and acks."""

    def __init__(self):
        self.inbox, self.sent, self.acks, self.seq = [], [], 0, 0
        self.hello = {"device_id": "line1", "boot_id": 42}

    def connect(self, timeout):
        return dict(self.hello)

    def poll(self, timeout):
        out, self.inbox = self.inbox, []
        return out

    def ack_delivered(self):
        self.acks += 1

    def send(self, name, fields):
        self.sent.append((name, fields))

    def event(self, name, **f):
        self.seq += 1
        self.inbox.append((name, dict(f, event_seq=self.seq)))


def run_unit(agent, link, coder, camera, u, fault=None):
    link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
    printed = coder.trigger(u * 1000)[0]
    link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
    if fault == "misread":
        printed = printed.replace("21", "21X", 1)
    if fault != "lost":
        camera.trigger(u * 1000, printed, False)
    link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
    camera.deliver(10 ** 12)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        agent.step(0)
        got = [f for n, f in link.sent if n == "VERDICT" and f["unit_seq"] == u]
        if got:
            v = got[0]
            outcome = Outcome.PASSED if v["verdict"] == Verdict.PASS else Outcome.REJECTED_CONFIRMED
            link.event("UNIT_OUTCOME", unit_seq=u, outcome=int(outcome),
                       reason=0 if outcome == Outcome.PASSED else int(Reason.VERDICT_FAIL), gate_error=0, pos=0, t_us=0)
            agent.step(0)
            return Verdict(v["verdict"]), Reason(v["reason"])
        time.sleep(0.01)
    raise AssertionError(f"no verdict for unit {u}")


@contextlib.contextmanager
def agent_line(conn, fill_ahead: int, window_s: float):
    """A started agent of batch B1 on a scripted device link, with the simulator's coder and camera
    as TCP servers: (agent, link, coder, camera)."""
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=fill_ahead,
                      window_s=window_s)
        agent.start()
        yield agent, link, sc, scam


def test_agent_with_tcp_coder_and_camera(conn):
    with agent_line(conn, fill_ahead=5, window_s=0.3) as (agent, link, sc, scam):
        assert sc.depth == 5  # filled ahead, and every pushed code is a committed coder job
        assert conn.execute("SELECT count(*) FROM coder_job WHERE state='queued'").fetchone()[0] == 5
        results = [run_unit(agent, link, sc, scam, u) for u in range(4)]
        assert results == [(Verdict.PASS, Reason.OK)] * 4
        assert run_unit(agent, link, sc, scam, 4, fault="misread")[0] == Verdict.FAIL
        assert run_unit(agent, link, sc, scam, 5, fault="lost") == (Verdict.FAIL, Reason.CORRELATION)
        assert run_unit(agent, link, sc, scam, 6) == (Verdict.PASS, Reason.OK)
        assert sc.depth == 5  # topped up after every print
        # each unit carries the serial the coder printed for it, in order
        printed = [c.split("\x1d21")[1].split("\x1d")[0] for c in
                   [r[0] for r in conn.execute("SELECT code FROM coder_job WHERE state='bound' ORDER BY job_id")]]
        bound = [r[0] for r in conn.execute("SELECT serial FROM unit ORDER BY unit_seq")]
        assert printed == bound
        states = dict(conn.execute("SELECT state, count(*) FROM serial WHERE batch_id='B1' GROUP BY state"))
        assert states["commissioned"] == 5 and states["rejected"] == 2 and states["allocated"] == 5
        assert conn.execute("SELECT count(*) FROM alarm_log WHERE alarm='CORRELATION'").fetchone()[0] == 1
        assert link.acks >= 7
        # the device reboots with unit 7 printed but undecided: purged, its serial rejected, coder restarted
        link.event("UNIT_DETECTED", unit_seq=7, pos=0, t_us=0, flags=0)
        sc.trigger(7000)
        link.event("UNIT_PRINTED", unit_seq=7, pos=0, t_us=0)
        agent.step(0)
        stuck = conn.execute("SELECT serial FROM unit WHERE unit_seq=7").fetchone()[0]
        link.hello = {"device_id": "line1", "boot_id": 43}
        agent.step(0)
        assert conn.execute("SELECT outcome, reason FROM unit WHERE unit_seq=7").fetchone() == ("PURGED", "PURGE")
        assert conn.execute("SELECT state FROM serial WHERE serial=?", (stuck,)).fetchone()[0] == "rejected"
        assert sc.depth == 5 and agent.boot_id == 43
        assert run_unit(agent, link, sc, scam, 0) == (Verdict.PASS, Reason.OK)  # boot 43's unit 0
        agent.coder.close(); agent.camera.close()


def _serial_of(code: str) -> str:
    return code.split("\x1d21")[1].split("\x1d")[0]


def test_restarted_agent_resumes_its_device_boot(conn):
    """The agent dies with jobs in the coder; the line prints two packs while it is away. The new
    agent finds the device's boot in the ledger: it stops the line, binds those prints to the jobs
    queued before the crash, fails their units (their camera results are lost), holds the
    operator's restart, and only with the belt still resets the coder and lets the line go."""
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        first = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=5, window_s=0.2)
        first.start()
        assert [run_unit(first, link, sc, scam, u) for u in range(2)] == [(Verdict.PASS, Reason.OK)] * 2
        first.coder.close(); first.camera.close(); first.release()  # kill -9: nothing more from it, lock gone
        away = []
        for u in (2, 3):  # printed and inspected while no agent listens
            link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
            away.append(_serial_of(sc.trigger(u * 1000)[0]))
            link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
            link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
        link.sent.clear()
        link.last_status = {"state": 2, "speed_cps": 5000, "queue_fill": 6}  # still running
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=5, window_s=0.2)
        agent.start()
        assert agent.resuming and link.sent == [("COMMAND", {"command": 2, "arg": 0})]  # STOP
        assert agent.command("CLEAR_ALARM") is False  # held: the line must not restart yet
        agent.step(0)
        bound = [r[0] for r in conn.execute("SELECT serial FROM unit WHERE unit_seq IN (2, 3) ORDER BY unit_seq")]
        assert bound == away  # the prints made while away carry the jobs queued before the crash
        verdicts = [(f["unit_seq"], f["verdict"], f["reason"]) for n, f in link.sent if n == "VERDICT"]
        assert verdicts == [(2, Verdict.FAIL, Reason.CORRELATION), (3, Verdict.FAIL, Reason.CORRELATION)]
        assert sc.depth == 3  # nothing pushed while resuming
        link.last_status = {"state": 3, "speed_cps": 0, "queue_fill": 0}  # stopped, still, all acked
        deadline = time.monotonic() + 5
        while agent.resuming and time.monotonic() < deadline:
            agent.step(0)
            time.sleep(0.02)
        assert not agent.resuming
        assert link.sent[-1] == ("COMMAND", {"command": 3, "arg": 0})  # the held CLEAR_ALARM, now
        assert sc.depth == 5  # cleared and refilled with fresh jobs
        assert conn.execute("SELECT count(*) FROM coder_job WHERE state='dropped'").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM alarm_log WHERE alarm IN ('RESUMING', 'RESUMED')").fetchone()[0] == 2
        for u in (2, 3):
            link.event("UNIT_OUTCOME", unit_seq=u, outcome=int(Outcome.REJECTED_CONFIRMED),
                       reason=int(Reason.CORRELATION), gate_error=0, pos=0, t_us=0)
        assert run_unit(agent, link, sc, scam, 4) == (Verdict.PASS, Reason.OK)  # pairing starts afresh
        states = dict(conn.execute("SELECT state, count(*) FROM serial WHERE batch_id='B1' GROUP BY state"))
        assert states["commissioned"] == 3 and states["rejected"] == 2
        agent.coder.close(); agent.camera.close()


def test_slipped_pairing_stops_the_line_and_pairs_afresh(conn):
    """The camera misses the trigger of unit 0: every later result would pair with the unit before
    its own (the trigger numbers show no gap). After three code mismatches in a row the agent fails
    the units still waiting, stops the line and, once the belt is still and the camera quiet,
    pairs afresh: the next unit passes again."""
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        link.last_status = {"state": 2, "speed_cps": 5000, "queue_fill": 4}
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=8, window_s=0.5)
        agent.start()
        for u in range(6):
            link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
            code = sc.trigger(u * 1000)[0]
            link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
            if u:  # unit 0's trigger never reached the camera
                scam.trigger(u * 1000, code, False)
            link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
        scam.deliver(10 ** 12)
        deadline = time.monotonic() + 5
        while len([1 for n, _ in link.sent if n == "VERDICT"]) < 6 and time.monotonic() < deadline:
            agent.step(0)
            time.sleep(0.01)
        verdicts = {f["unit_seq"]: (f["verdict"], f["reason"]) for n, f in link.sent if n == "VERDICT"}
        assert [verdicts[u] for u in range(3)] == [(Verdict.FAIL, Reason.CODE_MISMATCH)] * 3
        assert all(verdicts[u] == (Verdict.FAIL, Reason.CORRELATION) for u in (3, 4, 5))
        assert ("COMMAND", {"command": 2, "arg": 0}) in link.sent and agent.resuming  # STOP
        assert conn.execute("SELECT count(*) FROM alarm_log WHERE alarm='PAIRING_LOST'").fetchone()[0] == 1
        assert agent.command("CLEAR_ALARM") is False  # held until pairing can restart
        for u in range(6):
            link.event("UNIT_OUTCOME", unit_seq=u, outcome=int(Outcome.REJECTED_CONFIRMED),
                       reason=int(Reason.VERDICT_FAIL), gate_error=0, pos=0, t_us=0)
        link.last_status = {"state": 3, "speed_cps": 0, "queue_fill": 0}
        while agent.resuming and time.monotonic() < deadline + 5:
            agent.step(0)
            time.sleep(0.02)
        assert not agent.resuming and link.sent[-1] == ("COMMAND", {"command": 3, "arg": 0})
        assert conn.execute("SELECT count(*) FROM coder_job WHERE state='dropped'").fetchone()[0] == 0  # queue kept
        assert run_unit(agent, link, sc, scam, 6) == (Verdict.PASS, Reason.OK)
        agent.coder.close(); agent.camera.close()
