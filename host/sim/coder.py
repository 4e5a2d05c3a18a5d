"""The simulated coder (printer): a message buffer the host fills ahead over TCP; each trigger from
the line prints the job at the head of the buffer, sometimes badly.

`CoderModel` is what every emulated coder shares (the buffer, the print faults, `trigger()` the line
model calls); a subclass adds only its wire protocol: `SimCoder` speaks Serialine's line protocol,
`videojet_emu.VideojetEmu` the Videojet/Zipher text protocol (docs/devices.md).

Serialine line protocol (ASCII, one command per line, replies one line):
  host> PUSH <code>     coder< OK <depth>   | ERR full | ERR bad code
                        (code: printable ASCII without spaces; GS travels as the 4 characters \\x1d)
  host> CLEAR           coder< OK 0
  host> DEPTH           coder< OK <depth>
  (a command line over 512 bytes, or not ASCII: coder< ERR line too long | ERR not ascii)
  coder< PRINTED <code>  unsolicited, after each trigger that ran a job (the coder cannot see a bad print)
  coder< EMPTY           unsolicited, a trigger found the buffer empty (nothing printed)

Fault injection for the host's reply matching: `stray_reply` (per print) sends an unsolicited
`OK <depth>` after PRINTED (its own random stream); `reply_delay_s` (LineServer) delays replies.
For the host's print cross-check: `swap` (per print, its own random stream) or `swap_at` (print
numbers from 1) prints the SECOND job of the buffer instead of the head, and says so truthfully
(`PRINTED <that code>`): the coder printed a different code than the host bound to the pack.
`drop()` closes the host's connection (the device side of a dropped connection)."""

from __future__ import annotations

import collections
import random
import threading

from ..devices.lineclient import GS, escape_code, unescape_code
from .tcpline import LineServer

MAX_DEPTH = 64
MAX_CODE = 120
escape, unescape = escape_code, unescape_code  # the one escape (host/devices/lineclient.py); old names kept


def valid_code(code: str) -> bool:
    return bool(code) and len(code) <= MAX_CODE and all(c == GS or "!" <= c <= "~" for c in code)


class CoderModel(LineServer):
    """The printing part of an emulated coder; subclasses speak a protocol (`handle`) and say what
    a print or an empty trigger tells the host (`on_printed`, `on_empty`)."""

    def __init__(self, misprint=0.0, skip=0.0, smear=0.0, stray_reply=0.0, swap=0.0, swap_at=(), seed=0,
                 images=None, **kw):
        super().__init__(**kw)
        self.images = images  # host/verify/imager.Imager: each print becomes an image (the camera reads it)
        self.rates = (("misprint", misprint), ("skip", skip), ("smear", smear))
        self.rng = random.Random(seed)
        self.stray_reply, self._stray_rng = stray_reply, random.Random(f"stray-{seed}")
        self.swap, self.swap_at, self._swap_rng = swap, frozenset(swap_at), random.Random(f"swap-{seed}")
        self.buffer: collections.deque[str] = collections.deque()
        self._buf_lock = threading.Lock()
        self.jobs_printed = 0
        self.empty_triggers = 0
        self.faults = collections.Counter()

    @property
    def depth(self) -> int:
        with self._buf_lock:
            return len(self.buffer)

    def _take(self) -> tuple[str, str] | None:
        """The job this trigger prints and how ("" the head, "swap" the second job, "duplicate" data
        printed before), or None when nothing is printed."""
        with self._buf_lock:
            if not self.buffer:
                return None
            n = self.jobs_printed + 1
            swapped = len(self.buffer) > 1 and (n in self.swap_at or (self.swap and self._swap_rng.random() < self.swap))
            if swapped:
                code = self.buffer[1]
                del self.buffer[1]
                return code, "swap"
            return self.buffer.popleft(), ""

    def trigger(self, t_us: int) -> tuple[str, str] | None:
        """The line fired the coder: (code, fault) for the job printed, fault "" when it went well;
        None when nothing was printed."""
        job = self._take()
        if job is None:
            self.empty_triggers += 1
            self.on_empty()
            return None
        code, how = job
        fault, x = "", self.rng.random()
        for name, rate in self.rates:
            if x < rate:
                fault = name
                break
            x -= rate
        if how:
            self.faults[how] += 1
        self.faults[fault or "ok"] += 1
        self.jobs_printed += 1
        fault = fault or ("duplicate" if how == "duplicate" else "")
        if self.images is not None:
            self.images.prepare(code, fault, self.jobs_printed)
        self.on_printed(code)
        if self.stray_reply and self._stray_rng.random() < self.stray_reply:
            self.faults["stray_reply"] += 1
            self.send(self.stray_line())
        return code, fault

    def on_printed(self, code: str) -> None:  # pragma: no cover - overridden
        pass

    def on_empty(self) -> None:  # pragma: no cover - overridden
        pass

    def stray_line(self) -> str:  # pragma: no cover - overridden
        return "ERR"


class SimCoder(CoderModel):
    """Serialine's coder line protocol (above)."""

    def handle(self, line: str) -> str:
        cmd, _, arg = line.partition(" ")
        with self._buf_lock:
            if cmd == "PUSH":
                arg = unescape(arg)
                if not valid_code(arg):
                    return "ERR bad code"
                if len(self.buffer) >= MAX_DEPTH:
                    return "ERR full"
                self.buffer.append(arg)
                return f"OK {len(self.buffer)}"
            if cmd == "CLEAR":
                self.buffer.clear()
                return "OK 0"
            if cmd == "DEPTH":
                return f"OK {len(self.buffer)}"
        return "ERR unknown command"

    def on_printed(self, code: str) -> None:
        self.send(f"PRINTED {escape(code)}")

    def on_empty(self) -> None:
        self.send("EMPTY")

    def stray_line(self) -> str:
        return f"OK {self.depth}"
