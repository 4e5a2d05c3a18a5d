"""Cognex DataMan reader driver: DMCC on the reader's TCP command port (23 by default), results as
the reader's formatted output on the same connection (docs/devices.md, "Cognex DataMan").

DMCC (DataMan Control Commands): a command is `||<checksum>:<command-id>>COMMAND [args]` + CR LF;
with `COM.DMCC-RESPONSE 1` (extended) the reader answers `||<checksum>:<command-id>[<status>]<value>`
(status 0 no error, 100–105 errors). Every command carries an id, so a reply is matched by id, never
by order: a late reply answers nothing and is an alarm, not a wrong answer. A reader-initiated read
string may come as status 1; any line not starting with `||` is the formatted result output.

On each connect the driver switches the reader to extended responses, sends the `setup` commands
(each must answer status 0) and checks each `expect` parameter with GET; a refusal or a different
value is a one-line DeviceError naming the command and the reader's status, and nothing else is
sent."""

from __future__ import annotations

import itertools
import re
import socket
import threading

from .lineclient import DeviceError
from .registry import check_timeout, known_options
from .textreader import ReaderClient, ResultFormat

__all__ = ["DataMan", "STATUS", "check_reader_options", "open_reader"]

STATUS = {0: "no error", 1: "reader initiated read-string", 100: "unidentified error", 101: "command invalid",
          102: "parameter invalid", 103: "checksum incorrect", 104: "parameter rejected/altered due to reader state",
          105: "reader unavailable"}
_REPLY = re.compile(r"\|\|([0-9:]{0,24})\[(\d{1,3})\](.*)")
_COMMAND = re.compile(r"[A-Za-z][A-Za-z0-9.\-]*(?: [ -~]*)?")
_PARAM = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,63}")

# What the driver needs of the reader (docs/devices.md): DataMatrix enabled, and its formatted
# output as below (set in the Setup Tool's Data Formatting; the stored DMCC pages name no command
# for it, so the driver cannot set it and says so when a line does not match).
DEFAULT_SETUP = ["SET SYMBOL.DATAMATRIX ON"]
DEFAULT_EXPECT = {"SYMBOL.DATAMATRIX": "ON"}
DEFAULT_RESULT = r"(?P<grade>[^,]{0,8}),(?P<data>.*)"  # <ISO 15415 overall grade>,<symbology id><data>
DEFAULT_NO_READ = r"NOREAD"


class DataMan(ReaderClient):
    def __init__(self, host: str, port: int, fmt: ResultFormat, setup=(), expect=None, timeout: float = 2.0):
        self.setup, self.expect = list(setup), dict(expect or {})
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[socket.socket, threading.Event, list]] = {}
        self._optional: set[int] = set()  # ids whose reply may never come (the mode switch)
        self.device_type = ""
        super().__init__(host, port, fmt, timeout=timeout)

    def configure(self) -> None:
        self._send("SET COM.DMCC-RESPONSE 1", optional=True)  # silent mode may never answer it
        if self.get("COM.DMCC-RESPONSE") != "1":
            raise DeviceError("did not switch to extended DMCC responses (COM.DMCC-RESPONSE 1)")
        for cmd in self.setup:
            self.command(cmd)
        for param, want in self.expect.items():
            have = self.get(param)
            if have.strip('"').upper() != str(want).upper():
                raise DeviceError(f"{param} is {have[:40]!r}, the driver needs {want!r} (set it with the DataMan "
                                  f"Setup Tool, or add 'SET {param} {want}' to the camera's setup option)")
        self.device_type = self.get("DEVICE.TYPE")

    # --- commands ----------------------------------------------------------------------------
    def get(self, param: str) -> str:
        return self.command(f"GET {param}")

    def command(self, cmd: str) -> str:
        """Send one DMCC command; its value when the reader answered status 0, else DeviceError."""
        status, value = self._send(cmd)
        if status != 0:
            raise DeviceError(f"refused {cmd[:60]!r}: [{status}] {STATUS.get(status, 'unknown status')}")
        return value

    def _send(self, cmd: str, optional: bool = False) -> tuple[int, str]:
        if not (cmd.isascii() and cmd.isprintable()) or "||" in cmd or len(cmd) > 200:
            raise DeviceError(f"refusing to send {cmd[:40]!r}: not one printable ASCII DMCC command")
        with self._lock:
            n = next(self._ids)
            done, slot = threading.Event(), []
            with self._state:
                sock = self.sock
                if sock is None:
                    raise DeviceError("not connected")
                if optional:
                    self._optional.add(n)
                else:
                    self._pending[n] = (sock, done, slot)
            try:
                sock.sendall(f"||0:{n}>{cmd}\r\n".encode("ascii"))
            except OSError as exc:
                with self._state:
                    self._pending.pop(n, None)
                raise DeviceError(f"{cmd.split(' ')[0]} not sent: {exc}") from None
            if optional:
                return 0, ""
            got = done.wait(self.timeout)
            with self._state:
                self._pending.pop(n, None)
            if not got:
                self.alarm("NO_REPLY", f"{self.name}: no reply to {cmd[:40]!r} within {self.timeout}s")
                raise DeviceError(f"no reply to {cmd[:40]!r} within {self.timeout}s (is this a DataMan's DMCC port?)")
            return slot[0]

    def on_reply(self, sock: socket.socket, line: str, now: float) -> bool:
        if not line.startswith("||"):
            return False
        m = _REPLY.fullmatch(line)
        if m is None:
            self.alarm("MALFORMED", f"{self.name}: malformed DMCC reply {line[:80]!r}")
            return True
        status, value = int(m[2]), m[3]
        if status == 1:  # a read string the reader sent on its own: a result
            if not value.startswith("||"):
                self._line(sock, value.encode("ascii"), now)
            else:
                self.alarm("MALFORMED", f"{self.name}: malformed DMCC reply {line[:80]!r}")
            return True
        fields = m[1].split(":")
        n = int(fields[-1]) if len(fields) >= 2 and fields[-1].isdigit() and len(fields[-1]) <= 9 else None
        with self._state:
            waiting = self._pending.get(n) if n is not None else None
            mine = waiting is not None and waiting[0] is sock and not waiting[2]
            if mine:
                waiting[2].append((status, value))
            optional = n in self._optional
            self._optional.discard(n)
        if mine:
            waiting[1].set()
        elif not optional:
            self.alarm("UNEXPECTED_REPLY", f"{self.name}: {line[:80]!r} answers no command waiting (a late or stray reply)")
        return True


def check_reader_options(options: dict) -> dict:
    opts = check_timeout(known_options(options, {
        "setup": (list, DEFAULT_SETUP), "expect": (dict, DEFAULT_EXPECT),
        "result": (str, DEFAULT_RESULT), "no_read": (str, DEFAULT_NO_READ),
        "trigger_count": ((str, type(None)), None), "timeout": ((int, float), 2.0)}))
    for cmd in opts["setup"]:
        if not isinstance(cmd, str) or not _COMMAND.fullmatch(cmd) or len(cmd) > 200:
            raise ValueError(f"option 'setup': {str(cmd)[:40]!r} is not one DMCC command (e.g. \"SET SYMBOL.DATAMATRIX ON\")")
    for param, value in opts["expect"].items():
        if not _PARAM.fullmatch(str(param)) or not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValueError(f"option 'expect': {str(param)[:40]!r} = {value!r}: expected PARAMETER.NAME = \"value\"")
    ResultFormat(opts["result"], opts["no_read"], opts["trigger_count"])
    return opts


def open_reader(host: str, port: int, opts: dict) -> DataMan:
    fmt = ResultFormat(opts["result"], opts["no_read"], opts["trigger_count"])
    return DataMan(host, port, fmt, setup=opts["setup"], expect=opts["expect"], timeout=float(opts["timeout"]))
