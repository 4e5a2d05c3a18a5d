"""The orchestrator: one simulated batch, end to end.

    line model ──encoder, photo-eye, confirm, bin──▶ firmware (MicroPython unix port, boards/sim)
        ▲  ◀────────── coder/camera triggers, gate ──────┘        │ pty ─ FaultyRelay ─ pty
        │                                                          ▼
    SimCoder / SimCamera  ◀──── loopback TCP ────▶  serialine agent run ──▶ SQLite, EPCIS

Virtual time: the simulator owns the clock and jumps from one physical event to the next (the line's
edges, a camera result due, the firmware's next position or timer from `Core.next_due`), scanning
there only. The host's answer to each camera result lands at the device a fixed virtual time later
(`_host_reaction_us`: within its decision budget); the device holds host messages until then and
the clock holds there until the answer has come (a barrier), so the outcome never depends on how
fast this machine is, unless a fault makes the host absent (killed, link dark). A result goes to the
host once the device's events before it are stored (a host ACK on the wire names the device's event
mark, boards/sim `K`): held meanwhile while virtual time runs on, so the host stores, pairs and
answers several packs per wake while the line moves. Real time: the same loop on the wall clock, to
measure latency and jitter."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import signal
import sqlite3
import time
from pathlib import Path

from .. import lockfile
from . import batch, parts, rtsched
from . import ledger as ledger_mod
from .camera import imager_for
from .emulators import emulator
from .errors import Interrupted, RunError
from .faults import FaultPlan, FaultyRelay
from .line import LineModel
from .report import build
from .scenario import Scenario, full_speed_cps, host_budget_counts, validate
from .wiretap import VerdictTap

BIN_EMPTY_MS = 1000  # the operator empties a full reject bin this long after the line stopped
MAX_STEP_US = 250  # the longest virtual step while the belt's speed changes (as often as a board scans)
REALTIME_MIN_TICK_S = 0.0002  # real time: the shortest sleep between two scans
BARRIER_TIMEOUT_S = 2.0  # a host that has not answered in this much wall time is absent
HOST_REACTION_MAX_MS = 250.0  # virtual time: the host's answer to a camera result lands this late at most
# virtual time holds while the device holds this many events unacknowledged: its ring has 32 slots
# (firmware/link.py) and a full one stops the line (BUFFER_OVERFLOW) at a time the host's speed set
QUEUE_HOLD = 24


LOCK_NAME = ".serialine-sim.lock"


HOST_RESTART_MS = 300  # virtual time the host stays away after a kill -9 before it is back
TERM_WAIT_S = 20.0  # wall time a SIGTERMed service gets to leave in order before SIGKILL
CODER_HOLD_S = 0.5  # wall time virtual time holds at a coder trigger for the host to load its job


def _wait_for(ready, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > end:
            return False
        time.sleep(0.0005)
    return True


def run(scenario: Scenario, *, out: Path, realtime: bool = False, console=None,
        stall: tuple[int, float] | None = None, batch_id: str | None = None, db: Path | None = None,
        opcua: tuple[str, str] | None = None, fixed_step_us: int | None = None) -> dict:
    """One batch end to end → the report (report.build). `stall` = (pack, ms): the simulator
    itself stalls that long just before that pack reaches the gate's firing point — to prove that it
    notices its own overrun, and what the device then does with the pack it could not aim at.
    `batch_id`: run that batch (created and started by the user) instead of making one; `db`: the
    ledger it is in (default OUT/serialine.db); `opcua`: (endpoint, users file) → the agent's [opcua].
    `fixed_step_us`: virtual time in steps of at most that many µs, as before it jumped from event
    to event (to compare the two)."""
    validate(scenario, scenario.name)  # before anything is created
    out = Path(out).resolve()  # the device and the agent run in other working directories
    db_path = Path(db).resolve() if db is not None else out / "serialine.db"
    if batch_id is not None:
        batch.use(db_path, batch_id, scenario)  # refused in one line before anything is created
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / LOCK_NAME).touch()
    except OSError as exc:
        raise RunError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    where: dict = {}  # how far the run got, for an interrupt
    with _locked(out):
        try:
            return _run(scenario, out, db_path, batch_id, realtime, console, where, stall, opcua, fixed_step_us)
        except KeyboardInterrupt:
            _sigint(signal.SIG_IGN)  # a second Ctrl-C must not cut the abort short
            try:
                raise Interrupted(_abort(db_path, scenario, where)) from None
            finally:
                _sigint(signal.default_int_handler)


def _sigint(handler) -> None:
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: its caller handles signals
        pass


@contextlib.contextmanager
def _locked(out: Path):
    """One run per --out: its ledger gets one agent. An advisory lock (fcntl) on a file there,
    released by the kernel however the run ends."""
    try:
        f = lockfile.hold(str(out / LOCK_NAME), str(os.getpid()))
    except lockfile.Held as held:
        raise RunError(f"{out} is in use by another run (pid {held.holder or '?'}); one run, one agent per ledger") from None
    try:
        yield
    finally:
        f.close()


def _abort(db_path: Path, s: Scenario, where: dict) -> str:
    """After Ctrl-C: the line is stopped and the parts are down; the batch is aborted with a
    reason, or left running (resumable) if it cannot be. → the one line to say."""
    at = f"interrupted at pack {where.get('detected', 0)} of {s.units}"
    batch_id = where.get("batch_id")
    if batch_id is None:
        return f"{at}: no batch was started"
    from serialine.host import db as hostdb
    from serialine.host import lifecycle

    conn = hostdb.connect(str(db_path))
    try:
        counts = lifecycle.abort(conn, batch_id, "serialine-sim", f"serialine sim {at} (SIGINT)")
    except (ValueError, sqlite3.Error) as exc:  # refused (LifecycleError) or the ledger said no
        return f"{at}: line stopped; batch {batch_id} left running, resumable ({exc})"
    finally:
        conn.close()
    return (f"{at}: line stopped, batch {batch_id} aborted "
            f"({counts.get('units_rejected', 0)} unit(s) in flight rejected)")


def _run(s: Scenario, out: Path, db_path: Path, batch_id, realtime: bool, console, where: dict, stall,
         opcua=None, fixed_step_us=None) -> dict:
    epcis_dir = out / "epcis"
    batch_id = where["batch_id"] = batch_id or batch.setup(db_path, s)
    # real time: the parts that stand for hardware on SCHED_FIFO until they are down (rtsched.py)
    sched = rtsched.FifoParts(realtime).__enter__()
    images = imager_for(s, s.seed * 7 + 2, priority=sched.priority(rtsched.CAMERA))  # the coder prints images, the camera decodes and grades them
    coder = emulator("coder", s.coder.driver)(misprint=s.defects.misprint, skip=s.defects.skip,
                                              smear=s.defects.smear, seed=s.seed * 7 + 1, images=images).start()
    camera = emulator("reader", s.camera.driver)(latency_ms=s.camera.latency_ms, jitter_ms=s.camera.latency_jitter_ms,
                                                 no_read=s.camera.no_read, misread=s.camera.misread,
                                                 low_grade=s.camera.low_grade, missed_trigger=s.camera.missed_trigger,
                                                 seed=s.seed * 7 + 2, images=images).start()
    relay = FaultyRelay(corrupt=s.faults.link_corrupt, loss=s.faults.link_loss, seed=s.seed * 7 + 3)
    tap = VerdictTap()
    relay.taps["to_device"] = tap
    relay.start()
    line = LineModel(s, coder=coder, camera=camera)
    plan = FaultPlan(s.faults)
    device = host = None
    virtual_s = 0.0
    wall0 = time.monotonic()
    stats = {"barrier_waits": 0, "barrier_timeouts": 0, "host_restarts": 0, "host_terms": 0, "device_reboots": 0,
             "camera_drops": 0, "operator_clears": 0, "coder_waits": 0, "coder_wait_timeouts": 0, "steps": 0,
             "catch_up_waits": 0, "catch_up_holds": 0, "queue_holds": 0, "queue_fill_max": 0}
    ticks = Ticks(s, stall)
    printed: list[str] = []
    try:
        device = parts.SimDevice(relay.device_path, line, s, realtime=realtime, workdir=out / "device",
                                 priority=sched.priority(rtsched.DEVICE))
        host = parts.HostAgent(s, out, db_path, batch_id, relay.host_path, coder.address, camera.address,
                               coder_driver=s.coder.driver, camera_driver=s.camera.driver, opcua=opcua,
                               priority=sched.priority(rtsched.AGENT))
        device.start()
        host.start()
        host.wait_ready(device)
        _until_running(device)
        loop_wall, loop_cpu = time.monotonic(), time.process_time()
        try:
            _loop(s, line, device, host, camera, relay, tap, plan, stats, realtime, console, ticks, fixed_step_us)
        except KeyboardInterrupt:
            where["detected"] = sum(1 for p in line.packs if p.detected_t is not None)
            _stop_line(line, device, host)
            raise
        # the line's run, without setup and drain: simulated seconds per wall (and simulator CPU) second
        loop_wall, loop_cpu = time.monotonic() - loop_wall, time.process_time() - loop_cpu
        stats["loop_wall_s"], stats["loop_cpu_s"] = round(loop_wall, 3), round(loop_cpu, 3)
        stats["virtual_speedup"] = round(line.t / 1e6 / loop_wall, 2) if loop_wall > 0 else 0.0
        virtual_s = line.t / 1e6  # the drain after it waits on the host's wall clock
        line.unprinted()
        _drain(line, device, db_path, batch_id)
        host.stop(device)
        stats["operator_refused"] = len(host.refusals)  # clears the service refused (said why in its log)
        printed = [p.printed for p in line.packs if p.printed]
    finally:
        for part in (device, host):
            if part is not None:
                part.close()
        relay.close()
        coder.close()
        camera.close()
        if images is not None:
            images.close()
        sched.__exit__(None, None, None)
    ids = device.boot_ids
    keyed = [(p, (device.device_id, ids[p.unit_key[0]], p.unit_key[1])) for p in line.packs
             if p.unit_key and p.unit_key[0] < len(ids)]
    # a person's decision, simulated: each unknown outcome settled from where its pack is
    stats["operator_resolutions"] = batch.resolve_unknown(db_path, batch_id, {k for p, k in keyed if p.in_bin},
                                                          {k for p, k in keyed if not p.in_bin})
    ok, problems = batch.close(db_path, batch_id, epcis_dir)
    latency = {}
    for p in line.packs:
        seen = tap.first_seen.get(p.unit_key) if p.unit_key else None
        sent = camera.delivered_wall.get(p.camera_n)
        if seen is not None and sent is not None:
            latency[p.unit_key] = round((seen - sent) * 1000, 3)
    ledger = ledger_mod.read(db_path, batch_id, printed_codes=printed, epcis_dir=epcis_dir,
                             reconciliation_ok=ok, verdict_latency=latency,
                             unit_keys=[p.unit_key for p in line.packs], device_id=device.device_id,
                             boot_ids=device.boot_ids)
    wall = time.monotonic() - wall0
    extra = {"link": {k: vars(v) for k, v in relay.stats.items()}, "run": stats,
             "coder_faults": dict(coder.faults), "camera_faults": dict(camera.faults),
             "triggers_without_pack": line.triggers_without_pack, "reconciliation_problems": problems,
             "epcis_errors": ledger.epcis_errors[:5], "db": str(db_path), "epcis_dir": str(epcis_dir),
             "ticks": ticks.summary(), "invalid": ticks.invalid(), "sched": sched.policy,
             "images": images.stats() if images is not None else None}
    return build(s, line, ledger, mode="realtime" if realtime else "virtual",
                 virtual_s=virtual_s, wall_s=wall, extra=extra)


def _stop_line(line, device, host, settle_s: float = 0.5):
    """The operator's stop: the drive stops, the device latches its stop (through the agent), the
    agent stores what the device has sent and leaves."""
    _sigint(signal.SIG_IGN)
    line.line_stop = True
    try:
        if host.present:
            host.operator("STOP", "serialine sim interrupted (SIGINT)")
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            device.idle()
            time.sleep(0.002)
        host.stop(device)
    except (RunError, OSError):
        pass  # a part already gone: the batch is aborted all the same


def _until_running(device, timeout: float = 20.0):
    """Scan (the line standing still) until the host has configured and started the device."""
    end = time.monotonic() + timeout
    while not device.running:
        if time.monotonic() > end:
            raise RunError(f"the device did not start within {timeout:g} s (state {device.state})")
        device.idle()
        time.sleep(0.001)


def _drain(line, device, db_path, batch_id, timeout: float = 20.0, quiet_s: float = 5.0):
    """After the last pack: keep the device running until the ledger holds an outcome for every
    unit it detected (the device keeps its events until they are stored), or nothing more comes
    for `quiet_s` (a unit whose events were lost never gets a row: the report counts it)."""
    want = sum(1 for p in line.packs if p.detected_t is not None)
    end = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        while time.monotonic() < end:
            (n,) = conn.execute("SELECT COUNT(*) FROM unit_row WHERE batch_id = ? AND outcome IS NOT NULL",
                                (batch_id,)).fetchone()
            if n >= want:
                return
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > quiet_s:
                return
            t = line.t + 1000
            for name, level, te in device.step(t, line.encoder, line.advance(t)):
                line.output(name, level, te)
            time.sleep(0.002)
    finally:
        conn.close()


class Ticks:
    """The simulator's own timing. Between two scans the device sees nothing: if the belt travels
    further than half the gate window in one tick while a pack is at the gate, the paddle acts
    where the simulator's lateness put it — the physics of the run are no longer the line's, and
    the run is invalid (a loaded machine in real time; never in virtual time, whose ticks are short
    by design). Late ticks with no pack at the gate are counted, harmless."""

    def __init__(self, s: Scenario, stall):
        self.bound = s.line.gate_window_mm / 2 * s.line.counts_per_mm  # counts
        self.stall = stall  # (pack, ms) or None
        self.n = self.late = self.overruns = 0
        self.worst_counts = self.worst_us = 0.0

    def _strike_at(self, line, v: float) -> float:
        """The offset of the stall's pack at which the stall begins: where the gate fires for it (the
        device leads the gate by its lead time at the speed it measures), less 4 counts, less one
        tick's largest travel that is no overrun itself (the bound): a real-time tick travels ~bound/4
        and more when late, and the check runs between ticks, so nearer than that a tick could carry
        the pack past the firing point unseen: the gate fires, the pack is taken, the stall is late."""
        return line.gate_at - v * line.lead_us / 1e6 - 4 - self.bound

    def stall_us(self, line) -> int:
        """Once, as the stall's pack reaches `_strike_at`: how long (µs)."""
        if self.stall is None:
            return 0
        if line.offset(line.packs[self.stall[0]]) < self._strike_at(line, line.speed()):
            return 0
        ms, self.stall = self.stall[1], None
        return int(ms * 1000)

    def stall_due_us(self, line) -> int | None:
        """When the stall strikes at the present speed (virtual time must not jump past it)."""
        v = line.speed()
        if self.stall is None or v <= 0:
            return None
        return line.t + max(0, math.ceil((line.packs[self.stall[0]].belt_at + self._strike_at(line, v) - line.belt)
                                         / v * 1e6))

    def tick(self, dt_us: int, travel: float, line) -> None:
        self.n += 1
        if travel <= self.bound:
            return
        self.late += 1
        if line.near_gate(travel):
            self.overruns += 1
            if travel > self.worst_counts:
                self.worst_counts, self.worst_us = travel, dt_us

    def summary(self) -> dict:
        return {"ticks": self.n, "late": self.late, "overruns": self.overruns, "bound_counts": self.bound,
                "worst_travel_counts": round(self.worst_counts, 1), "worst_tick_ms": round(self.worst_us / 1000, 2)}

    def invalid(self) -> str | None:
        if not self.overruns:
            return None
        return (f"the simulator fell behind the line: {self.overruns} tick(s) let the belt travel more than "
                f"half the gate window ({self.bound:g} counts) between two device scans with a pack at the gate, worst "
                f"{self.worst_counts:.0f} counts in {self.worst_us / 1000:.1f} ms; gate and confirm timing "
                f"in this run are the simulator's, not the line's")


def _loop(s, line, device, host, camera, relay, tap, plan, stats, realtime, console, ticks, fixed_step_us=None):
    progress = _progress(console, s.units)
    t0 = time.monotonic()
    # real time: a scan each quarter of the travel a tick may take near the gate, no more often:
    # scans the line does not need cost the firmware and the agent CPU on a shared machine
    rt_period = max(REALTIME_MIN_TICK_S, ticks.bound / 4 / max(1.0, full_speed_cps(s)))
    detected = 0
    boot_no, boot_base = 0, 0
    dark = _Outage(relay)
    host_back_at = None
    term_until = None  # a SIGTERMed service is leaving (in wall time, at most until then)
    bin_empty_at = None
    wall_limit = time.monotonic() + 120 + s.units * 0.5
    owed, n_seen = 0, 0  # units the host owes a verdict this boot; camera results sent
    pending: collections.deque = collections.deque()  # (virtual µs, owed): host answers to land
    gates: collections.deque = collections.deque()  # (virtual µs due, device event mark): results held
    released, react_us = -1, _host_reaction_us(s)  # verdicts the device may apply (-1: all)
    wall_was = time.monotonic()
    paced, steady, dev_due = False, False, 0
    coder = line.coder
    # a coder trigger holds virtual time until the coder has a job to print (a Videojet-like driver:
    # until the host has loaded the next, after counting the last print)
    coder_ready = (lambda: coder.loaded) if hasattr(coder, "loaded") else (lambda: coder.depth > 0)

    def send(at: int) -> None:
        """The camera's results due by `at` to the host; their answer lands react_us after `at`."""
        nonlocal owed, n_seen
        base = max(owed, tap.count())  # before sending: a quick answer must count
        camera.deliver(at)
        sent, n_seen = len(camera.delivered) - n_seen, len(camera.delivered)
        if sent and host.present and not relay.dark and not line.line_stop:
            owed = base + sent  # verdicts the host sent unasked (blind FAILs) do not count
            pending.append((at + react_us, owed))

    def send_held() -> None:
        """Every held result to the host now, each once the events before it are stored (virtual
        time holds here): before a fault strikes, as when each was due."""
        while gates:
            if (host.present and not relay.dark and not line.line_stop
                    and not (tap.wait_stored(gates[0][1], BARRIER_TIMEOUT_S)
                             or _await_stored(device, tap, released, BARRIER_TIMEOUT_S))):
                stats["barrier_timeouts"] += 1
            send(gates.popleft()[0])

    def await_host(want: int) -> bool:
        """_await_host, sending each held result meanwhile as soon as it may go: a verdict the host
        sent unasked (a blind FAIL) may make it owe the answer to one of them."""
        end = time.monotonic() + BARRIER_TIMEOUT_S
        seen = tap.frames
        while gates and tap.count() < want:
            if tap.stored(gates[0][1]):
                send(gates.popleft()[0])
                continue
            if time.monotonic() > end:
                return False
            seen = tap.wait_frames(seen, end - time.monotonic())
        return _await_host(device, tap, want, max(0.0, end - time.monotonic()))

    def emit(outputs):
        for name, level, te in outputs:
            if name == "coder" and not realtime and host.present and not relay.dark and not coder_ready():
                stats["coder_waits"] += 1
                if not _wait_for(coder_ready, CODER_HOLD_S):
                    stats["coder_wait_timeouts"] += 1
            line.output(name, level, te)

    try:
        while not line.done:
            if time.monotonic() > wall_limit:
                raise RunError(f"the line did not finish: {detected} of {s.units} packs detected, "
                               f"line {'stopped' if line.line_stop else 'running'}")
            if term_until is not None and (not host.running or time.monotonic() > term_until):
                host.stop(device)  # gone already, or SIGKILLed now: what it stored is what counts
                host.start()
                term_until, host_back_at = None, line.t + HOST_RESTART_MS * 1000
            stall = ticks.stall_us(line)
            if realtime:
                if stall:
                    time.sleep(stall / 1e6)
                t = max(line.t + 1, int((time.monotonic() - t0) * 1e6))
            elif stall:
                t = line.t + stall
            else:
                # the next physical event: the line's, the firmware's (core.next_due), the camera's,
                # the simulator's own (operator, host restart, end of an outage)
                dev_due = device.next_due_us()
                t = min(line.next_event_us(), dev_due,
                        *(x for x in (camera.next_due(gates[-1][0] if gates else None), bin_empty_at,
                                      host_back_at, dark.until, ticks.stall_due_us(line),
                                      pending[0][0] if pending else None,
                                      gates[0][0] + react_us if gates else None)
                          if x is not None))
                steady = line.steady_us() > 0 and not fixed_step_us
                if not steady:  # speed changing: scan as often as a board would
                    t = min(t, line.t + (fixed_step_us or MAX_STEP_US))
                paced = relay.dark or line.line_stop
                if paced:
                    # a dark link or a latched stop waits on the link's timeouts, the host and the
                    # operator, who all keep the wall clock: virtual time keeps it meanwhile
                    time.sleep(0.0005)
                    t = min(t, line.t + max(MAX_STEP_US, int((time.monotonic() - wall_was) * 1e6)))
                t = max(line.t + 1, t)
                # a step whose scan fires the coder waits first for its job: the device tells the host
                # of the print at once, and a host asking the coder's counts before the trigger has
                # reached it would find nothing printed
                if host.present and not relay.dark and not coder_ready() and line.reaches(line.coder_at - 2, t):
                    stats["coder_waits"] += 1
                    if not _wait_for(coder_ready, CODER_HOLD_S):
                        stats["coder_wait_timeouts"] += 1
                wall_was = time.monotonic()
                stats["steps"] += 1
            t_was, belt_was = line.t, line.belt
            edges = line.advance(t)
            if realtime or stall:  # virtual time scans at every event: its long ticks are no overruns
                ticks.tick(line.t - t_was, line.belt - belt_was, line)
            seen = 0  # edges the device has been given
            for k, e in enumerate(edges):
                # unit-numbered faults strike in the gap before pack N (after pack N-1 has left
                # the photo-eye), so no pack is half-seen by a rebooting device
                faults = plan.due(detected) if e.name == "photo_eye" and not e.level else []
                if faults:  # the device sees the world up to this edge before the fault strikes
                    at = device.pos_at(e.t_us, line.t, line.encoder)
                    emit(device.step(e.t_us, at, edges[seen:k + 1], released))
                    seen = k + 1
                if faults:
                    send_held()
                for kind, arg in faults:
                    fired_at, fired_t = time.monotonic(), line.t
                    _fire(kind, arg, line, device, host, camera, relay, tap, stats, dark)
                    if realtime:  # the line's clock pauses while a reboot is staged, rather than
                        # jump the belt through it (time an outage ran on meanwhile excepted)
                        t0 += time.monotonic() - fired_at - (line.t - fired_t) / 1e6
                    if kind == "host_kill":
                        host_back_at = line.t + HOST_RESTART_MS * 1000
                    if kind == "host_term":
                        term_until = time.monotonic() + TERM_WAIT_S
                    if kind == "device_reboot":
                        owed, boot_no, boot_base, released = 0, boot_no + 1, detected, -1
                        pending.clear()
                if e.name == "photo_eye" and e.level:
                    line.packs[detected].unit_key = (boot_no, detected - boot_base)
                    detected += 1
                    progress(detected)
            if realtime or paced or not steady or edges[seen:] or line.t >= dev_due:  # else the camera's turn
                emit(device.step(line.t, line.encoder, edges[seen:], released))
            if realtime:
                camera.deliver(line.t)
            else:
                # a result reaches the host no sooner than the device's events before it are stored
                # (the host pairs them by its own arrival times, within a window of wall time): held
                # (a gate) until an ACK on the wire names the device's event mark of the scan it came
                # due at, while virtual time runs on; it holds at its answer's time if the ACK has
                # not come by then. Not while the host is away, the link dark or the line latched
                # stopped: then at once.
                gating = host.present and not relay.dark and not line.line_stop
                while gates and (not gating or tap.stored(gates[0][1])):
                    send(gates.popleft()[0])
                due = camera.next_due(gates[-1][0] if gates else None)
                if due is not None and due <= line.t:
                    if not gating:
                        send(line.t)
                    elif not gates and tap.stored(device.status.event_mark):
                        send(line.t)
                    else:
                        stats["catch_up_waits"] += 1
                        gates.append((line.t, device.status.event_mark))
                fill = device.status.queue_fill
                stats["queue_fill_max"] = max(stats["queue_fill_max"], fill)
                if fill >= QUEUE_HOLD and gating:
                    stats["queue_holds"] += 1
                    if not _await_stored(device, tap, released, BARRIER_TIMEOUT_S):
                        stats["barrier_timeouts"] += 1
                if gates and line.t >= gates[0][0] + react_us:
                    stats["catch_up_holds"] += 1
                    send_held()
                # barrier: the host's answer to each camera result it was sent lands at the device
                # react_us of virtual time later, exactly: a verdict for one more unit (each result
                # pairs with one) and what the host sent before it (a line stop). The device holds
                # host messages until then (boards/sim simmain `release`); virtual time holds there
                # until the answer has come, while the host works meanwhile. Not while the host is
                # away, the link dark, or the line latched stopped (results are then discarded and
                # the host answers on its own clock).
                if not host.present or relay.dark:
                    pending.clear()
                while pending and line.t >= pending[0][0]:
                    _, want = pending.popleft()
                    stats["barrier_waits"] += 1
                    if await_host(want):
                        released = want
                    else:
                        stats["barrier_timeouts"] += 1
                        owed, released = tap.count(), -1
                        pending.clear()
                if not pending:
                    released = -1
            # the operator: a line the device stopped (bin full, unconfirmed reject, ...) gets the
            # bin emptied if full and the alarm cleared, a second later
            if line.line_stop and bin_empty_at is None:
                bin_empty_at = line.t + BIN_EMPTY_MS * 1000
            if bin_empty_at is not None and line.t >= bin_empty_at:
                why = "line stop seen to, line clear"
                if line.bin_full:
                    line.empty_bin()
                    why = "reject bin emptied"
                stats["operator_clears"] += 1
                host.operator("CLEAR_ALARM", f"simulated operator: {why}")
                bin_empty_at = None
            dark.check(line.t)
            if host_back_at is not None:
                if realtime and host.poll_ready():
                    host_back_at = None
                elif not realtime and line.t >= host_back_at and not relay.dark:
                    # virtual time holds here: the restart takes what it takes (an agent cannot
                    # connect through a dark link: the outage runs its course first)
                    host.wait_ready(device)
                    host_back_at = None
                    owed = tap.count()
            host.check()
            if realtime:
                time.sleep(max(REALTIME_MIN_TICK_S, t0 + line.t / 1e6 + rt_period - time.monotonic()))
        send_held()
    finally:
        progress(None)


def _host_reaction_us(s: Scenario) -> int:
    """When the host's answer to a camera result lands (virtual µs after the result): late in what
    its decision budget leaves after the camera's slowest result (a tenth kept for the scan's own
    lateness and pitch spread), at most HOST_REACTION_MAX_MS. Late, so the host works meanwhile."""
    budget_us = host_budget_counts(s) / max(1.0, full_speed_cps(s)) * 1e6
    slowest_us = (s.camera.latency_ms + s.camera.latency_jitter_ms) * 1000
    return int(max(1000.0, min(HOST_REACTION_MAX_MS * 1000.0, (budget_us - slowest_us) * 0.9)))


def _await_stored(device, tap, upto: int, timeout: float) -> bool:
    """Until the host has acknowledged (stored) every event the device has sent, as the device
    says after a scan at the same virtual time; a scan again each time an ACK goes by."""
    end = time.monotonic() + timeout
    acks = tap.acks
    while device.status.queue_fill:
        if time.monotonic() > end:
            return False
        acks = tap.wait_ack(acks, 0.005)
        device.idle(upto)
    return True


def _await_host(device, tap, owed: int, timeout: float) -> bool:
    """Until verdicts for `owed` units (this boot) have gone by on the wire and the device has
    applied them, and what came before them, as it says after a scan at the same virtual time."""
    end = time.monotonic() + timeout
    if not tap.wait_for(owed, timeout):
        return False
    while True:
        device.idle(owed)
        if device.status.verdicts_in >= owed:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.0002)  # on the wire: in the device's tty in a moment


class _Outage:
    """The link's outages: dark from the unit that starts one until its duration has passed on the
    line's clock (overlapping outages: until the last ends)."""

    def __init__(self, relay):
        self.relay, self.until = relay, None

    def start(self, now_us: int, ms: float) -> None:
        self.relay.dark = True
        self.until = max(self.until or 0, now_us + int(ms * 1000))

    def check(self, now_us: int) -> None:
        if self.until is not None and now_us >= self.until:
            self.relay.dark, self.until = False, None


def _wait_running(device, line, dark, timeout: float = 30.0):
    """After a power cycle: scan (the line standing still) until the host has configured and
    started the device again. Virtual time holds, except while the link is dark: an outage must
    run its course (on the line's clock, at wall speed, the belt still) or no host can reach the
    device — the simulator waiting for the device would wait for ever."""
    end = time.monotonic() + timeout
    last = time.monotonic()
    while not device.running:
        now = time.monotonic()
        if now > end:
            raise RunError(f"the device did not start within {timeout:g} s after its reboot "
                           f"(state {device.state}, link {'dark' if dark.relay.dark else 'up'})")
        if dark.relay.dark:
            t = line.t + max(1, int((now - last) * 1e6))
            edges = line.advance(t)
            for name, level, te in device.step(line.t, line.encoder, edges):
                line.output(name, level, te)
            dark.check(line.t)
        else:
            device.idle()
        last = now
        time.sleep(0.001)


def _fire(kind, arg, line, device, host, camera, relay, tap, stats, dark):
    if kind == "outage":
        dark.start(line.t, arg)
    elif kind == "device_reboot":
        # a power cycle drops the line's run permissive: the drive stops at once, and runs again
        # only when the host has the device configured and started
        stats["device_reboots"] += 1
        line.boot_ends.append(line.belt)
        line.line_stop, line.run_factor = True, 0.0
        tap.reset()
        device.reboot()
        _wait_running(device, line, dark)
        line.line_stop = False
    elif kind == "host_kill":
        stats["host_restarts"] += 1
        host.kill()
        host.start()  # it comes back on the same ledger; the loop waits for READY later
    elif kind == "host_term":
        # the service stops the line and settles the units in flight while the line runs on;
        # the loop starts it again once it has left
        stats["host_terms"] += 1
        host.terminate()
    elif kind == "camera_drop":
        stats["camera_drops"] += 1
        camera.drop()  # the service sees the reader gone: line stop, reconnect, operator's clear


def _progress(console, total):
    """A rich progress bar (or nothing when quiet); call with the count, None to finish."""
    if console is None or console.quiet:
        return lambda n: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console, transient=True)
    task = bar.add_task("packs", total=total)
    bar.start()

    def update(n):
        if n is None:
            bar.stop()
        else:
            bar.update(task, completed=n)

    return update
