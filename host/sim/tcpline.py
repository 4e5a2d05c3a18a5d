"""A tiny line-oriented TCP server on loopback: one client at a time (a reconnecting host replaces
the old connection), one thread reading its commands, `send()` for unsolicited lines."""

from __future__ import annotations

import socket
import threading
import time

from ..devices.lineclient import LineSplitter


class LineServer:
    EOL = b"\n"  # line terminator both ways (an emulator of a CR-terminated protocol sets b"\r")
    TOO_LONG, NOT_ASCII = "ERR line too long", "ERR not ascii"  # replies to a line it cannot read

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._sock = socket.create_server((host, port))
        self.address = self._sock.getsockname()[:2]
        self._client: socket.socket | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.connected = threading.Event()
        self.reply_delay_s: list[float] = []  # fault injection: delay the next replies by these
        self._thread = threading.Thread(target=self._accept, daemon=True, name=type(self).__name__)

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self._closed = True
        for s in (self._client, self._sock):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def drop(self) -> None:
        """Fault: close the host's connection now (the server keeps listening: the host may reconnect)."""
        with self._lock:
            c, self._client = self._client, None
            self.connected.clear()
        if c is not None:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def send(self, line: str) -> bool:
        """Send one line to the client; False when nobody is connected (the line is lost)."""
        with self._lock:
            c = self._client
            if c is None:
                return False
            try:
                c.sendall(line.encode("ascii", "replace") + self.EOL)
                return True
            except OSError:
                self._client = None
                self.connected.clear()
                return False

    def handle(self, line: str) -> str | None:  # pragma: no cover - overridden
        return "ERR unknown command"

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._client is not None:
                    self._client.close()
                self._client = conn
            self.connected.set()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        splitter = LineSplitter(eol=self.EOL)  # bounded, linear, like the host's side
        while True:
            try:
                chunk = conn.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    if self._client is conn:
                        self._client = None
                        self.connected.clear()
                return
            for raw in splitter.feed(chunk):
                if raw is LineSplitter.TOO_LONG:
                    reply = self.TOO_LONG  # still one reply per line: the host stays in step
                else:
                    try:
                        text = raw.decode("ascii")  # not strip(): GS (0x1D) is whitespace to Python
                        text = text.rstrip("\r") if self.EOL == b"\n" else text.lstrip("\n")
                    except UnicodeDecodeError:
                        reply = self.NOT_ASCII
                    else:
                        reply = self.handle(text) if text else None
                if reply is not None and self.reply_delay_s:
                    time.sleep(self.reply_delay_s.pop(0))  # an injected late reply
                if reply is not None:
                    with self._lock:
                        try:
                            conn.sendall(reply.encode() + self.EOL)
                        except OSError:
                            pass
