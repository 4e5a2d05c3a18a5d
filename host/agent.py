"""The host agent: device events → durable store → ack → verdicts, with the coder kept filled
ahead and camera results correlated to inspected units.

One loop step: poll the link; in ONE transaction store every event (idempotently), pair camera
results with inspected units, record the verdicts and allocate the coder's top-up jobs; commit (one
fsync a step); only then ack the device, send the verdicts and push the jobs (serials committed
before they are pushed, so a crash can never make a code the ledger does not know about). The
coder is kept `fill_ahead` jobs deep, deeper at speed: enough for `fill_cover_s` of printing at
the rate the device's own clock measures (UNIT_PRINTED t_us), up to `fill_max`, so a ledger held
by another writer for a few seconds (a checkpoint, another batch's close) does not run it dry.

Which code is on which pack: the coder prints its queue in order, so each UNIT_PRINTED takes the
oldest job still queued; the coder is topped up by its own buffer (prints the device has not
reported yet, e.g. over a link outage, stay queued until it does). That holds only while the
ledger's queue and the coder's are the same;
after our own crash they may not be (a job committed but never pushed, prints made while we were
away), so a restarted agent RESUMES its device's boot: it latches a line stop, lets the device
deliver every event, binds those prints to the jobs queued before the crash, and only with the
belt standing still clears the coder and pushes fresh jobs. Until then no coder top-up and no
operator restart reaches the line: no print can race the clear. Camera results are just as
unreliable then (those sent while we were away are lost, the rest pair off with the wrong units), so
while resuming every inspected unit FAILs with CORRELATION and every result is discarded; pairing
starts afresh once the belt is still and the camera has been quiet for a correlation window.
A coder PUSH in doubt, or a trigger the coder printed nothing on (EMPTY: the next print would be
bound to its neighbour's job), takes the same road (line stop; CLEAR and fresh jobs once still); a container
that cannot close (no SSCC left) latches a line stop the operator cannot release.

One agent per device on a ledger: an OS lock beside the database file, held while the agent lives
(the kernel drops it when the process dies), refuses a second agent for the same device_id. A busy
ledger (another writer holding the lock) never kills the agent: the poll's events stay in hand and
unacknowledged on the device, retried with backoff while the link is kept alive; the device's own
decision deadline rejects what cannot wait (fail safe)."""

from __future__ import annotations

import collections
import copy
import logging
import math
import os
import re
import socket
import sqlite3
import time

from serialine.protocol.schema import WRAP, Command, DeviceState, Reason, Verdict

from . import audit, db, lockfile, serials
from .correlate import Correlator, StepClock
from .db import transaction
from .devices.lineclient import DeviceError, InDoubt, escape_code
from .ledger import Ledger, LedgerError
from .printcheck import UNTIED, PrintCheck
from .trend import Trend
from .masterdata import MasterDataError

FILL_AHEAD = 8  # the least depth kept in the coder
FILL_COVER_S = 5.0  # ... and deeper: this long of printing at the measured print rate
FILL_MAX = 48  # ... but no deeper than this (a coder's own buffer: SimCoder and the videojet driver hold 64)
RATE_WINDOW_S = 10.0  # the print rate is taken over the prints of this long (device clock)
MAX_UNBOUND = 256  # coder jobs printed but not yet reported: more and filling holds (fail safe)
PAIRING_LOST_AFTER = 3  # consecutive code mismatches: the camera's results have slipped against units
BUSY_TIMEOUT_S = 0.2  # one attempt at the write lock; longer waits are the step's backoff, link served
BACKOFF_MAX_S = 1.0
CODER_RETRY_S = 1.0  # a refusing or unreachable coder is tried again after this, doubling ...
CODER_RETRY_MAX_S = 30.0  # ... up to this (each retry of a push puts one serial at stake)
LOW_WATER_EVERY_S = 1.0  # a pool above its low-water mark is counted again after this (not at every top-up)
# what every alarm that resets the coder says happens next (host/agent.py _try_finish_resume)
CODER_RESYNC = ("line stop latched: once the belt is still the coder is cleared and its queued jobs written off,"
                " then refilled")
REPORT_WAIT_S = 2.0  # a verdict waits at most this long for its print's report (the check), then FAILs
log = logging.getLogger("serialine.agent")


class AgentError(RuntimeError):
    """The agent cannot serve this device (the message says why, in one line)."""


class BatchEnded(AgentError):
    """The batch was closed (or aborted) under the agent: the line is stopped, nothing more is stored."""


def _copy(c: Correlator) -> Correlator:
    """A correlator's state, to go back to when a step's transaction could not run."""
    out = copy.copy(c)
    out.units, out.results = collections.deque(c.units), collections.deque(c.results)
    return out


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


class PrintRate:
    """Prints per second, on the device's clock: the UNIT_PRINTED events' t_us (wrapping at WRAP)
    of the last RATE_WINDOW_S. Deterministic for a recorded event stream; no rate (0) until two
    prints of a window are apart in time."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window_us = window_s * 1e6
        self._t: collections.deque[int] = collections.deque()  # unwrapped t_us of the window's prints
        self._last: int | None = None  # the last print's wrapped t_us

    def add(self, t_us: int) -> None:
        if self._last is None:
            self._t.append(0)
        else:
            self._t.append(self._t[-1] + (t_us - self._last) % WRAP)
        self._last = t_us
        while self._t[-1] - self._t[0] > self.window_us:
            self._t.popleft()

    def reset(self) -> None:
        """A new device boot: its clock starts afresh."""
        self._t.clear()
        self._last = None

    def per_s(self) -> float:
        span = self._t[-1] - self._t[0] if self._t else 0
        return (len(self._t) - 1) * 1e6 / span if span > 0 else 0.0


class _TopUp:
    """A coder top-up allocated in a transaction, acted on once it committed (Agent._push)."""
    __slots__ = ("jobs", "queued_before", "held", "said", "asked", "dry", "warning")

    def __init__(self, queued_before: int = 0):
        self.jobs: list[tuple[str, str]] = []  # (serial, code), committed as queued coder jobs
        self.queued_before = queued_before  # jobs the ledger had queued (pushed already) before these
        self.held = False  # filling held (too many prints unreported)
        self.said: str | None = None  # CODER_FILL_HELD's detail, logged with this top-up
        self.asked = False  # serials were asked of the pool (then dry and warning say how it stands)
        self.dry: str | None = None  # the pool ran dry (SERIALS_EXHAUSTED)
        self.warning: str | None = None  # the pool is low (SERIALS_LOW), when counted


def _boot_key(hello: dict) -> tuple[str, int]:
    """(device_id, boot_id) of a HELLO_REPLY: the device's session in the ledger."""
    return hello["device_id"].rstrip("\x00"), int(hello["boot_id"])


class Agent:
    def __init__(self, conn, batch_id: str, link, coder=None, camera=None, *, fill_ahead: int = FILL_AHEAD,
                 window_s: float = 0.5, min_grade: float = 1.5, ctx=None,
                 pairing_lost_after: int = PAIRING_LOST_AFTER, fill_cover_s: float = FILL_COVER_S,
                 fill_max: int = FILL_MAX):
        self.conn, self.link, self.coder, self.camera = conn, link, coder, camera
        try:
            self.ledger = Ledger(conn, batch_id, ctx=ctx, min_grade=min_grade)
        except (LedgerError, MasterDataError) as exc:  # e.g. the batch is closed: nothing to serve
            raise AgentError(f"no line runs on it: {exc}") from None
        self.correlator = Correlator(window_s)
        # pairing's clock: a host stall counts as one short step (host/correlate.py)
        self.clock = StepClock(window_s / 4)
        self.trend = Trend(min_grade=min_grade)  # print-quality drift, alarmed before packs fail
        self.checkpoints = audit.Checkpointer(conn, "serialine-agent")  # (service.USER) logs sealed as the line runs
        self.fill_ahead, self.fill_cover_s, self.fill_max = fill_ahead, fill_cover_s, fill_max
        self.print_rate = PrintRate()  # what the coder's depth covers (fill_target)
        self.device_id: str | None = None
        self.boot_id: int | None = None
        self.verdict_latency_s: collections.deque[float] = collections.deque(maxlen=10_000)  # the latest: a service runs for months
        self.alarms: collections.deque[str] = collections.deque(maxlen=1000)  # the latest, for a console
        self.resuming = False  # latched the line stop after our restart; coder not yet reset
        self._held: list[str] = []  # operator commands held while resuming
        self._last_result_at = float("-inf")  # when a camera result was last taken (self.clock s)
        self._reset_coder = True  # what finishing the resume does besides restarting the pairing
        self._mismatches = 0  # consecutive CODE_MISMATCH verdicts
        self.pairing_lost_after = pairing_lost_after
        self._serials_low = False
        self._low_water_at = float("-inf")  # when the pool's low-water mark is next counted (monotonic s)
        self._serials_out = False  # SERIALS_EXHAUSTED said (once per episode)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._lock = None  # (device_id, open lock file)
        self._pending_errors: list = []
        self._waiting: list = []  # polled, not yet stored (the ledger was busy): acked once stored
        self._busy_since: float | None = None
        self._busy_tries = 0
        self._backoff = 0.0
        self._coder_refused = 0  # pushes refused in a row (ERR full / bad code / unreachable)
        self._coder_retry_at = 0.0  # no coder request before this (monotonic s)
        self._coder_wait = 0.0  # the present retry interval
        self._clear_failing = False  # CODER_CLEAR_FAILED said (once per episode)
        self._unbound_held = False  # CODER_FILL_HELD said (once per episode)
        self._empty_seen = coder.empty if coder is not None else 0  # EMPTY lines acted on
        reports = coder is not None and callable(getattr(coder, "printed_codes", None))
        self.printcheck = PrintCheck(on=reports)  # the coder's PRINTED reports against the ledger's bindings
        if coder is not None:
            log.info("print cross-check: %s", f"on (driver {type(coder).__name__} reports each print)" if reports
                     else f"off (driver {type(coder).__name__} gives no print reports)")
        self._misprinted: dict[tuple, bool] = {}  # unit key → printed another code (False: untied): they FAIL
        self._report_wait: dict = {}  # unit key → (pair, since): decided while its print report may be lost
        self.line_stop: str | None = None  # why the line stays stopped whatever the operator does

    def _lease(self, device_id: str) -> None:
        """Hold the device's lock beside the ledger file, or refuse: one agent per device."""
        if self._lock and self._lock[0] == device_id:
            return
        path = db.file_of(self.conn)
        if not path:
            return  # an in-memory ledger: nobody else can share it
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device_id)
        try:
            f = lockfile.hold(f"{path}.{safe}.agent.lock",
                              f"pid {os.getpid()} on {socket.gethostname()}, batch {self.ledger.batch.batch_id}")
        except lockfile.Held as held:
            raise AgentError(f"device {device_id} is already served by an agent on this ledger"
                             f" ({held.holder or 'another process'}); one agent per device: stop it first,"
                             " or give each line its own device_id") from None
        self._unlock()  # (not release: the loop does not wait for a checkpoint; the next one is due as before)
        self._lock = (device_id, f)

    def release(self) -> None:
        """Give up the device's lock (the process ending does the same), the logs sealed so far
        (a running checkpoint waited for, then the last one made)."""
        self.checkpoints.flush()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock:
            self._lock[1].close()
            self._lock = None

    def _check_batch(self) -> None:
        """Inside a write transaction (so it cannot change meanwhile): the batch still runs. A batch
        closed under a live line takes no more units or serials; the agent stops the line and ends."""
        (state,) = self.conn.execute("SELECT state FROM batch WHERE batch_id=?", (self.ledger.batch.batch_id,)).fetchone()
        if state != "running":
            device = f" for device {self.device_id}" if self.device_id else ""
            raise BatchEnded(f"batch {self.ledger.batch.batch_id} is {state}: the agent{device} stops and the"
                             " line is stopped; events not stored stay on the device")

    def _batch_ended(self, exc: BatchEnded) -> None:
        """Stop the line (latched: START refused) and say why, once."""
        if self.line_stop is None:
            self.line_stop = str(exc)
            log.error(str(exc))
            self.alarms.append(str(exc))
            self.link.send("COMMAND", {"command": int(Command.STOP), "arg": 0})
            try:
                with transaction(self.conn):
                    self.ledger.alarm("agent", "BATCH_ENDED", str(exc))
            except sqlite3.Error:
                pass  # the alarm is said on stderr already; the line stop is what matters

    def start(self, timeout: float = 5.0) -> dict:
        """Open the session: resume this batch's boot of the device, or start a new one."""
        hello = self.link.connect(timeout)
        self._lease(_boot_key(hello)[0])
        while True:
            try:
                if self.ledger.knows_boot(*_boot_key(hello)):
                    self._resume(hello)
                else:
                    self._book_new_boot(hello)
                break
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                self._on_busy(exc)
                time.sleep(self._backoff)
            except BatchEnded as exc:
                self._batch_ended(exc)
                raise
        self._busy_over()
        return hello

    def command(self, name: str, arg: int = 0) -> bool:
        """An operator's line command (START, CLEAR_ALARM, ...). Held while resuming: releasing the
        line stop before the coder is reset would let a print race the clear. Refused (False) while
        passed packs cannot be packed (`line_stop`). True when sent."""
        if self.line_stop and Command[name] in (Command.START, Command.CLEAR_ALARM):
            msg = f"{name} refused: the line stays stopped ({self.line_stop})"
            log.warning(msg)
            self.alarms.append(msg)
            return False
        if self.resuming:
            self._held.append(name)
            return False
        self.link.send("COMMAND", {"command": int(Command[name]), "arg": arg})
        return True

    def _resume(self, hello: dict) -> None:
        device_id, boot_id = _boot_key(hello)
        with transaction(self.conn):
            self._check_batch()
            self.ledger.alarm("agent", "RESUMING", f"agent restarted on {device_id} boot {boot_id}: line stop "
                              "latched until the device's events are in and the coder is reset")
        self.device_id, self.boot_id = device_id, boot_id
        self._stop_and_resync(reset_coder=True)

    def _stop_and_resync(self, reset_coder: bool) -> None:
        """Latch a line stop; pair nothing until the belt is still and the camera quiet. A pending
        coder reset stays (the print check re-arms only at its CLEAR)."""
        self._reset_coder = reset_coder or (self.resuming and self._reset_coder)
        self.resuming = True
        self.link.send("COMMAND", {"command": int(Command.STOP), "arg": 0})

    def driver_back(self, kind: str) -> None:
        """The service reconnected the coder or camera after a loss (host/service.py): what it did
        meanwhile is unknown. Camera: results were lost, pairing restarts once the belt is still.
        Coder: its queue is unknown, cleared and refilled once still. A pending coder reset stays."""
        coder = kind == "coder"
        if coder:
            self._coder_retry_at = 0.0  # the backoff of pushes refused while it was gone is over
        self._stop_and_resync(reset_coder=coder or (self.resuming and self._reset_coder))

    def alarm(self, source: str, kind: str, detail: str) -> None:
        """An alarm from outside a step (the service's): in the ledger now, or with the next commit."""
        self._alarm_now(source, kind, detail)

    def _try_finish_resume(self) -> None:
        """Done when the device says: not running, belt still, every event acknowledged (so stored).
        The link is new since our restart, so every STATUS it holds was sent after the crash."""
        st = getattr(self.link, "last_status", None)
        if st is None or int(st["state"]) == DeviceState.RUNNING or st["speed_cps"] or st["queue_fill"]:
            return
        if self.clock.now - self._last_result_at < self.correlator.window_s:
            return  # a result may still be on its way for a unit inspected before the stop
        clear = self.coder is not None and self._reset_coder
        if clear:
            if time.monotonic() < self._coder_retry_at:
                return
            try:
                self.coder.clear()
            except DeviceError as exc:  # still latched: no refill before a clear is confirmed
                self._coder_unclear(exc)
                return
            self._coder_cleared()
            self._clear_failing, self._coder_wait, self._coder_retry_at = False, 0.0, 0.0
        self.correlator = Correlator(self.correlator.window_s)  # the next result is the next trigger's
        try:  # after the step's commit and ack: a busy ledger only delays the end of the resume
            with transaction(self.conn):
                dropped = 0
                if clear:
                    dropped = self.ledger.drop_queued()
                done = f"coder cleared, {dropped} queued job(s) dropped" if self._reset_coder else "camera pairing restarted"
                self.ledger.alarm("agent", "RESUMED", f"{done}; clear the alarm to restart the line")
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            self.ledger.resync()  # the queue still looks queued: the next try clears the coder again
            self._on_busy(exc)
            return
        self.resuming = False
        self.fill_coder()
        held, self._held = self._held, []
        for name in held:
            self.command(name)

    def on_new_boot(self, hello: dict) -> None:
        """The device rebooted (e.g. told by a link wrapper from inside poll()). A busy ledger only
        defers the booking: the next step sees the new boot_id and books it before storing any
        event of it."""
        try:
            self._book_new_boot(hello)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            self.ledger.resync()
            self._on_busy(exc)

    def _book_new_boot(self, hello: dict) -> None:
        """A (new) session: this batch's units of the device's other boots still in flight are
        booked (ledger.new_boot: rejected, or UNKNOWN if the host passed them), the prints the old
        boot never reported take their jobs (the coder's depth says how many), and the coder
        starts clean. A busy ledger raises (nothing booked)."""
        device_id, boot_id = _boot_key(hello)
        self._lease(device_id)
        with transaction(self.conn):
            self._check_batch()
            if self.coder is not None:  # prints the old boot made but never reported take their jobs
                try:
                    self.ledger.unheard_prints(device_id, boot_id, self.ledger.queued_depth() - self.coder.depth())
                except DeviceError as exc:
                    self.ledger.alarm("coder", "DEPTH_UNKNOWN", f"coder depth at the reboot of {device_id}: {exc};"
                                      " its queued jobs are written off unbound")
            self.ledger.new_boot(device_id, boot_id)
            if self.coder is not None:  # what the coder holds is unknown after our restart: start clean
                self.ledger.drop_queued()
        self.device_id, self.boot_id = device_id, boot_id  # only once booked: a busy ledger retries it
        self.print_rate.reset()  # the new boot's clock
        self.resuming = False  # a freshly booted device prints nothing until configured and started
        self.correlator = Correlator(self.correlator.window_s)  # old inspections are purged units
        self._report_wait.clear()
        if self.coder is not None:
            try:
                self.coder.clear()
            except DeviceError as exc:  # its old jobs may still print: stop until a clear is confirmed
                self._coder_unclear(exc)
                self.printcheck.disarm("the coder's CLEAR at a new boot was not confirmed")
                self._stop_and_resync(reset_coder=True)
            else:
                self._clear_failing = False
                self._coder_cleared()
        self.fill_coder()

    def fill_coder(self) -> int:
        """Top the coder up outside a step (at a start, a new boot, the end of a resume): its own
        transaction, then the pushes (Agent._push). → jobs pushed."""
        buffered = self._coder_buffered()
        if buffered is None:
            return 0
        try:
            with transaction(self.conn):
                top = self._top_up(buffered)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            self.ledger.resync()  # rolled back: none of these jobs exists, none was pushed
            self._on_busy(exc)
            return 0
        return self._push(top)

    def fill_target(self) -> int:
        """Jobs to keep in the coder: fill_ahead, or enough for fill_cover_s of printing at the
        measured print rate, at most fill_max (or fill_ahead, if that is more)."""
        want = math.ceil(self.print_rate.per_s() * self.fill_cover_s)
        return max(self.fill_ahead, min(self.fill_max, want))

    def _coder_buffered(self) -> int | None:
        """The coder's own buffer (Coder.buffered(): prints the device has not reported yet are gone
        from it), when a top-up may run now; None: not now. Asked before the transaction (a
        driver's request is never made under the write lock)."""
        if self.coder is None or self.resuming or time.monotonic() < self._coder_retry_at:
            return None
        try:
            return self.coder.buffered()
        except DeviceError as exc:
            self._coder_refusing(exc, [])
            return None

    def _top_up(self, buffered: int, batch_checked: bool = False) -> _TopUp | None:
        """The jobs that top the coder up to fill_target() (caller's transaction; Agent._push
        pushes them once it committed): prints the device has not reported yet stay queued in the
        ledger, bound in order once reported, and at most MAX_UNBOUND of them (then filling holds).
        A refused coder is probed with one job at a time. None: no top-up (the step latched a stop)."""
        if self.resuming:  # no job may race the coder's clear
            return None
        queued = self.ledger.queued_depth()
        held = min(buffered, queued)
        top = _TopUp(queued)
        if queued - held >= MAX_UNBOUND:
            top.held = True
            if not self._unbound_held:
                top.said = (f"{queued - held} coder jobs printed but not yet reported by the device (link down?):"
                            " filling held; a coder that runs dry stops the line")
                self.ledger.alarm("agent", "CODER_FILL_HELD", top.said)
            return top
        need = self.fill_target() - held
        if need <= 0:
            return top
        if self._coder_refused:
            need = 1  # probing whether it takes jobs again
        if not batch_checked:
            self._check_batch()
        top.asked = True
        try:
            top.jobs = self.ledger.queue_codes(need)
        except serials.SerialError as exc:
            top.dry = str(exc)
            left = serials.available(self.conn, self.ledger.batch.gtin)
            top.jobs = self.ledger.queue_codes(left) if left else []
            if not self._serials_out:
                self.ledger.alarm("agent", "SERIALS_EXHAUSTED", f"{top.dry}; the coder gets no more jobs until"
                                  " serials are added (prints without a job are rejected)")
        # a bounded count, yet a sixth of a top-up: once a second while not low
        if top.dry or self._serials_low or time.monotonic() >= self._low_water_at:
            self._low_water_at = time.monotonic() + LOW_WATER_EVERY_S
            top.warning = serials.low_water(self.conn, self.ledger.batch.gtin)
            if top.warning and not self._serials_low:  # once per crossing, not once per top-up
                self.ledger.alarm("agent", "SERIALS_LOW", top.warning)
        return top

    def _push(self, top: _TopUp | None) -> int:
        """A committed top-up to the coder, in order. A push in doubt latches a line stop and the
        coder's queue is reset once the belt is still (as on resume); a refused one (or an
        unreachable coder) writes off the jobs it never got and pauses filling, retried with one
        job at a time until the coder takes one. Never raises for the coder's sake. → jobs pushed."""
        if top is None:
            return 0
        if top.said:
            self.alarms.append(top.said)
        self._unbound_held = top.held
        if top.held:
            return 0
        if top.asked:
            for text, said in ((top.warning, self._serials_low), (top.dry, self._serials_out)):
                if text and not said:
                    self.alarms.append(text)
            self._serials_low, self._serials_out = top.warning is not None, top.dry is not None  # committed: said
        if top.dry:
            self._coder_retry_at = time.monotonic() + CODER_RETRY_S
        jobs = top.jobs
        for i, (_, code) in enumerate(jobs):
            try:
                depth = self.coder.push(code)
            except InDoubt as exc:
                self._coder_in_doubt(exc)
                return i
            except DeviceError as exc:
                self._coder_refusing(exc, [serial for serial, _ in jobs[i:]])
                return i
            # The probe after a refusal: if a stray "ERR" was taken for the refused push's reply, the
            # coder kept that job and holds more than the ledger queued (fewer is prints not yet
            # reported). Checked only here: while printing, one more is a print the coder has not
            # made yet although the device reported it.
            if self._coder_refused and depth > top.queued_before + i + 1:
                self._coder_in_doubt(InDoubt(f"coder holds {depth} jobs after a refusal, the ledger queued "
                                             f"{top.queued_before + i + 1}: the refusal was not what the coder did"))
                return i + 1
        if self._coder_refused and jobs:
            self._alarm_now("coder", "CODER_ACCEPTS", f"the coder takes jobs again after {self._coder_refused}"
                            " refused push(es); filling resumed")
            self._coder_refused, self._coder_wait = 0, 0.0
        return len(jobs)

    def _coder_in_doubt(self, exc: DeviceError) -> None:
        """The coder may or may not have queued a job: its queue no longer matches the ledger's.
        Prints go on taking the jobs queued before (those are certain) until the line stops; then
        _try_finish_resume clears the coder, writes the queue off and refills."""
        self._stop_and_resync(reset_coder=True)
        self._alarm_now("coder", "CODER_IN_DOUBT", f"{exc}; {CODER_RESYNC}")

    def _coder_refusing(self, exc: DeviceError, unsent: list[str]) -> None:
        """Nothing was queued for the refused job: it and the jobs after it are written off."""
        self._coder_refused += 1
        self._coder_wait = min(CODER_RETRY_MAX_S, max(CODER_RETRY_S, self._coder_wait * 2))
        self._coder_retry_at = time.monotonic() + self._coder_wait
        try:
            with transaction(self.conn):
                dropped = self.ledger.drop_unsent(unsent)
                if self._coder_refused == 1:  # once per episode; CODER_ACCEPTS ends it
                    self.ledger.alarm("coder", "CODER_REFUSED", f"{exc}; {dropped} job(s) it never got written off,"
                                      f" filling paused (retried every {CODER_RETRY_S:g}..{CODER_RETRY_MAX_S:g} s)")
        except sqlite3.OperationalError as busy:
            if not _busy(busy):
                raise
            self.ledger.resync()  # the unsent jobs still look queued: reset the coder's queue instead
            self._coder_in_doubt(exc)
            return
        if self._coder_refused == 1:
            self.alarms.append(str(exc))

    def _coder_unclear(self, exc: DeviceError) -> None:
        """A CLEAR not confirmed: tried again later; the alarm is logged once per episode."""
        self._coder_wait = min(CODER_RETRY_MAX_S, max(CODER_RETRY_S, self._coder_wait * 2))
        self._coder_retry_at = time.monotonic() + self._coder_wait
        if not self._clear_failing:
            self._clear_failing = True
            self._alarm_now("coder", "CODER_CLEAR_FAILED", f"{exc}; the line stays stopped and the coder is not"
                            f" refilled until a CLEAR is confirmed (retried every {CODER_RETRY_S:g}..{CODER_RETRY_MAX_S:g} s)")

    def _alarm_now(self, source: str, kind: str, detail: str) -> None:
        """An alarm outside a step's transaction; a busy ledger logs it with the next commit."""
        self.alarms.append(detail)
        try:
            with transaction(self.conn):
                self.ledger.alarm(source, kind, detail)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            self._pending_errors.append((source, kind, detail))

    def step(self, timeout: float = 0.05) -> int:
        """One poll: returns the number of events stored. A busy ledger is waited out (see above)."""
        self.clock.tick()
        try:
            self._waiting += self.link.poll(max(timeout, self._backoff))
        except BatchEnded as exc:  # a link wrapper's on_new_boot found the batch ended
            self._batch_ended(exc)
            raise
        saved = None
        try:
            hello = getattr(self.link, "hello", None)  # HostLink keeps the session's HELLO_REPLY
            if hello and int(hello["boot_id"]) != self.boot_id:
                self._book_new_boot(dict(hello))  # busy: nothing booked, retried next step
            self._take_drivers()  # before `saved`: what the drivers handed over survives a rollback
            buffered = self._coder_buffered()  # (before `saved`: a refusal it met is not undone)
            saved = _copy(self.correlator), self._mismatches, self.resuming, self._reset_coder
            printed = self.printcheck.snapshot(), dict(self._misprinted), dict(self._report_wait)
            stored = self._step(buffered)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            self.ledger.resync()  # rolled back: mirrors rebuilt, pairing as before this step
            if saved is not None:
                self.correlator, self._mismatches, self.resuming, self._reset_coder = saved
                self.printcheck.restore(printed[0])
                self._misprinted, self._report_wait = printed[1], printed[2]
            self._on_busy(exc)
            return 0
        except BatchEnded as exc:
            self._batch_ended(exc)
            raise
        self._busy_over()
        return stored

    def _on_busy(self, exc) -> None:
        if self._busy_since is None:
            self._busy_since = time.monotonic()
            msg = f"ledger busy ({exc}): another writer holds the lock; events wait unacknowledged, retrying"
            log.warning(msg)
            self.alarms.append(msg)
        self._busy_tries += 1
        self._backoff = min(BACKOFF_MAX_S, max(0.05, self._backoff * 2))

    def _busy_over(self) -> None:
        """The ledger was busy and is free again: say so in the alarm log."""
        if self._busy_since is None:
            return
        waited = time.monotonic() - self._busy_since
        self._busy_since, self._backoff = None, 0.0
        try:
            with transaction(self.conn):
                self.ledger.alarm("agent", "LEDGER_BUSY", f"the ledger was locked by another writer for {waited:.1f} s"
                                  f" ({self._busy_tries} attempt(s)); events waited unacknowledged on the device")
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            self._busy_since = time.monotonic() - waited  # busy again: say it when it is over
            return
        self._busy_tries = 0

    def _take_drivers(self) -> None:
        """Camera results into the correlator, the drivers' alarms into _pending_errors (logged
        with the next commit): taken from the drivers once, so never lost to a rolled-back step."""
        errors: list[tuple[str, str, str]] = []  # (source, kind, detail)
        if self.coder is not None:
            errors += [("coder", kind, detail) for kind, detail in self.coder.alarms()]
            reports = getattr(self.coder, "printed_codes", None)
            if reports is not None:
                self.printcheck.add_reports(reports())
                self.printcheck.connection(getattr(self.coder, "epoch", 0))  # a new connection before its first report
            empty, self._empty_seen = self.coder.empty - self._empty_seen, self.coder.empty
            if empty:
                self.printcheck.disarm("the coder ran dry: which job is on which pack is not known")
            if empty and not (self.resuming and self._reset_coder):
                self._stop_and_resync(reset_coder=True)
                errors.append(("coder", "CODER_RAN_DRY", f"the coder printed nothing on {empty} trigger(s): which"
                               f" job is on which pack is no longer certain; {CODER_RESYNC}"))
        if self.camera is not None:
            results, camera_alarms = self.camera.results()
            errors += [("camera", kind, detail) for kind, detail in camera_alarms]
            if results:
                self._last_result_at = self.clock.now
            if self.resuming:
                results = []  # no result can be paired until the belt is still and the camera quiet
            for r in results:
                self.correlator.result(r, self.clock.now)
        self.alarms.extend(detail for _, _, detail in errors)
        self._pending_errors += errors

    def _step(self, buffered: int | None) -> int:
        msgs, errors = self._waiting, self._pending_errors
        try:
            stored, verdicts, top, printed_at = self._store_and_decide(msgs, errors, buffered)
        except Exception:
            self.ledger.resync()  # the transaction rolled back: nothing is acked, mirrors rebuilt
            raise
        self._waiting, self._pending_errors = [], []
        for t_us in printed_at:
            self.print_rate.add(t_us)
        self.link.ack_delivered()
        if self.ledger.packing_stopped and not self.line_stop:  # alarm SSCC_EXHAUSTED is in the ledger
            self.line_stop = self.ledger.packing_stopped
            self.alarms.append(self.line_stop)
            self.link.send("COMMAND", {"command": int(Command.STOP), "arg": 0})
        resumed = False
        if self.resuming:
            self._try_finish_resume()
            resumed = not self.resuming
        for unit_seq, verdict, reason, t0 in verdicts:
            self.link.send("VERDICT", {"unit_seq": unit_seq, "verdict": int(verdict), "reason": int(reason)})
            self.verdict_latency_s.append(time.perf_counter() - t0)
        if resumed:  # the step's transaction left the coder alone; the resume's own top-up may be a probe
            self.fill_coder()
        else:
            self._push(top)  # committed with the step's events
        self.checkpoints.note(stored)  # after the verdicts: a close then finds only the logs' tail unsealed
        return stored

    def _store_and_decide(self, msgs, errors, buffered: int | None):
        """The step's one transaction: its events, alarms, verdicts and the coder's top-up.
        → (events stored, verdicts to send, top-up to push, t_us of the prints stored)."""
        stored, blind, printed_at, top = 0, [], [], None
        with transaction(self.conn):
            if msgs:
                self._check_batch()
            now = self.clock.now
            for (name, fields), new in zip(msgs, self.ledger.store_batch(self.device_id, self.boot_id, msgs)):
                if new:
                    stored += 1
                    if name == "UNIT_INSPECTED":
                        if self.resuming:
                            blind.append(fields["unit_seq"])
                        else:
                            self.correlator.inspected(fields["unit_seq"], now)
                    elif name == "UNIT_PRINTED":
                        printed_at.append(fields["t_us"])
            for source, kind, detail in errors:
                self.ledger.alarm(source, kind, detail)
            self._check_prints()
            verdicts = self._decide(self.clock.now)
            if blind:
                verdicts += self._fail_blind(blind)
            self.ledger.flush_events()
            if buffered is not None:  # after the binds: the ledger's queue is what the coder holds
                top = self._top_up(buffered, batch_checked=bool(msgs))
        return stored, verdicts, top, printed_at

    def _fail_blind(self, units: list[int]) -> list:
        """Units inspected while resuming (or waiting when pairing slipped): no camera result can be
        trusted to be theirs. Their verdicts are recorded here (caller's transaction)."""
        t0 = time.perf_counter()
        reason = {u: self._misprint_reason(u, blind=True) for u in units}
        self.ledger.record_verdicts([(self.device_id, self.boot_id, u, Verdict.FAIL, reason[u], None, None)
                                     for u in units])
        self.ledger.alarm("agent", "CORRELATION", f"units {units[0]}..{units[-1]}: rejected, their camera "
                          "results cannot be paired (line stopped to pair afresh)")
        return [(u, Verdict.FAIL, reason[u], t0) for u in units]

    def _misprint_reason(self, u: int, blind: bool = False) -> Reason:
        """CODE_MISMATCH for a unit the coder printed another code on, or whose print no report can be
        tied to (its verdict is now made); a unit failed blind (no camera result can be paired) for
        an untied print alone keeps CORRELATION, the first reason it fails for."""
        misprinted = self._misprinted.pop((self.device_id, self.boot_id, u), None)
        if misprinted or (misprinted is not None and not blind):
            return Reason.CODE_MISMATCH
        return Reason.CORRELATION

    def _coder_cleared(self) -> None:
        """A CLEAR was confirmed: the coder's print reports and the ledger's bindings start afresh
        (bindings not yet paired are untied: their units FAIL with the next step)."""
        self.printcheck.add_bindings(self.ledger.take_bindings())
        self.printcheck.restart(getattr(self.coder, "epoch", 0))

    def _check_prints(self) -> None:
        """Pair the coder's print reports with the prints the ledger bound (caller's transaction). A
        mismatch: alarm PRINT_MISMATCH, its unit FAILs (CODE_MISMATCH) unless its verdict is out
        already, and the line stops to clear and refill the coder, as for CODER_RAN_DRY. A print no
        report can be tied to (the check not armed: after a mismatch, lost reports, a coder that ran
        dry, ... until the coder's CLEAR) FAILs the same way: alarm PRINT_UNTIED."""
        self.printcheck.add_bindings(self.ledger.take_bindings())
        untied: dict[str, list] = {}  # why → [(unit, fate)]
        for m in self.printcheck.pairs():
            device_id, boot_id, u = m.unit
            (verdict,) = self.conn.execute("SELECT verdict FROM unit WHERE device_id=? AND boot_id=? AND unit_seq=?",
                                           m.unit).fetchone() or (None,)
            if verdict is None and m.unit[:2] == (self.device_id, self.boot_id):  # an old boot's are booked already
                self._misprinted[m.unit] = m.printed is not UNTIED
            if m.printed is UNTIED:
                untied.setdefault(m.why, []).append((f"{device_id}:{boot_id}:{u}", verdict))
                continue
            printed = "a code it cannot name" if m.printed is None else escape_code(m.printed)
            fate = "it FAILs" if verdict is None else \
                f"its verdict ({verdict}) was sent already; the camera judged the code it read"
            detail = (f"unit {device_id}:{boot_id}:{u}: the coder printed {printed}, the ledger bound"
                      f" {escape_code(m.bound)}; {fate}; {CODER_RESYNC}")
            self.ledger.alarm("coder", "PRINT_MISMATCH", detail)
            self.alarms.append(detail)
        for why, units in untied.items():
            failed = [k for k, v in units if v is None]
            out = [f"{k} ({v})" for k, v in units if v is not None]
            detail = (f"no print report can be tied to the job bound to unit(s) {', '.join(failed) or '-'} ({why}):"
                      " they FAIL" + (f"; verdict sent already for {', '.join(out)}" if out else "")
                      + f"; {CODER_RESYNC}; the check re-arms from that CLEAR")
            self.ledger.alarm("coder", "PRINT_UNTIED", detail)
            self.alarms.append(detail)
        if self.printcheck.on and not self.printcheck.armed and not (self.resuming and self._reset_coder):
            if not untied:  # nothing bound yet since the check was lost: say it now
                detail = (f"print cross-check lost ({self.printcheck.why}): every print until the coder is"
                          f" cleared FAILs its unit; {CODER_RESYNC}")
                self.ledger.alarm("coder", "PRINT_UNTIED", detail)
                self.alarms.append(detail)
            self._stop_and_resync(reset_coder=True)

    def _decide(self, now: float) -> list:
        out, rows = [], []
        pairs = [p for p, _ in self._report_wait.values()] + self.correlator.pairs(now)
        for i, p in enumerate(pairs):
            if p.unit is None:
                self.ledger.alarm("camera", "CORRELATION", p.why)
                self.alarms.append(p.why)
                continue
            t0 = time.perf_counter()
            key = (self.device_id, self.boot_id, p.unit)
            since = self._report_wait.pop(key, (p, now))[1]
            if self.printcheck.waiting(key) and key not in self._misprinted:  # never passed unchecked
                if now - since < REPORT_WAIT_S:
                    self._report_wait[key] = (p, since)  # decided once its print report is compared
                    continue
                self._misprinted[key] = False
                why = (f"unit {key[0]}:{key[1]}:{key[2]}: no print report came for it within {REPORT_WAIT_S:g} s"
                       " of its camera result: it FAILs")
                self.ledger.alarm("coder", "PRINT_UNTIED", why)
                self.alarms.append(why)
            if key in self._misprinted:  # whatever the camera read
                verdict, reason, serial = Verdict.FAIL, self._misprint_reason(p.unit), None
                grade = p.result.grade if p.result is not None else None
            elif p.result is None:
                verdict, reason, serial, grade = Verdict.FAIL, Reason.CORRELATION, None, None
                self.ledger.alarm("agent", "CORRELATION", f"unit {p.unit}: {p.why}")
                self.alarms.append(p.why)
            else:
                expected = self.ledger.expected_code(self.device_id, self.boot_id, p.unit)
                verdict, reason, serial = self.ledger.judge.decide(p.result.data, p.result.grade, expected)
                grade = p.result.grade
                self._trend(p.unit, p.result)
                if verdict == Verdict.PASS:
                    self._mismatches = 0
                elif reason == Reason.CODE_MISMATCH:
                    self._mismatches += 1
            rows.append((self.device_id, self.boot_id, p.unit, verdict, reason, serial, grade))
            out.append((p.unit, verdict, reason, t0))
            if self._mismatches >= self.pairing_lost_after:
                waiting = [q.unit for q, _ in self._report_wait.values()]
                self._report_wait.clear()
                out += self._pairing_lost([q.unit for q in pairs[i + 1:] if q.unit is not None and q.unit not in waiting]
                                          + waiting)
                break
        if rows:
            self.ledger.record_verdicts(rows)
        return out

    def _trend(self, unit: int, result) -> None:
        """A read's grades into the trend (the overall, plus per-parameter grades if the driver gives them)."""
        try:
            started = self.trend.add({"overall": result.grade, **(getattr(result, "parameters", None) or {})})
        except ValueError:  # a grade the judge refused already (its verdict says so)
            return
        for why in started:
            why = f"unit {self.device_id}:{self.boot_id}:{unit}: {why}"
            self.ledger.alarm("camera", "PRINT_QUALITY_DRIFT", why)
            self.alarms.append(why)

    def _pairing_lost(self, waiting: list) -> list:
        """Results have slipped against units (a trigger the camera missed, a stray result): every
        unit still waiting FAILs, the line stops, and pairing restarts once nothing is between the
        camera and its results — as after our own restart, but the coder's queue is still good."""
        waiting += [k for k, _ in self.correlator.units]
        self.correlator = Correlator(self.correlator.window_s)
        self._mismatches = 0
        self._stop_and_resync(reset_coder=False)
        self.ledger.alarm("agent", "PAIRING_LOST", f"{self.pairing_lost_after} code mismatches in a row: camera "
                          "results have slipped against units; line stopped to pair afresh")
        return self._fail_blind(waiting) if waiting else []

    def run(self, until=lambda: False, timeout: float = 0.02) -> None:
        while not until():
            self.step(timeout)
