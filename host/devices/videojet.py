"""Videojet coder driver: the Videojet (Zipher) Text Communications Protocol over TCP, as the public
Videojet DataFlex 6530 Service Manual (Rev AA, appendix B) documents it (docs/devices.md, emulator
host/sim/videojet_emu.py). The agent's coder interface (push/clear/depth/buffered/printed/empty/
printed_codes/alarms/closed/reconnect/close) on a printer that holds ONE job's field data.

The jobs wait here, in order (the coder's FIFO is this driver's); the printer holds the next one in
its variable field, loaded with `JDA|<field>=<code>|` (`ACK`/`ERR`). The protocol reports nothing
unsolicited, so a poller asks `GST` every `poll_s` (`STS|state|error|job|batch|total|`): each step
of the total count is one print, booked by what the field is known to hold: the loaded job (once),
else no job (`empty`: the field's old data again; the agent stops the line as for an EMPTY).

A load is `GST`, `JDA`, `GST`: a print while the JDA is on its way may have used either data. If
the count after the ACK has not moved the field is known (the job waits in it); if it moved, those
prints and the next one are booked None (alarm PRINT_IN_DOUBT: the agent's cross-check fails that
unit and stops the line), and after that one the job is gone. A JDA with no reply, a load whose
count after it never came, or a printer reset leave the field in doubt until a later load is
confirmed (or `clear()` empties it); InDoubt from the push. `ERR` to a push's JDA is a definite
refusal (nothing queued); to a later load, the job stays first and is retried (alarm LOAD_REFUSED).
The total count survives a lost connection, so prints made meanwhile are still counted once the
owner (the agent's next request, or the service) has reconnected: the poller never reconnects by
itself."""

from __future__ import annotations

import collections
import re
import threading
import time
from dataclasses import dataclass

from .lineclient import GS, MAX_EVENTS, DeviceError, InDoubt, LineClient
from .registry import check_timeout, known_options

STATES = ("shut down", "starting up", "shutting down", "running", "offline")
ERRORS = ("no errors", "warnings present", "faults present")
RUNNING = 3
_STS = re.compile(r"STS\|([0-4])\|([0-2])\|([^|\r\n]*)\|(\d{1,10})\|(\d{1,10})\|")
LOAD_RETRY_S = 0.5
EMPTY = object()  # a print that carried no job
KNOWN, ONE_PRINT, UNTIL_WRITTEN = 0, 1, 2  # the field: known; in doubt for the next print; until a load is confirmed


class ReplyError(ValueError):
    pass


@dataclass(frozen=True)
class Status:
    state: int  # STATES
    error: int  # ERRORS
    job: str
    batch: int
    total: int


def parse_reply(line: str) -> str | Status:
    """One reply line (no CR) → "ACK", "ERR" or a Status; ReplyError on anything else."""
    if line in ("ACK", "ERR"):
        return line
    m = _STS.fullmatch(line) if isinstance(line, str) else None
    if m is None:
        raise ReplyError(f"not a Text Communications reply: {str(line)[:80]!r}")
    return Status(int(m[1]), int(m[2]), m[3], int(m[4]), int(m[5]))


def check_code(code: str) -> None:
    if not code or not code.isascii() or any(c in "|\r\n" or (c < " " and c != GS) for c in code):
        raise DeviceError(f"videojet: refusing a code the protocol cannot carry in a field: {code[:40]!r}")


class VideojetCoder(LineClient):
    EOL, SEP, RAW_OK = b"\r", "|", GS
    REPLIES = ("ACK", "ERR", "STS")

    def __init__(self, host: str, port: int, timeout: float = 2.0, *, field: str = "SERIAL", job: str = "",
                 poll_s: float = 0.01, queue: int = 64):
        self.field, self.job, self.poll_s, self.max_queue = field, job, poll_s, queue
        self._q = threading.RLock()  # one poll / push / clear at a time: the queue and the field agree
        self._fifo: collections.deque[str] = collections.deque()  # jobs not yet loaded
        self._fresh: str | None = None  # the job the field holds, known, not printed yet
        self._field_doubt = KNOWN  # what the field holds: known, or not (each print counted then is booked None)
        self._total: int | None = None
        self._load_at = 0.0  # a refused load is retried from then
        self.printed = 0
        self.empty = 0
        self.epoch = 0
        self._codes: collections.deque = collections.deque()
        self.status: Status | None = None
        self._poll_thread = threading.Thread(target=self._poller, daemon=True, name="videojet-poll")
        super().__init__(host, port, timeout)
        with self._q:
            if job:
                self._ok(f"SLA|{job}|", "job select")
            self.clear()
        self._poll_thread.start()

    # --- connection ------------------------------------------------------------------------------
    def _connect(self) -> None:
        super()._connect()
        try:
            self.sock.sendall(b"\r")  # the manual: a CR first resets the printer's parser
        except (OSError, AttributeError):
            pass

    def _request(self, line: str, expect: str) -> str:
        if self.closed and threading.current_thread() is self._poll_thread:
            # a lost connection is reopened by the owner (the agent's next request, or the service's
            # reconnect with backoff), never behind its back by the poller
            raise DeviceError(f"{self.name}: connection lost")
        return super()._request(line, expect)

    def _ok(self, command: str, what: str, idempotent: bool = False) -> None:
        if self.request(command, "ACK|ERR", idempotent=idempotent) != "ACK":
            raise DeviceError(f"videojet refused {what}: {command.split('|', 1)[0]} answered ERR")

    # --- the counts ----------------------------------------------------------------------------
    def _gst(self) -> int:
        """Ask the state and book the prints since the last ask, by what the field is known to
        hold; → the prints booked (-1: the count went back, the printer was reset)."""
        st = parse_reply(self.request("GST", _STS.pattern, idempotent=True))
        old, self.status = self.status, st
        if old is None or (old.state, old.error) != (st.state, st.error):
            if st.state != RUNNING:
                self.alarm("NOT_RUNNING", f"videojet: printer {STATES[st.state]} ({ERRORS[st.error]})")
            elif st.error:
                self.alarm("FAULT" if st.error == 2 else "WARNING", f"videojet: {ERRORS[st.error]}")
        if self._total is None or st.total < self._total:
            moved = 0
            if self._total is not None:  # restarted or reset: what the field holds is unknown too
                self.alarm("COUNT_RESET", f"videojet: total count went back from {self._total} to {st.total}")
                self._fresh, self._field_doubt, moved = None, UNTIL_WRITTEN, -1
            self._total = st.total
            return moved
        moved, self._total = st.total - self._total, st.total
        for _ in range(moved):
            if self._field_doubt:
                self._book(None)
                if self._field_doubt == ONE_PRINT:  # that print took the loaded job if it was still there
                    self._field_doubt = KNOWN
            elif self._fresh is not None:
                self._book(self._fresh)
                self._fresh = None
            else:
                self._book(EMPTY)
        return moved

    def _book(self, code) -> None:
        """One print: the `code` it carries, None when that is not known, EMPTY for no job (the
        field's old data again, or nothing)."""
        if code is EMPTY:
            self.empty += 1
            return
        if code is None:
            self.alarm("PRINT_IN_DOUBT", "videojet: a print while the field's data was not known (a load"
                       " window, or a load without reply): which code it carries is unknown")
        self.printed += 1
        with self._state:
            if len(self._codes) >= MAX_EVENTS:
                self._codes.clear()
                self.epoch += 1
            self._codes.append((self.epoch, code))

    def printed_codes(self) -> list[tuple[int, str | None]]:
        """(epoch, code) of each print since the last call (code None: in doubt), in order."""
        with self._state:
            out, self._codes = list(self._codes), collections.deque()
        return out

    # --- loading ---------------------------------------------------------------------------------
    def _write(self, value: str, counted: bool = False) -> bool:
        """JDA `value` into the field ("" empties it) between two counts: prints before the first
        used what the field held; a print between the two may have used either data (in doubt). The
        field is known again when the count after the ACK has not moved (or it was emptied); if it
        moved, the job printed in the window or still waits, so the next print is in doubt too and
        after it the job is gone. True: ACKed; False: ERR, nothing changed. DeviceError: nothing
        sent; InDoubt: sent, the field in doubt until a load is confirmed. `counted`: the caller
        has just asked GST."""
        if not counted:
            try:
                self._gst()
            except InDoubt as exc:  # nothing sent yet: a definite failure
                raise DeviceError(str(exc)) from None
        was = self._fresh, self._field_doubt
        self._fresh, self._field_doubt = None, UNTIL_WRITTEN
        try:
            reply = self.request(f"JDA|{self.field}={value}|", "ACK|ERR", idempotent=not value)
        except InDoubt:
            raise
        except DeviceError:  # not sent (no connection)
            self._fresh, self._field_doubt = was
            raise
        if reply != "ACK":
            self._fresh, self._field_doubt = was
            return False
        try:
            moved = self._gst()
        except DeviceError as exc:
            raise InDoubt(f"videojet: loaded, but the count after it is unknown ({exc})") from None
        if moved == 0 or (moved > 0 and not value):  # nothing printed since the JDA, or emptied (no reset)
            self._fresh, self._field_doubt = value or None, KNOWN
        elif moved > 0:  # the job printed in the window, or waits for the next print: after it, gone
            self._field_doubt = ONE_PRINT
        return True

    def _load_next(self, counted: bool = False) -> None:
        if self._fresh is not None or not self._fifo or time.monotonic() < self._load_at:
            return
        try:
            ok = self._write(self._fifo[0], counted)
        except InDoubt:
            self._fifo.popleft()  # maybe in the field: never loaded again (it would print twice)
            raise
        if ok:
            self._fifo.popleft()
        else:
            self._load_at = time.monotonic() + LOAD_RETRY_S
            self.alarm("LOAD_REFUSED", f"videojet: JDA of the next job answered ERR (no job selected? field"
                       f" {self.field!r}); retried every {LOAD_RETRY_S:g} s, prints meanwhile carry no job")

    def _poll_once(self) -> None:
        with self._q:
            self._gst()
            self._load_next(counted=True)

    def _poller(self) -> None:
        while not self.shut:
            time.sleep(self.poll_s)
            if self.closed:
                continue  # the owner reconnects; prints meanwhile are counted at the next GST
            try:
                self._poll_once()
            except DeviceError as exc:
                if not self.shut and not self.closed:
                    self.alarm("POLL_FAILED", str(exc))

    # --- the coder interface ---------------------------------------------------------------------------
    def _held(self) -> int:
        return len(self._fifo) + (self._fresh is not None)

    def push(self, code: str) -> int:
        """Queue one job; returns the jobs held (here and in the printer's field). DeviceError when
        refused (nothing queued), InDoubt when the printer's answer never came."""
        check_code(code)
        with self._q:
            if self._held() >= self.max_queue:
                raise DeviceError(f"coder refused PUSH: full ({self.max_queue} jobs held)")
            if self._fresh is None and not self._fifo:
                if not self._write(code):
                    raise DeviceError("coder refused PUSH: JDA answered ERR")
            else:
                if self.closed:
                    self._gst()  # reconnects, or says it cannot (nothing queued)
                self._fifo.append(code)
            return self._held()

    def clear(self) -> None:
        with self._q:
            self._fifo.clear()
            if not self._write(""):
                raise DeviceError(f"videojet refused CLEAR (emptying field {self.field!r}: is a job selected?):"
                                  " JDA answered ERR")
            with self._state:  # prints counted so far belong to what was cleared
                self.epoch += 1

    def depth(self) -> int:
        with self._q:
            self._gst()
            self._load_next(counted=True)
            return self._held()

    def buffered(self) -> int:
        if self.closed:
            return self.depth()
        with self._q:
            return self._held()

    def clear_faults(self) -> None:
        """CAF: clear every user-clearable fault (DeviceError if one remains)."""
        self._ok("CAF", "CAF (a fault is not user-clearable)", idempotent=True)

    def run(self) -> None:
        """SST|3|: put the printer online (DeviceError if it refuses: no job, a fault)."""
        self._ok("SST|3|", "SST|3| (running)", idempotent=True)


def check_coder_options(options: dict) -> dict:
    opts = check_timeout(known_options(options, {"timeout": ((int, float), 2.0), "field": (str, "SERIAL"),
                                                 "job": (str, ""), "poll_ms": ((int, float), 10),
                                                 "queue": (int, 64)}))
    for key in ("field", "job"):
        if any(c in "|=\r\n" for c in opts[key]) or not opts[key].isprintable() or not opts[key].isascii():
            raise ValueError(f"option {key!r} = {opts[key]!r}: printable ASCII without | or =")
    if not opts["field"]:
        raise ValueError("option 'field' must name the job's variable field")
    if not 1 <= opts["poll_ms"] <= 1000:
        raise ValueError(f"option 'poll_ms' = {opts['poll_ms']!r}: expected 1 to 1000 (ms)")
    if not 1 <= opts["queue"] <= 1024:
        raise ValueError(f"option 'queue' = {opts['queue']!r}: expected 1 to 1024 (jobs)")
    return opts


def open_coder(host: str, port: int, options: dict) -> VideojetCoder:
    return VideojetCoder(host, port, timeout=float(options["timeout"]), field=options["field"], job=options["job"],
                         poll_s=options["poll_ms"] / 1000, queue=options["queue"])
