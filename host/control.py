"""The agent's local control interface: HTTP/1.1 + JSON on loopback (docs/agent.md).

The HTTP threads never touch the agent: `GET /status` serves the last snapshot the service published
with `set_status`, and a changing command becomes a `Request` the service loop takes with
`requests()` and answers with `reply` or `refuse`; the HTTP thread waits at most `answer_s` for that.
Everything a client sends is checked here (JSON object body, size, user, reason, the command's own
fields), so the service sees only well-formed requests. Every reply is `{"ok": ...}` JSON, whatever
the client sent; nothing a client sends reaches a traceback or the log unescaped.
"""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import socket
import threading
from http import HTTPStatus
from urllib.parse import urlsplit

from . import audit

log = logging.getLogger("serialine.control")

DEFAULT_ADDRESS = "127.0.0.1:8765"
ANSWER_S = 5.0        # the HTTP thread's wait for the agent loop's answer
MAX_BODY = 4096       # bytes; a command is a few fields
MAX_PENDING = 16      # commands waiting for the loop; more is refused (503)
IDLE_S = 10.0         # a client connection idle this long is closed
MAX_USER = 64
MAX_PASSWORD = 1024

# endpoint -> (method, command name or None for status, the command's own fields: name -> required)
ENDPOINTS: dict[str, tuple[str, str | None, dict[str, bool]]] = {
    "/status": ("GET", None, {}),
    "/line/start": ("POST", "line.start", {}),
    "/line/stop": ("POST", "line.stop", {}),
    "/line/clear": ("POST", "line.clear", {}),
    "/batch/select": ("POST", "batch.select", {"batch": True}),
    # host/challenge.py and host/tune.py (B6): run on the agent loop like the others
    "/challenge/run": ("POST", "challenge.run", {"plan": False, "timeout_s": False, "purpose": False}),
    "/device/config": ("POST", "device.config.set", {"values": True}),
}
# the users.PERMISSIONS action a command needs on a ledger with users, where its name is not one
USER_ACTION = {"device.config.set": "config.change", "challenge.run": "line.challenge"}
GET_ONLY = {"/device/config": "device_config"}  # GET path -> the status snapshot's key it serves
FIELD_MAX = {"plan": 400, "values": 1000}  # longer than a batch id; the service parses them
PATHS = {command: path for path, (_, command, _) in ENDPOINTS.items() if command}


class ControlError(Exception):
    """One line for the operator: nobody answering, the agent's refusal, a timeout, a bad address.
    `need` = "password" when the agent wants the user's password for this command."""

    def __init__(self, message: str, need: str | None = None) -> None:
        super().__init__(message)
        self.need = need


class NeedPassword(ValueError):
    """From an authorizer: this command needs the user's password and none came (HTTP 401)."""


def parse_address(address: str) -> tuple[str, int]:
    """"host:port" (IPv6 "[::1]:8765"; no host = loopback) -> (host, port); port 0 = any free port."""
    text = str(address).strip()
    host, sep, port = text.rpartition(":")
    if text.startswith("["):
        if not host.endswith("]"):
            raise ControlError(f"control address {text!r}: expected [IPv6]:PORT")
        host = host[1:-1]
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ControlError(f"control address {text!r}: expected HOST:PORT with a port 0-65535")
    return host or "127.0.0.1", int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _printable(text: str) -> bool:
    return text.isprintable()


def _escape(text: object, limit: int = 200) -> str:
    """What a client sent, fit for one log line."""
    s = str(text)
    s = s.encode("unicode_escape", "backslashreplace").decode("ascii")
    return s if len(s) <= limit else s[:limit] + "..."


class Request:
    """One changing command from a client, for the service loop. Answer it once with reply or refuse."""

    def __init__(self, command: str, args: dict, user: str, reason: str) -> None:
        self.command = command
        self.args = args
        self.user = user
        self.reason = reason
        self._cond = threading.Condition()
        self._answer: tuple[int, dict] | None = None
        self._taken = False
        self._withdrawn = False

    def __repr__(self) -> str:
        return f"Request({self.command!r}, {self.args!r}, user={self.user!r})"

    def reply(self, result: dict | None = None) -> bool:
        """The command was done; `result` joins the reply. False if the client had stopped waiting."""
        body = {"ok": True}
        body.update({k: v for k, v in (result or {}).items() if k != "ok"})
        return self._answer_with(HTTPStatus.OK, body)

    def refuse(self, message: str) -> bool:
        """The command was not done, and why (one line). False if the client had stopped waiting."""
        line = " ".join(str(message).split()) or "refused"
        return self._answer_with(HTTPStatus.CONFLICT, {"ok": False, "error": line})

    def _answer_with(self, code: int, body: dict) -> bool:
        json.dumps(body)  # a result that cannot be sent is the service's bug: raise there, not here
        with self._cond:
            if self._answer is not None:
                raise RuntimeError(f"{self.command}: answered twice")
            self._answer = (int(code), body)
            late = self._withdrawn
            self._cond.notify_all()
        if late:
            log.warning("control: %s by %s answered after the client stopped waiting", self.command, self.user)
        return not late

    def _take(self) -> bool:
        with self._cond:
            if self._withdrawn:
                return False
            self._taken = True
            return True

    def _wait(self, timeout: float) -> tuple[int, dict] | None:
        with self._cond:
            self._cond.wait_for(lambda: self._answer is not None, timeout)
            if self._answer is None:
                self._withdrawn = True
            return self._answer


class _Refusal(Exception):
    def __init__(self, code: int, message: str, headers: dict | None = None, need: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.headers = headers or {}
        self.need = need


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_HTTPServer"
    protocol_version = "HTTP/1.1"
    server_version = "serialine-agent"
    sys_version = ""
    timeout = IDLE_S

    # every method, known or not, comes here: a known path with the wrong method is 405, not 501
    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def parse_request(self) -> bool:
        self.command, self.requestline = None, ""  # type: ignore[assignment]  # unset until parsed
        if not str(self.raw_requestline, "iso-8859-1").split():  # as http.server splits it (\x85 is space)
            self.request_version = "HTTP/1.0"
            self.send_error(HTTPStatus.BAD_REQUEST, "empty request line")
            return False
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # no headers in its reply: not JSON anyone can read
            self.request_version = "HTTP/1.0"
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        phrase = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "error"
        line = " ".join(str(message).split()) if message else phrase
        if self.request_version == "HTTP/0.9":  # http.server's default before a version is read
            self.request_version = "HTTP/1.0"
        self.log_error("%d %s", int(code), line)
        self._send(int(code), {"ok": False, "error": line[:300]}, close=True)

    def _send(self, code: int, body: dict, *, close: bool = False, headers: dict | None = None) -> None:
        data = (json.dumps(body, ensure_ascii=True) + "\n").encode("ascii")
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:  # the client went away; nothing to tell it
            self.close_connection = True

    def _dispatch(self) -> None:
        try:
            code, body = self._handle()
        except _Refusal as exc:
            self.log_error("%d %s %s: %s", exc.code, self.command, self.path, exc)
            body = {"ok": False, "error": str(exc), **({"need": exc.need} if exc.need else {})}
            self._send(exc.code, body, close=True, headers=exc.headers)
            return
        except (OSError, http.client.HTTPException):
            raise  # the client's connection: socketserver's handle_error says it in one line
        except Exception as exc:  # a bug behind the edge: still one JSON line for the client, not silence
            log.error("control: %s %s failed: %s: %s", self.command, _escape(self.path, 80), type(exc).__name__,
                      _escape(exc, 200))
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"ok": False, "error": f"the agent failed on this request"
                                                          f" ({type(exc).__name__}); see its log"}, close=True)
            return
        self._send(code, body)

    def _handle(self) -> tuple[int, dict]:
        path = urlsplit(self.path).path
        if self.command in ("GET", "HEAD") and path in GET_ONLY:
            self._drain_body()
            return HTTPStatus.OK, {"ok": True, GET_ONLY[path]: self.server.status_body().get(GET_ONLY[path])}
        if path not in ENDPOINTS:
            raise _Refusal(HTTPStatus.NOT_FOUND, f"no such endpoint {_escape(path, 80)}; "
                           f"there are {', '.join(ENDPOINTS)}")
        method, command, fields = ENDPOINTS[path]
        if self.command != method:
            raise _Refusal(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes {method}, not {_escape(self.command, 20)}",
                           {"Allow": method})
        if command is None:
            self._drain_body()
            return HTTPStatus.OK, self.server.status_body()
        user, reason, password, args = self._command_body(fields)
        self.server.authorize(user, password, command)
        return self.server.submit(Request(command, args, user, reason))

    def _body_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            raise _Refusal(HTTPStatus.LENGTH_REQUIRED, "send the body with Content-Length, not Transfer-Encoding")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return -1
        if not raw.strip().isdigit():
            raise _Refusal(HTTPStatus.BAD_REQUEST, "Content-Length must be a number of bytes")
        return int(raw)

    def _drain_body(self) -> None:
        n = self._body_length()
        if n > MAX_BODY:
            raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        if n > 0:
            self.rfile.read(n)

    def _command_body(self, fields: dict[str, bool]) -> tuple[str, str, str | None, dict]:
        n = self._body_length()
        if n < 0:
            raise _Refusal(HTTPStatus.LENGTH_REQUIRED, 'send a JSON body {"user": ..., "reason": ...} with Content-Length')
        if n > MAX_BODY:
            raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        data = self.rfile.read(n)
        if len(data) < n:
            raise _Refusal(HTTPStatus.BAD_REQUEST, "body shorter than its Content-Length")
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            raise _Refusal(HTTPStatus.BAD_REQUEST, 'the body is not JSON; send {"user": ..., "reason": ...}') from None
        if not isinstance(body, dict):
            raise _Refusal(HTTPStatus.BAD_REQUEST, 'the body must be a JSON object {"user": ..., "reason": ...}')
        user, reason, password = body.pop("user", None), body.pop("reason", None), body.pop("password", None)
        if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER or not _printable(user):
            raise _Refusal(HTTPStatus.BAD_REQUEST, f"user is required: 1-{MAX_USER} printable characters")
        if not isinstance(reason, str):
            reason = None
        try:
            reason = audit.check_reason(reason)  # the one rule for a reason
        except ValueError as exc:
            raise _Refusal(HTTPStatus.BAD_REQUEST, str(exc)) from None
        if password is not None and (not isinstance(password, str) or not 0 < len(password) <= MAX_PASSWORD):
            raise _Refusal(HTTPStatus.BAD_REQUEST, f"password, when given: 1-{MAX_PASSWORD} characters")
        unknown = sorted(set(body) - set(fields))
        if unknown:
            allowed = ", ".join(["user", "reason", "password", *fields])
            raise _Refusal(HTTPStatus.BAD_REQUEST, f"unknown field {_escape(unknown[0], 40)!s}; this command takes {allowed}")
        for name, required in fields.items():
            value = body.get(name)
            if value is None and not required:
                continue
            most = FIELD_MAX.get(name, 64)
            if not isinstance(value, str) or not value.strip() or len(value) > most or not _printable(value):
                raise _Refusal(HTTPStatus.BAD_REQUEST, f"{name} is required: 1-{most} printable characters")
        return user.strip(), reason, password, body

    def log_message(self, format: str, *args) -> None:
        log.info("control: %s %s", _escape(self.client_address[0], 60), _escape(format % args, 300))

    def log_error(self, format: str, *args) -> None:
        self.log_message(format, *args)

    def log_request(self, code="-", size="-") -> None:
        pass  # the service logs what a command did; a line per status poll would drown the journal


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, control: "ControlServer") -> None:
        self.control = control
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # http.server's server_bind does a reverse-DNS lookup of the host; not wanted on a line PC
        import socketserver
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request, client_address) -> None:
        import sys
        exc = sys.exc_info()[1]
        log.warning("control: request from %s failed: %s", _escape(client_address[0], 60),
                    _escape(f"{type(exc).__name__}: {exc}", 200))

    def status_body(self) -> dict:
        return self.control._status_body()

    def authorize(self, user: str, password: str | None, command: str) -> None:
        self.control._authorize(user, password, command)

    def submit(self, req: Request) -> tuple[int, dict]:
        return self.control._submit(req)


class ControlServer:
    """The control interface of one agent: serves in a daemon thread from construction to close()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, *, answer_s: float = ANSWER_S,
                 authorize=None) -> None:
        """`authorize(user, password or None, command)`, if given, runs in the HTTP thread before a
        command reaches the loop (a password check must not hold the line's loop): NeedPassword → 401,
        any other ValueError → 403, with its one line (`ledger_authorizer` is the ledger's users')."""
        self.answer_s = float(answer_s)
        self._authorizer = authorize
        self._lock = threading.Lock()
        self._status: str = json.dumps({"ready": False})
        self._pending: list[Request] = []
        self._closing = False
        try:
            self._httpd = _HTTPServer((host, int(port)), self)
        except (OSError, OverflowError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ControlError(f"control interface cannot listen on {format_address(host, port)}: {why}") from None
        bound_host, bound_port = self._httpd.server_address[:2]
        self.host, self.port = str(bound_host), int(bound_port)
        self.address = format_address(self.host, self.port)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="serialine-control", daemon=True)
        self._thread.start()  # the service logs the bound address

    @classmethod
    def at(cls, address: str, **kw) -> "ControlServer":
        """From a line file's `[control] address` ("127.0.0.1:8765", ":0" port = any free)."""
        host, port = parse_address(address)
        return cls(host, port, **kw)

    def __enter__(self) -> "ControlServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_status(self, snapshot: dict) -> None:
        """The service's latest status snapshot (JSON-serialisable), served by GET /status."""
        text = json.dumps(snapshot)
        with self._lock:
            self._status = text

    def requests(self) -> list[Request]:
        """The commands that arrived since the last call, oldest first; each must be answered."""
        with self._lock:
            pending, self._pending = self._pending, []
        return [r for r in pending if r._take()]

    def close(self) -> None:
        """Stop serving; commands not taken yet are refused ("the agent is stopping")."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            pending, self._pending = self._pending, []
        for r in pending:
            if r._take():
                r.refuse("the agent is stopping")
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _status_body(self) -> dict:
        with self._lock:
            text = self._status
        body = {"ok": True}
        body.update({k: v for k, v in json.loads(text).items() if k != "ok"})
        return body

    def _authorize(self, user: str, password: str | None, command: str) -> None:
        if self._authorizer is None:
            return
        try:
            self._authorizer(user, password, command)
        except NeedPassword as exc:
            raise _Refusal(HTTPStatus.UNAUTHORIZED, " ".join(str(exc).split()), need="password") from None
        except ValueError as exc:  # users.AuthError, a ledger that cannot be read: one line
            raise _Refusal(HTTPStatus.FORBIDDEN, " ".join(str(exc).split()) or "refused") from None

    def _submit(self, req: Request) -> tuple[int, dict]:
        with self._lock:
            if self._closing:
                raise _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "the agent is stopping")
            if len(self._pending) >= MAX_PENDING:
                raise _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, f"{MAX_PENDING} commands already waiting for the agent")
            self._pending.append(req)
        answer = req._wait(self.answer_s)
        if answer is None:
            with self._lock:
                if req in self._pending:
                    self._pending.remove(req)
            log.warning("control: %s by %s: the agent did not answer within %g s", req.command,
                        req.user, self.answer_s)
            raise _Refusal(HTTPStatus.GATEWAY_TIMEOUT, f"the agent did not answer within {self.answer_s:g} s")
        code, body = answer
        log.debug("control: %s by %s (%s): %s", req.command, req.user, _escape(req.reason, 120),
                 "done" if body.get("ok") else "refused: " + _escape(body.get("error"), 200))
        return code, body


class Client:
    """The operator commands' side: one HTTP request per call, errors as one-line ControlError."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout: float = ANSWER_S + 5) -> None:
        self.host, self.port = parse_address(address)
        if self.port == 0:
            raise ControlError(f"control address {address!r}: port 0 is for the agent to bind, not to connect to")
        self.address = format_address(self.host, self.port)
        self.timeout = timeout

    def status(self) -> dict:
        body = self._call("GET", "/status", None)
        body.pop("ok", None)
        return body

    def device_config(self) -> dict | None:
        """The configuration the device reports, in the line file's keys (GET /device/config)."""
        return self._call("GET", "/device/config", None).get("device_config")

    def command(self, name: str, user: str, reason: str, *, password: str | None = None, **args) -> dict:
        """Raises ControlError; its `need` is "password" when the agent wants `password` for this."""
        path = PATHS.get(name) or (name if name in ENDPOINTS and ENDPOINTS[name][1] else None)
        if path is None:
            raise ControlError(f"unknown command {name!r}; there are {', '.join(PATHS)}")
        extra = {"password": password} if password is not None else {}
        body = self._call("POST", path, {"user": user, "reason": reason, **extra, **args})
        body.pop("ok", None)
        return body

    def _call(self, method: str, path: str, payload: dict | None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(1 << 22)
        except (ConnectionRefusedError, ConnectionResetError, socket.gaierror):
            raise ControlError(f"no agent answering at {self.address}") from None
        except (TimeoutError, socket.timeout):
            raise ControlError(f"the agent at {self.address} did not reply within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ControlError(f"no agent answering at {self.address} ({why})") from None
        finally:
            conn.close()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
                raise ValueError
        except ValueError:
            raise ControlError(f"{self.address} answered HTTP {resp.status} but not as a Serialine agent") from None
        if not body["ok"]:
            need = body.get("need") if isinstance(body.get("need"), str) else None
            raise ControlError(" ".join(str(body.get("error") or f"HTTP {resp.status}").split()), need)
        return body


def ledger_authorizer(db_path: str):
    """The ledger's users (host/users.py) for ControlServer(authorize=): a ledger without users takes
    the user as given (as before users); with users, the user must give a password and may do the
    command (users.prove: every attempt and refusal audited). Each call has its own connection."""
    def authorize(user: str, password: str | None, command: str) -> None:
        import sqlite3

        from . import users
        from .ledgerfile import open_ledger
        try:
            conn = open_ledger(db_path, schema=False)
        except Exception as exc:  # LedgerFileError: one line naming the file
            raise ValueError(f"the ledger cannot be read to check {user}: {exc}") from None
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            try:
                if not users.present(conn):
                    return
            except sqlite3.OperationalError:  # a ledger from before users: none to check
                return
            if password is None:
                raise NeedPassword(f"{command} needs the password of {user} (this ledger has users)")
            users.prove(conn, user, password, USER_ACTION.get(command, command))
        except sqlite3.Error as exc:
            raise ValueError(f"{command}: the ledger is busy or unreadable ({exc}); try again") from None
        finally:
            conn.close()
    return authorize
