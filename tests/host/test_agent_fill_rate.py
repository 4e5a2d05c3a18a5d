"""The agent's step is one transaction (events, verdicts, the coder's top-up) and it acts only once
that committed; the coder is kept deep enough, by the print rate the device's clock measures, that
a ledger held by another writer for a few seconds does not run it dry. Real SQLite (a second
connection holds the write lock), the SimCoder and SimCamera over loopback, a scripted device link
whose events carry the line's own clock (t_us): the line's time is those stamps, not the wall's."""

import sqlite3
import time

from serialine.host import db
from serialine.host.agent import FILL_AHEAD, Agent, PrintRate
from serialine.host.devices.camera import Camera
from serialine.host.devices.coder import Coder
from serialine.host.sim.camera import SimCamera
from serialine.host.sim.coder import SimCoder
from serialine.protocol.schema import WRAP, Outcome, Verdict

from test_agent_coder_faults import _alarms, _bindings_match, _queued
from test_agent_devices import ScriptedLink

PITCH_US = 150_000  # 400 packs a minute


def _wait(cond, what: str, step=None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        if step:
            step()
        time.sleep(0.005)


def _pack(link, sc, scam, u: int) -> None:
    """Unit u through coder and camera, its events queued on the link, stamped at the line's pitch."""
    t = u * PITCH_US
    link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=t, flags=0)
    printed = sc.trigger(t)
    assert printed is not None, f"the coder ran dry at unit {u}"
    link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=t)
    scam.trigger(t, printed[0], False)
    link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=t)


def _verdicts(link) -> dict:
    return {f["unit_seq"]: Verdict(f["verdict"]) for n, f in link.sent if n == "VERDICT"}


def _outcomes(link, units) -> None:
    for u in units:
        link.event("UNIT_OUTCOME", unit_seq=u, outcome=int(Outcome.PASSED), reason=0, gate_error=0, pos=0,
                   t_us=u * PITCH_US + 1000)


def test_the_print_rate_is_the_device_clocks_and_survives_its_wrap():
    rate = PrintRate(window_s=10.0)
    assert rate.per_s() == 0.0
    for k in range(5):
        rate.add((WRAP - 2 * PITCH_US + k * PITCH_US) % WRAP)  # wraps between the 2nd and 3rd print
    assert abs(rate.per_s() - 1e6 / PITCH_US) < 1e-9
    rate.add((WRAP + 3 * PITCH_US + 60_000_000) % WRAP)  # a minute's stop: the window holds the last print only
    assert rate.per_s() == 0.0
    rate.reset()
    rate.add(7)
    rate.add(7)
    assert rate.per_s() == 0.0  # no time between them: no rate


def test_a_step_commits_once_and_only_then_acks_sends_verdicts_and_pushes(conn):
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=5, window_s=5.0,
                      fill_cover_s=0)  # kept 5 deep whatever the rate
        agent.start()
        assert sc.depth == 5
        at_commit: list = []
        conn.set_trace_callback(lambda sql: at_commit.append(
            (link.acks, len(_verdicts(link)), sc.depth)) if sql == "COMMIT" else None)
        for u in range(3):
            _pack(link, sc, scam, u)
            scam.deliver(10 ** 12)
            # the coder's PRINTED report and the camera's read are in: one step has all of it
            _wait(lambda: agent.coder.printed == u + 1 and agent.camera._events, "the drivers to hear the unit")
            at_commit.clear()
            before = (link.acks, len(_verdicts(link)), sc.depth)
            agent.step(0)
            assert at_commit == [before]  # one commit; nothing acked, sent or pushed before it
            assert link.acks == before[0] + 1 and _verdicts(link)[u] == Verdict.PASS and sc.depth == 5
            _outcomes(link, [u])
            at_commit.clear()
            agent.step(0)
            assert len(at_commit) == 1  # the outcome's step: one commit, no top-up (nothing printed)
        conn.set_trace_callback(None)
        other = db.connect(db.file_of(conn))  # what the coder holds is committed: another connection sees it
        assert list(sc.buffer) == _queued(other)
        other.close()
        agent.coder.close(); agent.camera.close()


def test_a_ledger_held_by_another_writer_does_not_run_the_coder_dry(conn):
    """400 packs a minute: the coder is kept 5 s deep (34 jobs, not FILL_AHEAD = 8). Another
    connection holds the write lock while 20 packs (3 s of the line) are printed: the agent's
    steps meanwhile find the ledger busy and store nothing, the coder prints every one; once the
    lock is given back every event is stored, every unit passes, the coder is refilled, and no
    print went without a job."""
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), window_s=60.0)
        agent.start()
        assert sc.depth == FILL_AHEAD  # no rate measured yet
        for u in range(12):  # the line runs up: rate measured on the device's clock
            _pack(link, sc, scam, u)
            scam.deliver(10 ** 12)
            _wait(lambda: u in _verdicts(link), f"unit {u}'s verdict", step=lambda: agent.step(0))
            _outcomes(link, [u])
            agent.step(0)
        assert agent.fill_target() == 34  # ceil(11 prints / 1.65 s * 5 s)
        _wait(lambda: sc.depth == 34, "the coder topped up to 34", step=lambda: agent.step(0))
        holder = sqlite3.connect(db.file_of(conn), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer: a checkpoint, a close of another batch, ...
        stored_before, acks = conn.execute("SELECT count(*) FROM unit").fetchone()[0], link.acks
        for u in range(12, 32):
            _pack(link, sc, scam, u)  # asserts the coder printed a job
            if u % 5 == 0:
                assert agent.step(0) == 0  # busy: nothing stored, nothing acked
        scam.deliver(10 ** 12)
        assert link.acks == acks and sc.empty_triggers == 0
        holder.execute("COMMIT")
        holder.close()
        assert conn.execute("SELECT count(*) FROM unit").fetchone()[0] == stored_before
        _wait(lambda: set(range(12, 32)) <= set(_verdicts(link)), "the held units' verdicts",
              step=lambda: agent.step(0))
        assert all(_verdicts(link)[u] == Verdict.PASS for u in range(32))
        _outcomes(link, range(12, 32))
        agent.step(0)
        _wait(lambda: sc.depth == 34, "the coder refilled", step=lambda: agent.step(0))
        assert sc.empty_triggers == 0 and _alarms(conn, "CODER_EMPTY") == 0 and _alarms(conn, "CODER_RAN_DRY") == 0
        assert _alarms(conn, "LEDGER_BUSY") == 1 and not agent.resuming
        assert conn.execute("SELECT count(*) FROM unit WHERE outcome='PASSED'").fetchone()[0] == 32
        assert _bindings_match(conn) and list(sc.buffer) == _queued(conn)
        agent.coder.close(); agent.camera.close()
