"""Keyence SR series reader driver (SR-750/SR-1000/SR-2000/SR-X): commands and read data on the
reader's TCP port (9004 by default), docs/devices.md "Keyence SR series".

A command is `CMD[,param…]` + CR (the driver adds LF, which the reader ignores); the reader answers
`OK,CMD[,value…]` or `ER,CMD,ee` (ee: the reader's error code), each ended by CR. One command is
outstanding at a time and its reply must name it, so a reply to another command is never taken
for it. Every other line is read data: `<symbol ID><read data>:<ISO/IEC 15415 result>` with the
reader's "Append" settings as docs/devices.md says, and its read-error string (default `ERROR`)
for a no-read.

On each connect the driver asks `KEYENCE` (the reader answers `OK,KEYENCE,<model>,<versions…>`:
proof that this is an SR reader's command port, and its model), then sends the `setup` commands
(each must answer `OK`); a refusal is a one-line DeviceError naming the command, the reader's
error code and its meaning. The driver never sends LON/LOFF itself: the reader is triggered by the
line (its IN terminal), not by the host."""

from __future__ import annotations

import re
import socket
import threading

from .lineclient import DeviceError
from .registry import check_timeout, known_options
from .textreader import ReaderClient, ResultFormat

__all__ = ["KeyenceSR", "check_reader_options", "open_reader"]

_REPLY = re.compile(r"(OK|ER),([A-Z0-9]{1,8})(?:,(.*))?")
_COMMAND = re.compile(r"[A-Z][A-Z0-9]{0,7}(?:,[ -~]*)?")

# the SR-X command error codes (docs/devices.md names the source)
ERRORS = {"00": "undefined command", "01": "wrong command format (number of parameters)",
          "02": "parameter 1 out of range", "03": "parameter 2 out of range", "04": "parameter 2 is not hex",
          "05": "parameter 2 hex out of range", "10": "preset data invalid", "11": "area data invalid",
          "12": "file does not exist", "13": "%Tmm-LON,bb: mm out of range", "14": "%Tmm-KEYENCE: no communication",
          "20": "not allowed in the present state", "21": "buffer overflow", "22": "parameter load/save error",
          "23": "AutoID Network Navigator connected: command not accepted", "99": "reader fault (call Keyence)"}
DEFAULT_SETUP: list[str] = []  # the append settings are set in AutoID Network Navigator (docs/devices.md)
DEFAULT_RESULT = r"(?P<data>.*):(?P<grade>[^:]{1,8})"  # <symbol ID><read data>:<ISO/IEC 15415 overall grade>
DEFAULT_NO_READ = r"ERROR"


class KeyenceSR(ReaderClient):
    def __init__(self, host: str, port: int, fmt: ResultFormat, setup=(), timeout: float = 2.0):
        self.setup = list(setup)
        self._cmd_waiting: tuple | None = None
        self.model = ""
        super().__init__(host, port, fmt, timeout=timeout)

    @property
    def name(self) -> str:
        return "keyence-sr"

    def configure(self) -> None:
        self.model = self.command("KEYENCE").split(",", 1)[0]
        for cmd in self.setup:
            self.command(cmd)

    def command(self, cmd: str) -> str:
        """Send one command; the values after `OK,CMD,` (may be empty), else DeviceError."""
        if not _COMMAND.fullmatch(cmd):
            raise DeviceError(f"refusing to send {cmd[:40]!r}: not one SR command (CMD[,param…])")
        word = cmd.split(",", 1)[0]
        with self._lock:
            done, slot = threading.Event(), []
            with self._state:
                sock = self.sock
                if sock is None:
                    raise DeviceError("not connected")
                self._cmd_waiting = (sock, word, done, slot)
            try:
                sock.sendall(cmd.encode("ascii") + b"\r\n")
            except OSError as exc:
                raise DeviceError(f"{word} not sent: {exc}") from None
            got = done.wait(self.timeout)
            with self._state:
                self._cmd_waiting = None
            if not got:
                self.alarm("NO_REPLY", f"{self.name}: no reply to {word} within {self.timeout}s")
                raise DeviceError(f"no reply to {word} within {self.timeout}s (is this an SR reader's command port?)")
            kind, value = slot[0]
            if kind == "ER":
                why = ERRORS.get(value, "unknown error code")
                raise DeviceError(f"refused {cmd[:60]!r}: ER,{word},{value[:8]} ({why})")
            return value

    def on_reply(self, sock: socket.socket, line: str, now: float) -> bool:
        m = _REPLY.fullmatch(line)
        if m is None:
            return False
        kind, word, value = m[1], m[2], m[3] or ""
        with self._state:
            w = self._cmd_waiting
            mine = w is not None and w[0] is sock and w[1] == word and not w[3]
            if mine:
                w[3].append((kind, value))
        if mine:
            w[2].set()
        else:
            self.alarm("UNEXPECTED_REPLY", f"{self.name}: {line[:80]!r} answers no command waiting (a late or stray reply)")
        return True


def check_reader_options(options: dict) -> dict:
    opts = check_timeout(known_options(options, {
        "setup": (list, DEFAULT_SETUP), "result": (str, DEFAULT_RESULT), "no_read": (str, DEFAULT_NO_READ),
        "trigger_count": ((str, type(None)), None), "timeout": ((int, float), 2.0)}))
    for cmd in opts["setup"]:
        if not isinstance(cmd, str) or not _COMMAND.fullmatch(cmd):
            raise ValueError(f"option 'setup': {str(cmd)[:40]!r} is not one SR command (CMD[,param…], e.g. \"WP,…\")")
        if cmd.split(",", 1)[0] in ("LON", "LOFF"):
            raise ValueError("option 'setup': LON/LOFF would trigger a read the line did not ask for")
    ResultFormat(opts["result"], opts["no_read"], opts["trigger_count"])
    return opts


def open_reader(host: str, port: int, opts: dict) -> KeyenceSR:
    fmt = ResultFormat(opts["result"], opts["no_read"], opts["trigger_count"])
    return KeyenceSR(host, port, fmt, setup=opts["setup"], timeout=float(opts["timeout"]))
