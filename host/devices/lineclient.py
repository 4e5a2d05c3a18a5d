"""A line-protocol TCP client (docs/devices.md): one reader thread splits each line into an
unsolicited event, a reply to our one outstanding request, or garbage (an alarm).

The protocol has no request ids, so a reply is matched to a request by order alone: one request is
outstanding at a time and its reply must have the shape that request allows. Anything else — a
reply-shaped line with no request waiting, a reply of the wrong shape, no reply within the timeout —
leaves the connection in doubt (a late reply may still be on its way). The next request then opens
a fresh connection first, so no stale reply can ever answer it."""

from __future__ import annotations

import collections
import re
import socket
import threading
import time

GS = "\x1d"  # GS1 element strings separate variable-length fields with GS
GS_ESCAPE = "\\x1d"  # ... which travels on a text line as these 4 characters (never in GS1's character set)
MAX_LINE = 512  # bytes before the newline; a longer line is discarded up to its newline (docs/devices.md)
MAX_EVENTS = 4096  # unsolicited lines kept until the owner takes them; more are dropped with an alarm
MAX_ALARMS = 100  # alarms kept until the owner takes them; the rest are counted per kind
ALARM_BURST = 10  # alarms of one kind kept per second; beyond, counted and said once a second


def escape_code(code: str) -> str:
    """The ONE escape of the text line protocols (drivers and simulated devices alike)."""
    return code.replace(GS, GS_ESCAPE)


def unescape_code(text: str) -> str:
    return text.replace(GS_ESCAPE, GS).replace("\\x1D", GS)


class DeviceError(RuntimeError):
    """The device refused (its `ERR …` reply), or cannot be reached."""


class InDoubt(DeviceError):
    """No reply, or one that cannot be ours: the device may or may not have done it."""


class LineSplitter:
    """Bytes → lines, in linear time and bounded memory: a line longer than `max_line` bytes is
    discarded up to its terminator `eol` (one byte) and reported once as `TOO_LONG` (never kept)."""

    TOO_LONG = None  # what feed() yields for a discarded line

    def __init__(self, max_line: int = MAX_LINE, eol: bytes = b"\n"):
        self.max_line, self.eol = max_line, eol
        self._buf = bytearray()
        self._discarding = False

    def feed(self, chunk: bytes) -> list[bytes | None]:
        out: list[bytes | None] = []
        start = 0
        if self._discarding:
            nl = chunk.find(self.eol)
            if nl < 0:
                return out
            self._discarding, start = False, nl + 1
        buf = self._buf
        searched = len(buf)  # the kept tail holds no newline
        buf += memoryview(chunk)[start:]
        begin = 0
        while (nl := buf.find(self.eol, searched)) >= 0:
            out.append(bytes(buf[begin:nl]) if nl - begin <= self.max_line else self.TOO_LONG)
            begin = searched = nl + 1
        del buf[:begin]
        if len(buf) > self.max_line:
            buf.clear()
            self._discarding = True
            out.append(self.TOO_LONG)
        return out


class LineClient:
    UNSOLICITED: tuple[str, ...] = ()  # first words of the device's unsolicited lines
    REPLIES: tuple[str, ...] = ("OK", "ERR")  # first words of replies
    EOL = b"\n"  # line terminator, both ways (a device protocol ending lines in CR sets b"\r")
    SEP = " "  # what ends a line's first word
    RAW_OK = ""  # characters sent unescaped although not printable (a protocol that carries GS as is)
    ANY_EOL = False  # received lines may end in LF, CR or CR LF (a reader's result output)

    def __init__(self, host: str, port: int, timeout: float = 2.0, max_line: int = MAX_LINE):
        self.address, self.timeout, self.max_line = (host, port), timeout, max_line
        self._lock = threading.Lock()  # one request at a time
        self._state = threading.Lock()  # guards everything below, shared with the reader thread
        self._events: collections.deque = collections.deque()
        self._alarms: collections.deque = collections.deque()
        self._alarms_dropped: collections.Counter = collections.Counter()
        self._alarm_window: dict[str, tuple[float, int]] = {}  # kind -> (window start, alarms in it)
        self._counted_at: dict[str, float] = {}  # kind -> when its count was last said
        self._waiting: tuple[socket.socket, threading.Event, list] | None = None
        self.in_doubt = False
        self.closed = False  # no live connection (lost, or closed by the owner)
        self.shut = False  # closed by the owner: never reopened
        self.sock: socket.socket | None = None
        self._connect()

    # --- connection --------------------------------------------------------------------------
    def _connect(self) -> None:
        with self._state:  # retire the old connection first: its reader then knows it is not current
            old, self.sock, self.closed = self.sock, None, True
        if old is not None:
            _close(old)
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError as exc:
            raise DeviceError(f"{self.name} at {self.address[0]}:{self.address[1]}: {exc}") from None
        sock.settimeout(None)
        with self._state:
            shut = self.shut  # closed by the owner meanwhile
            if not shut:
                self.sock, self.closed, self.in_doubt = sock, False, False
        if shut:
            _close(sock)
            raise DeviceError(f"{self.name}: closed")
        threading.Thread(target=self._read, args=(sock,), daemon=True, name=self.name).start()

    def reconnect(self, why: str) -> None:
        """A fresh connection: nothing in flight on the old one can reach us any more."""
        if self.shut:
            raise DeviceError(f"{self.name}: closed")
        self.alarm("RESYNC", f"{self.name}: reconnecting ({why})")
        self._connect()

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def close(self) -> None:
        with self._state:
            sock, self.closed, self.shut = self.sock, True, True
        if sock is not None:
            _close(sock)

    # --- reader thread -----------------------------------------------------------------------
    def _read(self, sock: socket.socket) -> None:
        splitter = LineSplitter(self.max_line, self.EOL)
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            now = time.monotonic()
            if self.ANY_EOL:
                chunk = chunk.replace(b"\r", b"\n")  # CR LF: an empty line, skipped
            for raw in splitter.feed(chunk):
                if raw is LineSplitter.TOO_LONG:
                    self.on_too_long(sock)
                elif raw:
                    self._line(sock, raw, now)
        with self._state:
            # the current connection, not closed by the owner (`closed` may also mean "not ready yet")
            lost = sock is self.sock and not self.shut
            if lost:
                self.closed = True
        if lost:
            self.alarm("DISCONNECTED", f"{self.name}: the device closed the connection")

    def on_too_long(self, sock: socket.socket) -> None:
        """A line over `max_line` bytes was discarded (never kept)."""
        self.alarm("TOO_LONG", f"{self.name}: line longer than {self.max_line} bytes discarded")

    def _line(self, sock: socket.socket, raw: bytes, now: float) -> None:
        if self.EOL == b"\n":
            raw = raw[:-1] if raw.endswith(b"\r") else raw
        else:  # CR-terminated: the LF of a CR LF pair starts the next line and is ignored
            raw = raw[1:] if raw.startswith(b"\n") else raw
        if not raw:
            return
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            line = None
        if line is None or not line.isprintable():
            self.alarm("MALFORMED", f"{self.name}: not a printable ASCII line: {raw[:80]!r}")
            return
        word = line.split(self.SEP, 1)[0]
        if word in self.UNSOLICITED:
            self.on_event(line, now)
        elif word in self.REPLIES:
            with self._state:
                waiting = self._waiting
                mine = waiting is not None and waiting[0] is sock and not waiting[2]
                if mine:
                    waiting[2].append(line)
                    self._waiting = None
                elif sock is self.sock:
                    self.in_doubt = True
            if mine:
                waiting[1].set()
            elif sock is self.sock:
                self.alarm("UNEXPECTED_REPLY", f"{self.name}: {line[:80]!r} answers no request (a late or "
                           "stray reply); the next request reconnects first")
        else:
            self.alarm("MALFORMED", f"{self.name}: unknown line {line[:80]!r}")

    def on_event(self, line: str, t: float) -> None:
        """An unsolicited line: kept for `drain()` (bounded; overridden by drivers that parse)."""
        self.keep_event((line, t))

    def keep_event(self, item) -> None:
        with self._state:
            full = len(self._events) >= MAX_EVENTS
            if not full:
                self._events.append(item)
        if full:
            self.alarm("EVENTS_DROPPED", f"{self.name}: {MAX_EVENTS} unsolicited lines not taken yet; "
                       "a newer one is dropped")

    # --- owner's side ------------------------------------------------------------------------
    def alarm(self, kind: str, detail: str) -> None:
        now = time.monotonic()
        with self._state:
            start, n = self._alarm_window.get(kind, (now, 0))
            if now - start >= 1.0:
                start, n = now, 0
            self._alarm_window[kind] = (start, n + 1)
            if n < ALARM_BURST and len(self._alarms) < MAX_ALARMS:
                self._alarms.append((kind, detail))
            else:
                self._alarms_dropped[kind] += 1

    def alarms(self) -> list[tuple[str, str]]:
        """(kind, detail) of the alarms since the last call: at most ALARM_BURST of a kind a second
        (a device spewing garbage must not flood the ledger), the rest one count per kind a second."""
        now = time.monotonic()
        with self._state:
            out, self._alarms = list(self._alarms), collections.deque()
            due = [k for k, n in self._alarms_dropped.items() if n and now - self._counted_at.get(k, -1.0) >= 1.0]
            counts = [(k, self._alarms_dropped.pop(k)) for k in due]
            self._counted_at.update((k, now) for k in due)
        out += [(kind, f"{self.name}: {n} more {kind} alarm(s) not listed") for kind, n in counts]
        return out

    def drain(self) -> list:
        with self._state:
            out, self._events = list(self._events), collections.deque()
        return out

    def request(self, line: str, expect: str, idempotent: bool = False) -> str:
        """Send one command and return its reply, which must fully match the regex `expect`.
        InDoubt when no such reply came; an idempotent command is retried once on a fresh connection."""
        plain = line.translate({ord(c): None for c in self.RAW_OK}) if self.RAW_OK else line
        if not (line.isascii() and plain.isprintable()) or len(line) > self.max_line:
            raise DeviceError(f"{self.name}: refusing to send a command that is not one printable "
                              f"ASCII line of at most {self.max_line} bytes: {line[:40]!r}")  # nothing sent
        with self._lock:
            try:
                return self._request(line, expect)
            except InDoubt:
                if not idempotent:
                    raise
            return self._request(line, expect)

    def _request(self, line: str, expect: str) -> str:
        cmd = line.split(self.SEP, 1)[0]
        if self.closed or self.in_doubt:
            self.reconnect("connection lost" if self.closed else "replies were in doubt")
        done, slot = threading.Event(), []
        with self._state:
            sock = self.sock
            self._waiting = (sock, done, slot)
        try:
            sock.sendall(line.encode("ascii") + self.EOL)
        except OSError as exc:
            self._doubt()
            raise InDoubt(f"{self.name}: {cmd} not sent: {exc}") from None
        if not done.wait(self.timeout):
            self._doubt()
            self.alarm("NO_REPLY", f"{self.name}: no reply to {cmd} within {self.timeout}s")
            raise InDoubt(f"{self.name}: no reply to {cmd} within {self.timeout}s (done or not: unknown)")
        reply = slot[0]
        if not re.fullmatch(expect, reply):
            self._doubt()
            self.alarm("UNEXPECTED_REPLY", f"{self.name}: {reply[:80]!r} is no reply to {cmd}")
            raise InDoubt(f"{self.name}: {reply[:80]!r} is no reply to {cmd} (done or not: unknown)")
        return reply

    def _doubt(self) -> None:
        with self._state:
            self._waiting = None
            self.in_doubt = True


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
