"""A line-protocol TCP client: one reader thread splits replies (answers to our commands) from
unsolicited lines (events), so a request never swallows an event and vice versa."""

from __future__ import annotations

import queue
import socket
import threading

GS_ESCAPE = "\\x1d"  # the GS separator inside a code on a text line (never in GS1's character set)


def escape_code(code: str) -> str:
    return code.replace("\x1d", GS_ESCAPE)


def unescape_code(text: str) -> str:
    return text.replace(GS_ESCAPE, "\x1d").replace("\\x1D", "\x1d")


class DeviceError(RuntimeError):
    pass


class LineClient:
    UNSOLICITED: tuple[str, ...] = ()

    def __init__(self, host: str, port: int, timeout: float = 2.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(None)
        self.timeout = timeout
        self.replies: queue.Queue[str] = queue.Queue()
        self.events: queue.Queue[tuple[str, float]] = queue.Queue()
        self._lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._read, daemon=True, name=type(self).__name__).start()

    def _read(self):
        import time
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                now = time.monotonic()
                for raw in lines:
                    line = raw.decode("ascii", "replace").rstrip("\r")
                    if line.split(" ", 1)[0] in self.UNSOLICITED:
                        self.events.put((line, now))
                    else:
                        self.replies.put(line)
        except OSError:
            pass
        self.closed = True

    def request(self, line: str) -> str:
        with self._lock:
            self.sock.sendall(line.encode("ascii") + b"\n")
            try:
                return self.replies.get(timeout=self.timeout)
            except queue.Empty:
                raise DeviceError(f"no reply to {line.split(' ', 1)[0]} within {self.timeout}s") from None

    def drain(self) -> list[tuple[str, float]]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
