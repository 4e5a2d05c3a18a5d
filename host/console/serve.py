"""Serving the console: in the foreground (`serialine console`) or in a thread of `serialine agent
run` (a line file's `[console]`). One place binds the socket (so a busy port is one line before
anything runs) and sets TLS up (a certificate and key file: the browser then gets HTTPS and the
session cookie is marked Secure)."""

from __future__ import annotations

import socket
import ssl
import threading

import uvicorn


class ConsoleError(Exception):
    """The console cannot be served (one line)."""


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConsoleError(f"console cannot listen on {host}:{port}: {why}") from None
    sock.listen(64)
    return sock


def _tls(cert: str | None, key: str | None) -> dict:
    if not cert and not key:
        return {}
    if not (cert and key):
        raise ConsoleError("console TLS needs both a certificate and its key file")
    try:  # refuse a bad pair now, in one line, not at the first browser's handshake
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConsoleError(f"console TLS certificate {cert} / key {key}: {exc}") from None
    return {"ssl_certfile": cert, "ssl_keyfile": key}


class Server:
    """The console's HTTP(S) server on a bound socket; `run()` in the foreground or `start()` a thread."""

    def __init__(self, db_path: str, control: str | None, host: str = "127.0.0.1", port: int = 8780, *,
                 tls_cert: str | None = None, tls_key: str | None = None, gate_window_counts: float | None = None) -> None:
        from .app import create_app
        tls = _tls(tls_cert, tls_key)
        self.app = create_app(db_path, control, secure_cookie=bool(tls), gate_window_counts=gate_window_counts)
        self.sock = _listen(host, port)
        bound = self.sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls else 'http'}://{shown}:{bound}"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, server_header=False,
                                lifespan="off", **tls)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self.run, name="serialine-console", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.sock.close()
