"""The simulated coder (printer): a message buffer the host fills ahead over TCP; each trigger from
the line prints the job at the head of the buffer, sometimes badly.

Line protocol (ASCII, one command per line, replies one line):
  host> PUSH <code>     coder< OK <depth>   | ERR full | ERR bad code
                        (code: printable ASCII without spaces; GS travels as the 4 characters \x1d)
  host> CLEAR           coder< OK 0
  host> DEPTH           coder< OK <depth>
  (a command line over 512 bytes, or not ASCII: coder< ERR line too long | ERR not ascii)
  coder< PRINTED <code>  unsolicited, after each trigger that ran a job (the coder cannot see a bad print)
  coder< EMPTY           unsolicited, a trigger found the buffer empty (nothing printed)

Fault injection for the host's reply matching: `stray_reply` (per print) sends an unsolicited
`OK <depth>` after PRINTED (its own random stream); `reply_delay_s` (LineServer) delays replies."""

from __future__ import annotations

import collections
import random
import threading

from .tcpline import LineServer

MAX_DEPTH = 64
MAX_CODE = 120
GS = "\x1d"  # GS1 element strings separate variable-length fields with GS
GS_ESCAPE = "\\x1d"  # ... which travels on a text line as these 4 characters (docs/devices.md)


def escape(code: str) -> str:
    return code.replace(GS, GS_ESCAPE)


def unescape(text: str) -> str:
    return text.replace(GS_ESCAPE, GS)


class SimCoder(LineServer):
    def __init__(self, misprint=0.0, skip=0.0, smear=0.0, stray_reply=0.0, seed=0, **kw):
        super().__init__(**kw)
        self.rates = (("misprint", misprint), ("skip", skip), ("smear", smear))
        self.rng = random.Random(seed)
        self.stray_reply, self._stray_rng = stray_reply, random.Random(f"stray-{seed}")
        self.buffer: collections.deque[str] = collections.deque()
        self._buf_lock = threading.Lock()
        self.jobs_printed = 0
        self.empty_triggers = 0
        self.faults = collections.Counter()

    def handle(self, line: str) -> str:
        cmd, _, arg = line.partition(" ")
        with self._buf_lock:
            if cmd == "PUSH":
                arg = unescape(arg)
                if not arg or len(arg) > MAX_CODE or not all(c == GS or "!" <= c <= "~" for c in arg):
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

    @property
    def depth(self) -> int:
        with self._buf_lock:
            return len(self.buffer)

    def trigger(self, t_us: int) -> tuple[str, str] | None:
        """The line fired the coder: (code, fault) for the job printed, fault "" when it went well;
        None when the buffer was empty."""
        with self._buf_lock:
            code = self.buffer.popleft() if self.buffer else None
        if code is None:
            self.empty_triggers += 1
            self.send("EMPTY")
            return None
        fault, x = "", self.rng.random()
        for name, rate in self.rates:
            if x < rate:
                fault = name
                break
            x -= rate
        self.faults[fault or "ok"] += 1
        self.jobs_printed += 1
        self.send(f"PRINTED {escape(code)}")
        if self.stray_reply and self._stray_rng.random() < self.stray_reply:
            self.faults["stray_reply"] += 1
            self.send(f"OK {self.depth}")
        return code, fault
