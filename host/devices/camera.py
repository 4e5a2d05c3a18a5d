"""Camera (code reader) driver: decode results arrive unsolicited, one per trigger, in order.
Lines are parsed on arrival; a malformed one is an alarm and is not kept (docs/devices.md)."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from .lineclient import DeviceError, LineClient, unescape_code

_GRADE = re.compile(r"^(?:[ABCDF]|[0-4](?:\.\d{1,2})?)$")
MAX_DATA = 200
RECONNECT_EVERY_S = 1.0


class CameraLineError(ValueError):
    pass


@dataclass(frozen=True)
class CameraResult:
    n: int  # trigger number, counted by the camera from 1
    grade: str | None  # ISO/IEC 15415 grade, None for a no-read
    data: str | None  # symbology identifier + data (GS as 0x1D), None for a no-read
    t: float = 0.0  # host monotonic arrival time, s


def parse_line(line: str, t: float = 0.0) -> CameraResult:
    """`READ <n> <grade> <data>` | `NOREAD <n>` → CameraResult; CameraLineError on anything else."""
    if not isinstance(line, str) or not line.isascii():
        raise CameraLineError(f"camera line is not ASCII: {line[:80]!r}")
    parts = line.rstrip("\r\n").split(" ", 3)
    kind = parts[0]
    if kind == "NOREAD" and len(parts) == 2:
        return CameraResult(_n(parts[1], line), None, None, t)
    if kind == "READ" and len(parts) == 4:
        return checked(_n(parts[1], line), parts[2], unescape_code(parts[3]), line, t)
    raise CameraLineError(f"malformed camera line {line[:80]!r}")


def checked(n: int, grade: str, data: str, line: str, t: float = 0.0) -> CameraResult:
    """A read result whose grade and data are what the agent may act on (every reader driver's rule)."""
    if not _GRADE.match(grade) or (grade[0].isdigit() and float(grade) > 4.0):
        raise CameraLineError(f"bad grade {grade[:10]!r} in {line[:80]!r}")
    if not data or len(data) > MAX_DATA or not all(c == "\x1d" or " " < c < "\x7f" for c in data):
        raise CameraLineError(f"bad data in {line[:80]!r}")
    return CameraResult(n, grade, data, t)


def _n(text: str, line: str) -> int:
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise CameraLineError(f"bad trigger number {text[:12]!r} in {line[:80]!r}")
    return int(text)


class Reopening:
    """For a reader driver (a LineClient): `results()` reopens a lost connection in the background,
    at most once a second, so the agent's loop never stalls on a dead reader."""

    _next_reconnect = 0.0

    def results(self) -> tuple[list[CameraResult], list[tuple[str, str]]]:
        """Results received so far, and (kind, detail) of the reader's alarms meanwhile. A lost
        connection is reopened (at most once a second); results sent meanwhile are lost, and the
        correlator sees the gap in their numbers (or, for a driver that counts, units with no result)."""
        if self.closed and not self.shut and time.monotonic() >= self._next_reconnect:
            self._next_reconnect = float("inf")  # one attempt at a time
            threading.Thread(target=self._reopen, daemon=True).start()  # never stalls the agent's loop
        return self.drain(), self.alarms()

    def _reopen(self) -> None:
        try:
            self.reconnect("connection lost")
        except DeviceError as exc:
            self.alarm("DISCONNECTED", str(exc))
        self._next_reconnect = time.monotonic() + RECONNECT_EVERY_S


class Camera(Reopening, LineClient):
    UNSOLICITED = ("READ", "NOREAD")
    REPLIES = ("PONG", "ERR")

    def on_event(self, line: str, t: float) -> None:
        try:
            self.keep_event(parse_line(line, t))
        except CameraLineError as exc:
            self.alarm("MALFORMED", f"camera: {exc}")

    def ping(self) -> None:
        self.request("PING", "PONG", idempotent=True)
