"""The coder misbehaving under a real Agent, over loopback with the SimCoder emulator: a push whose
reply comes too late (in doubt: the job may or may not be queued), stray replies, and refusals
(ERR full). The agent never crashes; afterwards the coder's buffer is the ledger's queue, in order,
and every pack carries the serial that was printed on it."""

import time

from serialine.host import agent as agent_mod
from serialine.host.agent import Agent
from serialine.host.devices.camera import Camera
from serialine.host.devices.coder import Coder
from serialine.host.sim import coder as sim_coder
from serialine.host.sim.camera import SimCamera
from serialine.host.sim.coder import SimCoder
from serialine.protocol.schema import Outcome, Reason, Verdict

from test_agent_devices import ScriptedLink, _serial_of, run_unit
from test_readers import wait_for

STOP, CLEAR_ALARM = ("COMMAND", {"command": 2, "arg": 0}), ("COMMAND", {"command": 3, "arg": 0})


def _queued(conn) -> list[str]:
    return [c for (c,) in conn.execute("SELECT code FROM coder_job WHERE state='queued' ORDER BY job_id")]


def _alarms(conn, kind) -> int:
    return conn.execute("SELECT count(*) FROM alarm_log WHERE alarm=?", (kind,)).fetchone()[0]


def _past_retry_pause(agent) -> None:
    """Until the agent's next coder request is due (its pause after a refusal), however loaded the machine."""
    while time.monotonic() <= agent._coder_retry_at:
        time.sleep(0.01)


def _bindings_match(conn) -> bool:
    printed = [_serial_of(c) for (c,) in conn.execute("SELECT code FROM coder_job WHERE state='bound' ORDER BY job_id")]
    return printed == [s for (s,) in conn.execute("SELECT serial FROM unit WHERE serial IS NOT NULL ORDER BY unit_seq")]


def _print(link, sc, u, inspect=True):
    link.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0)
    code = sc.trigger(u * 1000)[0]
    link.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0)
    if inspect:
        link.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)
    return code


def test_a_push_in_doubt_stops_the_line_clears_the_coder_and_refills(conn):
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        link.last_status = {"state": 2, "speed_cps": 5000, "queue_fill": 3}
        agent = Agent(conn, "B1", link, Coder(*sc.address, timeout=0.3), Camera(*scam.address),
                      fill_ahead=5, window_s=0.2)
        agent.start()
        assert run_unit(agent, link, sc, scam, 0) == (Verdict.PASS, Reason.OK)
        sc.reply_delay_s = [1.0]  # the reply to the next PUSH comes after the driver gave up on it
        printed = [_print(link, sc, 1, inspect=False)]
        link.sent.clear()
        agent.step(0)  # stores unit 1's print, tops the coder up: that PUSH is in doubt
        assert agent.resuming and link.sent == [STOP]
        assert _alarms(conn, "CODER_IN_DOUBT") == 1
        assert sc.depth == 5 == len(_queued(conn))  # the coder did queue it (the ledger cannot know)
        assert agent.command("CLEAR_ALARM") is False  # held: no restart before the coder is reset
        link.event("UNIT_INSPECTED", unit_seq=1, pos=0, t_us=0)
        printed.append(_print(link, sc, 2))  # the line prints one more while it stops: a certain job
        agent.step(0)
        assert _bindings_match(conn) and [_serial_of(c) for c in printed] == [s for (s,) in conn.execute(
            "SELECT serial FROM unit WHERE unit_seq IN (1, 2) ORDER BY unit_seq")]
        verdicts = [(f["unit_seq"], f["verdict"], f["reason"]) for n, f in link.sent if n == "VERDICT"]
        assert verdicts == [(1, Verdict.FAIL, Reason.CORRELATION), (2, Verdict.FAIL, Reason.CORRELATION)]
        assert sc.depth == 4  # nothing pushed while the line stops
        for u in (1, 2):
            link.event("UNIT_OUTCOME", unit_seq=u, outcome=int(Outcome.REJECTED_CONFIRMED),
                       reason=int(Reason.CORRELATION), gate_error=0, pos=0, t_us=0)
        link.last_status = {"state": 3, "speed_cps": 0, "queue_fill": 0}  # stopped, still, all acked
        deadline = time.monotonic() + 5
        while agent.resuming and time.monotonic() < deadline:
            agent.step(0)
            time.sleep(0.02)
        assert not agent.resuming and link.sent[-1] == CLEAR_ALARM  # the held restart, only now
        dropped = [s for (s,) in conn.execute("SELECT serial FROM coder_job WHERE state='dropped'")]
        assert len(dropped) == 4 and {st for (st,) in conn.execute(
            f"SELECT state FROM serial WHERE serial IN ({','.join('?' * 4)})", dropped)} == {"allocated"}
        assert list(sc.buffer) == _queued(conn) and sc.depth == 5  # cleared, refilled with fresh jobs
        assert _alarms(conn, "RESUMED") == 1
        assert run_unit(agent, link, sc, scam, 3) == (Verdict.PASS, Reason.OK)
        assert _bindings_match(conn) and list(sc.buffer) == _queued(conn)
        agent.coder.close(); agent.camera.close()


def test_stray_replies_never_shift_a_binding(conn):
    """Each print is followed by an unsolicited `OK <depth>`: the driver reconnects before its next
    request (so no stray reply answers it) and the agent keeps printing the right serials."""
    with SimCoder(stray_reply=1.0) as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address, timeout=0.5), Camera(*scam.address), fill_ahead=4,
                      window_s=0.3)
        agent.start()
        assert [run_unit(agent, link, sc, scam, u) for u in range(6)] == [(Verdict.PASS, Reason.OK)] * 6
        assert sc.faults["stray_reply"] == 6
        assert _bindings_match(conn) and list(sc.buffer) == _queued(conn) and sc.depth == 4
        assert conn.execute("SELECT count(*) FROM alarm_log WHERE source='coder' AND alarm IN "
                            "('UNEXPECTED_REPLY', 'RESYNC')").fetchone()[0] >= 6
        agent.coder.close(); agent.camera.close()


def test_a_refusing_coder_pauses_filling_and_never_crashes_the_agent(conn, monkeypatch):
    """The coder holds 6 jobs, the agent wants 8 ahead: the 7th PUSH gets `ERR full`. The jobs it
    never got are written off (serials stay allocated), filling pauses and is retried one job at a
    time; the coder's buffer stays the ledger's queue and every pack gets the serial printed on it."""
    monkeypatch.setattr(sim_coder, "MAX_DEPTH", 6)  # the emulated coder's buffer size
    monkeypatch.setattr(agent_mod, "CODER_RETRY_S", 0.05)
    monkeypatch.setattr(agent_mod, "CODER_RETRY_MAX_S", 0.1)
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=8, window_s=0.3)
        agent.start()
        assert sc.depth == 6 and list(sc.buffer) == _queued(conn)
        assert conn.execute("SELECT count(*) FROM coder_job WHERE state='dropped'").fetchone()[0] == 2
        (detail,) = conn.execute("SELECT detail FROM alarm_log WHERE alarm='CODER_REFUSED'").fetchone()
        assert "ERR full" in detail and "2 job(s)" in detail
        assert not agent.resuming and STOP not in link.sent  # a definite refusal: nothing in doubt
        for u in range(5):
            assert run_unit(agent, link, sc, scam, u) == (Verdict.PASS, Reason.OK)
            _past_retry_pause(agent)
            agent.step(0)
            wait_for(lambda: list(sc.buffer) == _queued(conn), timeout=10.0)
        assert _bindings_match(conn) and sc.depth == 6
        assert _alarms(conn, "CODER_ACCEPTS") >= 1
        dropped = [s for (s,) in conn.execute("SELECT serial FROM coder_job WHERE state='dropped'")]
        assert {st for (st,) in conn.execute(f"SELECT state FROM serial WHERE serial IN ({','.join('?' * len(dropped))})",
                                             dropped)} == {"allocated"}
        agent.coder.close(); agent.camera.close()


def test_an_unreachable_coder_at_a_new_boot_keeps_the_line_stopped_until_a_clear_is_confirmed(conn, monkeypatch):
    monkeypatch.setattr(agent_mod, "CODER_RETRY_S", 0.05)
    monkeypatch.setattr(agent_mod, "CODER_RETRY_MAX_S", 0.1)
    sc = SimCoder().start()
    host, port = sc.address
    link = ScriptedLink()
    agent = Agent(conn, "B1", link, Coder(host, port, timeout=0.3), None, fill_ahead=3)
    agent.start()
    sc.close()  # the coder goes away; the device reboots
    link.hello = {"device_id": "line1", "boot_id": 43}
    link.last_status = {"state": 1, "speed_cps": 0, "queue_fill": 0}
    agent.step(0)
    assert agent.resuming and STOP in link.sent and _alarms(conn, "CODER_CLEAR_FAILED") == 1
    assert _queued(conn) == []  # what the coder held is written off at the reboot
    for _ in range(3):
        time.sleep(0.12)
        _past_retry_pause(agent)
        agent.step(0)  # retried, still unreachable: no crash, no refill, one alarm per episode
    assert agent.resuming and _queued(conn) == [] and _alarms(conn, "CODER_CLEAR_FAILED") == 1
    with SimCoder(port=port) as back:  # it comes back
        deadline = time.monotonic() + 5
        while agent.resuming and time.monotonic() < deadline:
            time.sleep(0.05)
            agent.step(0)
        assert not agent.resuming and back.depth == 3 and list(back.buffer) == _queued(conn)
    agent.coder.close()


def test_a_pool_that_runs_dry_gives_the_coder_what_is_left_and_never_crashes_the_agent(tmp_path):
    from serialine.host import db, masterdata, serials
    from hostkit import GTIN, PREFIX_LEN
    conn = db.connect(str(tmp_path / "small.db"))
    masterdata.add_product(conn, GTIN, "Aspirin 100 mg", "EU_FMD", PREFIX_LEN)
    serials.generate(conn, GTIN, 6)
    masterdata.create_batch(conn, "B1", GTIN, "L1", "2030-01-31", 6, 3, 2)
    masterdata.start_batch(conn, "B1")
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=8, window_s=0.3)
        agent.start()
        assert sc.depth == 6 and _alarms(conn, "SERIALS_EXHAUSTED") == 1  # 8 wanted, the 6 left queued
        results = [run_unit(agent, link, sc, scam, u) for u in range(6)]
        assert results == [(Verdict.PASS, Reason.OK)] * 6
        assert sc.depth == 0 and _queued(conn) == [] and _bindings_match(conn)
        assert _alarms(conn, "SERIALS_EXHAUSTED") == 1
        link.event("UNIT_DETECTED", unit_seq=6, pos=0, t_us=0, flags=0)
        assert sc.trigger(6000) is None  # the coder has nothing: the pack gets no code
        link.event("UNIT_PRINTED", unit_seq=6, pos=0, t_us=0)
        agent.step(0)
        assert _alarms(conn, "CODER_EMPTY") == 1
    conn.close()


def test_a_busy_ledger_at_a_top_up_only_delays_the_top_up(conn):
    """Another writer holds the ledger's lock when the coder is to be topped up (after the poll's
    events were committed and acked): no job is made, nothing is pushed, nothing raised; the next
    step tops up once the lock is free, and the coder's buffer is the ledger's queue."""
    import sqlite3
    path = next(f for _, name, f in conn.execute("PRAGMA database_list") if name == "main")
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=4, window_s=0.3)
        agent.start()
        assert run_unit(agent, link, sc, scam, 0) == (Verdict.PASS, Reason.OK)
        _print(link, sc, 1, inspect=False)
        agent.step(0)
        sc.trigger(2000)  # printed; the device's event is not in yet
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        link.event("UNIT_DETECTED", unit_seq=2, pos=0, t_us=0, flags=0)
        link.event("UNIT_PRINTED", unit_seq=2, pos=0, t_us=0)
        assert agent.step(0) == 0  # the poll waits too (unacknowledged), nothing raised
        agent.fill_ahead = 5  # one more job wanted now
        assert agent.fill_coder() == 0 and sc.depth == 3 and list(sc.buffer) == _queued(conn)[1:]
        assert agent.ledger.queued_depth() == 4  # the rolled-back jobs are not in the mirror
        other.execute("ROLLBACK")
        other.close()
        time.sleep(0.1)  # past the backoff
        _past_retry_pause(agent)
        agent.step(0)
        assert sc.depth == 5 and list(sc.buffer) == _queued(conn) and _bindings_match(conn)
        assert conn.execute("SELECT count(*) FROM alarm_log WHERE alarm='LEDGER_BUSY'").fetchone()[0] >= 1
        agent.coder.close(); agent.camera.close()


def test_a_stray_refusal_taken_as_a_push_reply_is_caught_by_the_coders_depth(conn, monkeypatch):
    """A stray `ERR full` arrives while a PUSH waits (the one case order cannot tell apart,
    docs/devices.md): the job is written off though the coder queued it, so the coder holds one job
    the ledger does not. The next push's depth says so (more jobs than the ledger queued): the agent
    stops the line, clears the coder and refills; no pack ever passes with a serial not printed on it."""
    monkeypatch.setattr(agent_mod, "CODER_RETRY_S", 0.05)
    monkeypatch.setattr(agent_mod, "CODER_RETRY_MAX_S", 0.1)

    class StrayBeforeReply(SimCoder):
        pushes = 0

        def handle(self, line):
            if line.startswith("PUSH"):
                self.pushes += 1
                if self.pushes == 6:
                    self.send("ERR full")  # the stray, just before the real "OK 4"
            return super().handle(line)

    with StrayBeforeReply() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        link.last_status = {"state": 2, "speed_cps": 5000, "queue_fill": 3}
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=4, window_s=0.2)
        agent.start()
        assert [run_unit(agent, link, sc, scam, u) for u in (0, 1)] == [(Verdict.PASS, Reason.OK)] * 2
        assert _alarms(conn, "CODER_REFUSED") == 1 and sc.depth == 4 and len(_queued(conn)) == 3
        _past_retry_pause(agent)
        agent.step(0)  # the probe push: the coder says 5, the ledger queued 4
        assert _alarms(conn, "CODER_IN_DOUBT") == 1 and agent.resuming and STOP in link.sent
        results = [run_unit(agent, link, sc, scam, u) for u in range(2, 7)]  # the line coasting to a stop
        assert all(v == Verdict.FAIL for v, _ in results)
        # unit 5 got the job the ledger wrote off: the coder's own report names it (print cross-check);
        # CORRELATION if that report came in only after the unit's blind verdict
        assert [r for _, r in results[:3] + results[4:]] == [Reason.CORRELATION] * 4
        assert results[3][1] in (Reason.CODE_MISMATCH, Reason.CORRELATION)
        deadline = time.monotonic() + 5  # the coder's report of unit 5 may come in after its verdict
        while not _alarms(conn, "PRINT_MISMATCH") and time.monotonic() < deadline:
            agent.step(0)
            time.sleep(0.02)
        assert agent.resuming  # still held: the belt has not been reported still
        (mismatch,) = [d for (d,) in conn.execute("SELECT detail FROM alarm_log WHERE alarm='PRINT_MISMATCH'")]
        assert "unit line1:42:5:" in mismatch
        link.last_status = {"state": 3, "speed_cps": 0, "queue_fill": 0}
        deadline = time.monotonic() + 5
        while agent.resuming and time.monotonic() < deadline:
            agent.step(0)
            time.sleep(0.02)
        assert not agent.resuming and list(sc.buffer) == _queued(conn) and sc.depth == 4
        assert [run_unit(agent, link, sc, scam, u) for u in range(7, 10)] == [(Verdict.PASS, Reason.OK)] * 3
        passed_wrong = conn.execute(
            "SELECT count(*) FROM unit u JOIN coder_job j USING (gtin, serial) WHERE u.outcome='PASSED'"
            " AND u.read_serial IS NOT u.serial").fetchone()[0]
        assert passed_wrong == 0
        agent.coder.close(); agent.camera.close()
