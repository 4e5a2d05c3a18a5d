"""The configurable text reader driver, and what every vendor reader driver shares (docs/devices.md).

A reader pushes one line per trigger: a result, a no-read, or (for a vendor protocol) a command
reply. `ResultFormat` turns a line into a CameraResult by two regexes: `result` (named groups
`grade`, `data`, optional `n` and `symbology`) and `no_read` (optional group `n`). Whatever fails
is alarm `MALFORMED`, never an exception.

Trigger numbers: with `trigger_count = "reader"` the reader numbers its results (group `n` in both
regexes); with `"driver"` (the default when `result` has no group `n`) the driver counts lines from
1, and every line it could not use — malformed, over-long — counts too: the unit it belonged to then
fails CORRELATION for a missing result instead of shifting the pairing of every unit after it.
Lines end in LF, CR or CR LF; a raw GS (0x1D) inside the data is kept (the escape `\\x1d` too)."""

from __future__ import annotations

import re
import socket

from .camera import CameraLineError, CameraResult, Reopening, checked
from .lineclient import MAX_LINE, DeviceError, LineClient, unescape_code
from .registry import check_timeout, known_options

__all__ = ["ResultFormat", "ReaderClient", "TextReader", "check_reader_options", "open_reader"]

GROUPS = {"n", "grade", "data", "symbology"}
MAX_PATTERN = 400


class ResultFormat:
    def __init__(self, result: str, no_read: str, trigger_count: str | None = None):
        self.result = _compile("result", result, required={"grade", "data"})
        self.no_read = _compile("no_read", no_read, required=set(), allowed={"n"})
        has_n = "n" in self.result.groupindex
        mode = trigger_count or ("reader" if has_n else "driver")
        if mode not in ("reader", "driver"):
            raise ValueError(f"option 'trigger_count' = {mode!r}: expected 'reader' or 'driver'")
        if mode == "reader" and not (has_n and "n" in self.no_read.groupindex):
            raise ValueError("option 'trigger_count' = 'reader' needs a group (?P<n>…) in both 'result' and 'no_read'")
        if mode == "driver" and (has_n or "n" in self.no_read.groupindex):
            raise ValueError("option 'trigger_count' = 'driver': 'result' and 'no_read' must not have a group n")
        self.reader_counts = mode == "reader"
        self.count = 0  # lines taken, when the driver counts

    def parse(self, line: str, t: float = 0.0) -> CameraResult:
        """One reader line → CameraResult; CameraLineError (one line) when it is neither format.
        When the driver counts, a line counts whatever it turns out to be."""
        if not self.reader_counts:
            self.count += 1
        if not isinstance(line, str) or not line.isascii():
            raise CameraLineError(f"reader line is not ASCII: {line[:80]!r}")
        m = self.no_read.fullmatch(line)
        if m:
            return CameraResult(self._n(m, line), None, None, t)
        m = self.result.fullmatch(line)
        if not m:
            raise CameraLineError(f"neither a result nor a no-read: {line[:80]!r}")
        data = unescape_code(m["data"] or "")
        sym = m.groupdict().get("symbology")
        if sym is not None:
            data = sym + data
        if not re.match(r"\][A-Za-z][0-9A-Za-z].", data, re.S):
            raise CameraLineError(f"no symbology identifier (]Cm) and data in {line[:80]!r}")
        return checked(self._n(m, line), m["grade"] or "", data, line, t)

    def skipped(self) -> None:
        """A line that never reached parse() (over-long): it still counts as a trigger."""
        if not self.reader_counts:
            self.count += 1

    def _n(self, m: re.Match, line: str) -> int:
        if not self.reader_counts:
            return self.count
        text = m["n"] or ""
        if not text.isdigit() or len(text) > 9 or int(text) < 1:
            raise CameraLineError(f"bad trigger number {text[:12]!r} in {line[:80]!r}")
        return int(text)


def _compile(key: str, pattern, required: set, allowed: set = GROUPS) -> re.Pattern:
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise ValueError(f"option {key!r}: expected a regular expression of 1 to {MAX_PATTERN} characters")
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"option {key!r} = {pattern[:60]!r} is not a regular expression: {exc}") from None
    groups = set(rx.groupindex)
    if groups - allowed:
        raise ValueError(f"option {key!r}: unknown group {sorted(groups - allowed)[0]!r} (allowed: {', '.join(sorted(allowed))})")
    if required - groups:
        raise ValueError(f"option {key!r}: needs the group (?P<{sorted(required - groups)[0]}>…)")
    return rx


class ReaderClient(Reopening, LineClient):
    """A vendor reader's connection: lines end in LF, CR or CR LF; `_line` sorts each into a reply
    (`on_reply`) or a result; results parse through `self.format`."""

    format: ResultFormat

    def __init__(self, host: str, port: int, fmt: ResultFormat, timeout: float = 2.0, max_line: int = MAX_LINE):
        self.format = fmt
        super().__init__(host, port, timeout=timeout, max_line=max_line)

    ANY_EOL = True

    def on_too_long(self, sock: socket.socket) -> None:
        if sock is self.sock:
            self.format.skipped()  # it was a trigger's line all the same
        super().on_too_long(sock)

    def _line(self, sock: socket.socket, raw: bytes, now: float) -> None:
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            line = None
        if line is not None and self.on_reply(sock, line, now):
            return
        if sock is not self.sock:
            return  # a result on a retired connection: its trigger is not counted on the new one
        if line is None or not line.replace("\x1d", "").isprintable():
            self.format.skipped()
            self.alarm("MALFORMED", f"{self.name}: not a printable ASCII line: {raw[:80]!r}")
            return
        try:
            self.keep_event(self.format.parse(line, now))
        except CameraLineError as exc:
            self.alarm("MALFORMED", f"{self.name}: {exc}")

    def on_reply(self, sock: socket.socket, line: str, now: float) -> bool:
        """True when `line` is a reply to a command (taken); the plain text reader has none."""
        return False

    def configure(self) -> None:
        """Set up / check the reader on a fresh connection; DeviceError (one line) when it refuses."""

    _closed = True
    _configuring = False

    @property
    def closed(self) -> bool:
        """No usable connection: lost, closed, or not configured yet (connected means configured)."""
        return self._closed or self._configuring

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value

    def _connect(self) -> None:
        """A refused configure() drops the new connection (it is retried like a lost one) and says
        why in one line."""
        self._configuring = True
        try:
            super()._connect()
            sock = self.sock
            try:
                self.configure()
            except DeviceError as exc:
                with self._state:
                    if self.sock is sock:
                        self.sock, self._closed = None, True
                try:
                    sock.close()
                except OSError:
                    pass
                raise DeviceError(f"{self.name} at {self.address[0]}:{self.address[1]}: {exc}") from None
        finally:
            self._configuring = False


class TextReader(ReaderClient):
    @property
    def name(self) -> str:
        return "text reader"


def check_reader_options(options: dict) -> dict:
    opts = check_timeout(known_options(options, {
        "result": ((str, type(None)), None), "no_read": ((str, type(None)), None),
        "trigger_count": ((str, type(None)), None),
        "timeout": ((int, float), 2.0)}))
    if opts["result"] is None or opts["no_read"] is None:
        raise ValueError("options 'result' and 'no_read' (regular expressions) are required")
    ResultFormat(opts["result"], opts["no_read"], opts["trigger_count"])
    return opts


def open_reader(host: str, port: int, opts: dict) -> TextReader:
    fmt = ResultFormat(opts["result"], opts["no_read"], opts["trigger_count"])
    return TextReader(host, port, fmt, timeout=float(opts["timeout"]))
