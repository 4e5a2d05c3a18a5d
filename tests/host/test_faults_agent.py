"""The agent survives bad input and contention: an intact frame with an enum value out of range
(through the real HostLink on a pty) is stored, alarmed and acked, never a crash loop; a second
agent for the same device is refused in one line; a writer holding the ledger's lock (a real
second connection in BEGIN IMMEDIATE) is waited out, the events acked only once stored."""

import os
import subprocess
import sys
import threading
import time
import tty

import pytest

from serialine.host import db, devevents
from serialine.host.agent import Agent, AgentError
from serialine.host.link import HostLink
from serialine.protocol.fastcodec import StreamDecoder, as_dict, encode
from serialine.protocol.schema import BY_NAME, FINGERPRINT, PROTOCOL_VERSION

T = {name: m.msg_type for name, m in BY_NAME.items()}


def hello_reply(boot_id=5):
    return encode(T["HELLO_REPLY"], 0, 0, dict(
        fingerprint=FINGERPRINT, proto_version=PROTOCOL_VERSION, status=0, fw_version="x", board="sim",
        device_id="dev-q", boot_id=boot_id, uptime_ms=2, reset_cause=1, next_unit_seq=0, state=1))


def acks(master, d, wait=0.3, agent=None):
    """The highest ack the host wrote during `wait` s (stepping the agent meanwhile)."""
    end, best = time.monotonic() + wait, None
    while time.monotonic() < end:
        if agent is not None:
            agent.step(0.01)
        try:
            for t, _, ack, _ in d.feed(os.read(master, 4096)):
                best = ack if best is None else max(best, ack)
        except BlockingIOError:
            time.sleep(0.01)
    return best


def frames():
    detected = encode(T["UNIT_DETECTED"], 0, 0, dict(event_seq=1, unit_seq=0, pos=0, t_us=0, flags=0))
    # CRC-valid, every field in its wire range, but reason 99 is no Reason
    outcome = encode(T["UNIT_OUTCOME"], 1, 0, dict(event_seq=2, unit_seq=0, outcome=1, reason=99, gate_error=0,
                                                   pos=0, t_us=0))
    return detected + outcome


def test_an_out_of_range_event_is_quarantined_and_acked_never_a_crash_loop(conn):
    for attempt in range(2):  # the second agent gets the same events resent: still no crash
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        link = HostLink(os.ttyname(slave), rto=0.05, hello_timeout=0.2)
        try:
            os.write(master, hello_reply())
            agent = Agent(conn, "B1", link)
            agent.start(timeout=3)
            os.write(master, frames())
            assert acks(master, StreamDecoder(), agent=agent) == 2  # both stored, both acked
            agent.release()
        finally:
            link.close()
            os.close(master)
            os.close(slave)
    rows = [(e.event_seq, e.msg_name) for e in devevents.events(conn, where="r.device_id = 'dev-q'")]
    assert rows == [(1, "UNIT_DETECTED"), (2, "UNIT_OUTCOME")]
    # not applied: the outcome is unknown until a person resolves the unit
    assert conn.execute("SELECT outcome, reason FROM unit WHERE device_id='dev-q'").fetchall() == [("UNKNOWN", "OUTCOME_INVALID")]
    quarantined = conn.execute("SELECT detail FROM alarm_log WHERE alarm='QUARANTINED'").fetchall()
    assert len(quarantined) == 1 and "99" in quarantined[0][0]


class ScriptedLink:
    """Stands in for HostLink: each event delivered once by poll(), acked by ack_delivered()."""

    def __init__(self, device_id="line1"):
        self.inbox, self.sent, self.acked, self.delivered, self.seq = [], [], 0, 0, 0
        self.hello = {"device_id": device_id, "boot_id": 42}

    def connect(self, timeout):
        return dict(self.hello)

    def poll(self, timeout):
        out, self.inbox = self.inbox, []
        self.delivered += len(out)
        return out

    def ack_delivered(self):
        self.acked = self.delivered

    def send(self, name, fields):
        self.sent.append((name, fields))

    def event(self, name, **f):
        self.seq += 1
        self.inbox.append((name, dict(f, event_seq=self.seq)))


def test_a_second_agent_for_the_same_device_is_refused(conn, tmp_path):
    first = Agent(conn, "B1", ScriptedLink())
    first.start()
    with pytest.raises(AgentError) as err:
        Agent(conn, "B1", ScriptedLink()).start()
    assert "line1" in str(err.value) and f"pid {os.getpid()}" in str(err.value) and "\n" not in str(err.value)
    # another process on the same ledger file: refused too (the lock is the OS's, not this process's)
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    code = ("import sys; sys.path.insert(0, 'tests/host'); from test_faults_agent import ScriptedLink;"
            "from serialine.host import db; from serialine.host.agent import Agent, AgentError\n"
            f"try: Agent(db.connect({path!r}), 'B1', ScriptedLink()).start()\n"
            "except AgentError as e: print(e); sys.exit(3)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.returncode == 3 and "already served" in other.stdout, other.stderr
    Agent(conn, "B1", ScriptedLink("line2")).start()  # another device: fine
    first.release()
    Agent(conn, "B1", ScriptedLink()).start()  # the first is gone: the device is free


def test_a_busy_ledger_is_waited_out_and_events_acked_only_once_stored(conn, tmp_path):
    link = ScriptedLink()
    agent = Agent(conn, "B1", link)
    agent.start()
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    other = db.connect(path)
    other.execute("BEGIN IMMEDIATE")  # e.g. a serial import holding the write lock
    holding = threading.Event()
    holding.set()

    def release_later():
        time.sleep(1.5)
        holding.clear()
        other.execute("COMMIT")

    threading.Thread(target=release_later, daemon=True).start()
    link.event("UNIT_DETECTED", unit_seq=0, pos=0, t_us=0, flags=0)
    steps = 0
    while holding.is_set():
        stored = agent.step(0.01)  # no exception
        if holding.is_set():
            assert stored == 0 and link.acked == 0  # nothing stored, nothing acked
        steps += 1
    link.event("UNIT_DETECTED", unit_seq=1, pos=0, t_us=0, flags=0)
    deadline = time.monotonic() + 5
    while link.acked < 2 and time.monotonic() < deadline:
        agent.step(0.01)
    assert link.acked == 2
    assert conn.execute("SELECT unit_seq FROM unit ORDER BY 1").fetchall() == [(0,), (1,)]
    [(detail,)] = conn.execute("SELECT detail FROM alarm_log WHERE alarm='LEDGER_BUSY'").fetchall()
    assert "locked by another writer" in detail
    assert any("ledger busy" in a for a in agent.alarms)
    assert 1 < steps < 200  # backed off, but the link kept being served
    other.close()


def _serial_of(code: str) -> str:
    return code.split("\x1d21")[1].split("\x1d")[0]


def test_prints_lost_with_the_devices_ram_still_get_their_units(conn):
    """The device reboots with two units' events unacknowledged: the coder's depth says two more
    of its jobs were printed; those packs get unit rows with their codes, booked rejected (the host
    never passed them), instead of no row at all."""
    from serialine.host.devices.coder import Coder
    from serialine.host.sim.coder import SimCoder
    with SimCoder() as sc:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), fill_ahead=4)
        agent.start()
        link.event("UNIT_DETECTED", unit_seq=0, pos=0, t_us=0, flags=0)
        heard = _serial_of(sc.trigger(0)[0])
        link.event("UNIT_PRINTED", unit_seq=0, pos=0, t_us=0)
        agent.step(0)
        lost = [_serial_of(sc.trigger(k * 1000)[0]) for k in (1, 2)]  # their events die with the RAM
        link.hello = {"device_id": "line1", "boot_id": 43}
        agent.step(0)
        rows = conn.execute("SELECT unit_seq, outcome, reason, serial FROM unit WHERE boot_id=42 ORDER BY 1").fetchall()
        assert rows == [(0, "PURGED", "PURGE", heard), (1, "PURGED", "PURGE", lost[0]), (2, "PURGED", "PURGE", lost[1])]
        states = {s: st for s, st in conn.execute("SELECT serial, state FROM serial WHERE serial IN (?,?,?)",
                                                  [heard] + lost)}
        assert set(states.values()) == {"rejected"}
        assert conn.execute("SELECT count(*) FROM alarm_log WHERE alarm='EVENTS_LOST'").fetchone()[0] == 1
        assert sc.depth == 4  # cleared and refilled for the new boot
        agent.coder.close()


def _unit(agent, link, sc, u):
    """Unit u through the line with the real coder emulator: detected, printed, passed."""
    from serialine.host.db import transaction
    link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
    sc.trigger(u)
    link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
    agent.step(0)
    code = agent.ledger.expected_code("line1", 42, u)
    with transaction(agent.conn):
        v, r, s = agent.ledger.judge.decide("]d2" + code, "A", code)
        agent.ledger.record_verdict("line1", 42, u, v, r, s, "A")
    link.event("UNIT_OUTCOME", unit_seq=u, outcome=1, reason=0, gate_error=0, pos=0, t_us=0)
    agent.step(0)


@pytest.mark.parametrize("then", ["events", "top-up"])
def test_a_batch_closed_under_a_running_agent_stops_the_line_and_the_agent_in_one_line(conn, then):
    """Closed by QA while its line's agent runs (close refuses while it sees the agent's lock; here
    the lock file was deleted): the next events (or the next coder top-up, where the ledger
    refuses serials to a batch that is not running) stop the line and end the agent with one
    line, storing nothing more; a restarted agent is refused in one line (no crash loop)."""
    from serialine.host import reconcile
    from serialine.host.devices.coder import Coder
    from serialine.host.sim.coder import SimCoder
    from serialine.protocol.schema import Command
    with SimCoder() as sc:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), fill_ahead=4)
        agent.start()
        for u in range(3):
            _unit(agent, link, sc, u)
        qa = db.connect(conn.execute("PRAGMA database_list").fetchone()[2])
        with pytest.raises(ValueError, match="being run by an agent"):
            reconcile.close_batch(qa, "B1", "qa")  # refused while the agent holds its lock
        # its lock file deleted under it (a clean-up): close no longer sees the agent, which must
        # then notice by itself
        os.remove(conn.execute("PRAGMA database_list").fetchone()[2] + ".line1.agent.lock")
        reconcile.close_batch(qa, "B1", "qa")
        before = db.snapshot(conn)
        if then == "events":
            link.event("UNIT_DETECTED", unit_seq=3, pos=0, t_us=0, flags=0)
        else:
            agent.ledger.resync()  # as after any rolled-back step: the mirror sees the queue written off
        with pytest.raises(AgentError) as err:
            agent.step(0)
        assert "batch B1 is closed" in str(err.value) and "\n" not in str(err.value)
        assert link.sent[-1] == ("COMMAND", {"command": int(Command.STOP), "arg": 0})
        assert not agent.command("START")  # latched
        after = db.snapshot(conn)
        assert after.pop("alarm_log") != before.pop("alarm_log") and after == before  # only the alarm
        assert conn.execute("SELECT alarm FROM alarm_log ORDER BY alarm_id DESC").fetchone() == ("BATCH_ENDED",)
        assert link.acked == link.delivered - (then == "events")
        agent.release()
        agent.coder.close()
        with pytest.raises(AgentError, match="no line runs on it: batch B1 is closed") as err:
            Agent(conn, "B1", ScriptedLink())
        qa.close()


def test_a_reboot_reported_from_inside_poll_while_the_ledger_is_busy_is_booked_once_free(conn):
    """A link wrapper that tells the agent of a new boot from inside poll() (as the simulator's
    agent process does) while another writer holds the lock: the booking waits, no exception,
    and the new boot's events are stored under it only after it is booked."""
    link = ScriptedLink()
    agent = Agent(conn, "B1", link)
    agent.start()
    link.event("UNIT_DETECTED", unit_seq=0, pos=0, t_us=0, flags=0)
    agent.step(0)
    other = db.connect(conn.execute("PRAGMA database_list").fetchone()[2])
    other.execute("BEGIN IMMEDIATE")
    link.hello = {"device_id": "line1", "boot_id": 43}
    agent.on_new_boot(dict(link.hello))  # what the wrapper does; busy: deferred
    link.event("UNIT_DETECTED", unit_seq=0, pos=0, t_us=0, flags=0)  # the new boot's first unit
    assert agent.step(0) == 0 and agent.boot_id == 42
    other.execute("COMMIT")
    deadline = time.monotonic() + 5
    while agent.boot_id != 43 and time.monotonic() < deadline:
        agent.step(0.01)
    assert conn.execute("SELECT boot_id, unit_seq, outcome FROM unit ORDER BY 1").fetchall() == [
        (42, 0, "PURGED"), (43, 0, None)]
    other.close()


def test_camera_results_taken_during_a_busy_step_are_not_lost(conn):
    """The step that takes a camera result from the driver finds the ledger locked and rolls back:
    the result stays with the agent, so the unit still pairs with its own read and passes (losing
    it would shift the pairing: the next units fail CODE_MISMATCH and the line stops)."""
    from serialine.host.devices.camera import Camera
    from serialine.host.devices.coder import Coder
    from serialine.host.sim.camera import SimCamera
    from serialine.host.sim.coder import SimCoder
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=4, window_s=1.0)
        agent.start()
        other = db.connect(conn.execute("PRAGMA database_list").fetchone()[2])
        verdicts = []
        for u in range(3):
            link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
            printed = sc.trigger(u)[0]
            link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
            link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
            agent.step(0)  # the unit is in, waiting for its result
            scam.trigger(u, printed, False)
            scam.deliver(10 ** 12)
            deadline = time.monotonic() + 5
            while not agent.camera._events and time.monotonic() < deadline:
                time.sleep(0.005)
            other.execute("BEGIN IMMEDIATE")
            assert agent.step(0) == 0 and not agent.camera._events  # taken, then rolled back
            other.execute("COMMIT")
            while not [f for n, f in link.sent if n == "VERDICT" and f["unit_seq"] == u] and time.monotonic() < deadline:
                agent.step(0.01)
            [v] = [f for n, f in link.sent if n == "VERDICT" and f["unit_seq"] == u]
            verdicts.append((v["verdict"], v["reason"]))
        assert verdicts == [(1, 0)] * 3  # PASS, OK
        other.close()
        agent.coder.close(); agent.camera.close()


def test_a_busy_ledger_as_a_resume_finishes_loses_no_verdict(conn):
    """The step stores and acks its events, then finishing the resume (coder cleared) finds the
    ledger locked: only the finish waits. The step's verdicts still go out, nothing is rolled back
    in the agent, and the resume ends once the ledger is free."""
    from serialine.host.devices.coder import Coder
    from serialine.host.sim.coder import SimCoder
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    other = db.connect(path)

    class LocksOnClear(SimCoder):
        hold = False

        def handle(self, line):
            if line == "CLEAR" and self.hold:  # another writer takes the lock just then, for 0.6 s
                self.hold = False
                other.execute("BEGIN IMMEDIATE")
                threading.Timer(0.6, lambda: other.execute("COMMIT")).start()
            return super().handle(line)

    with LocksOnClear() as sc:
        first = Agent(conn, "B1", ScriptedLink(), Coder(*sc.address), fill_ahead=4)
        first.start()
        first.release()
        first.coder.close()
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), fill_ahead=4)
        agent.start()  # the same boot: resumed, line stop latched
        assert agent.resuming
        link.last_status = {"state": 3, "speed_cps": 0, "queue_fill": 0}
        sc.hold = True
        for name in ("UNIT_DETECTED", "UNIT_PRINTED", "UNIT_INSPECTED"):
            link.event(name, unit_seq=0, pos=0, t_us=0, **({"flags": 0} if name == "UNIT_DETECTED" else {}))
        sc.trigger(0)
        assert agent.step(0) == 3 and link.acked == 3
        assert [f["unit_seq"] for n, f in link.sent if n == "VERDICT"] == [0]  # sent, not rolled back
        assert agent.resuming  # the finish waits for the ledger
        deadline = time.monotonic() + 5
        while agent.resuming and time.monotonic() < deadline:
            agent.step(0.01)
        assert not agent.resuming and list(sc.buffer) == [c for (c,) in conn.execute(
            "SELECT code FROM coder_job WHERE state='queued' ORDER BY job_id")]
        agent.coder.close()
    other.close()
