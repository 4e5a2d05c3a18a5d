"""A real EPCIS 2.0 capture server on loopback, following the REST binding
(`capture-openapi.yaml`): POST /capture -> 202 + Location /capture/{id}; GET /capture/{id} -> the
capture job. Written for tests, the benchmark and the simulator: it can fail (HTTP error or a
failed job), time out (never answer in time), accept slowly, require a bearer token, redirect
(the POST, the job poll, or an absolute job Location on another server) or play that other server
(every job a success), and it deduplicates by eventID while counting every copy it received. It
records the Authorization header of every request (`authorizations`)."""

from __future__ import annotations

import base64
import itertools
import json
import ssl
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CaptureServer:
    def __init__(self, port: int = 0, token: str | None = None, basic: tuple[str, str] | None = None,
                 tls: tuple[str, str] | None = None):
        """token: required bearer token; basic: required (user, password); tls: (certfile, keyfile)."""
        self.token = token
        self.authorization = None
        if token:
            self.authorization = f"Bearer {token}"
        elif basic:
            self.authorization = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
        self.events: dict[str, dict] = {}      # eventID -> event, first copy wins
        self.received: Counter[str] = Counter()            # eventID -> copies received
        self.documents = 0
        self.jobs: dict[str, dict] = {}
        self.lock = threading.Lock()
        # fault injection, changeable while running
        self.fail_http = 0          # answer the next N POSTs with HTTP 500
        self.fail_jobs = 0          # accept the next N POSTs but let their jobs fail
        self.hang_seconds = 0.0     # sleep this long before answering (a timeout for the client)
        self.accept_delay = 0.0     # sleep before answering a POST (a slow server)
        self.job_polls = 0          # a job reports running=true for this many GETs
        self.redirect_post: str | None = None   # answer POST /capture with 302 to this URL
        self.redirect_get: str | None = None    # answer GET /capture/{id} with 302 to BASE/moved/capture/{id}
        self.job_base: str | None = None        # 202 Location is absolute, on this base URL
        self.every_job_succeeds = False         # any GET /capture/{id} reports success (a hostile server)
        self.job_body: bytes | None = None      # answer GET /capture/{id} with these bytes (no capture job)
        self.authorizations: list[str | None] = []  # Authorization header of each request, in order
        self._ids = itertools.count(1)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def duplicates(self) -> int:
        return sum(self.received.values()) - len(self.received)

    def start(self) -> "CaptureServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="capture-server",
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _capture(self, body: bytes) -> tuple[int, dict, dict]:
        """(status, headers, json body) for a POST /capture."""
        try:
            document = json.loads(body)
            events = document["epcisBody"]["eventList"]
            ids = [e["eventID"] for e in events]
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {}, _problem(400, "ValidationException", f"not an EPCIS document: {exc}")
        with self.lock:
            if self.fail_http > 0:
                self.fail_http -= 1
                return 500, {}, _problem(500, "ImplementationException", "capture store unavailable (injected)")
            capture_id = f"job{next(self._ids)}"
            failed = self.fail_jobs > 0
            self.fail_jobs -= failed
            job = {"captureID": capture_id, "createdAt": _now(), "running": True, "success": True,
                   "captureErrorBehaviour": "rollback", "errors": [], "_polls": self.job_polls}
            if failed:
                job.update(running=False, success=False, finishedAt=_now(), errors=[
                    _problem(500, "CaptureLimitExceededException", "rejected by injected fault")])
            else:
                self.documents += 1
                for event_id, event in zip(ids, events):
                    self.received[event_id] += 1
                    self.events.setdefault(event_id, event)
            self.jobs[capture_id] = job
        return 202, {"Location": f"{self.job_base or ''}/capture/{capture_id}"}, {}

    def _job(self, capture_id: str) -> tuple[int, dict]:
        with self.lock:
            job = self.jobs.get(capture_id)
            if job is None and self.every_job_succeeds:
                return 200, {"captureID": capture_id, "running": False, "success": True, "errors": []}
            if job is None:
                return 404, _problem(404, "NoSuchResourceException", f"no capture job {capture_id}")
            if job["running"]:
                if job["_polls"] > 0:
                    job["_polls"] -= 1
                else:
                    job.update(running=False, finishedAt=_now())
            return 200, {k: v for k, v in job.items() if not k.startswith("_")}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: tests and the benchmark print their own
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None):
                data = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if data:
                    ctype = "application/problem+json" if status >= 400 else "application/json"
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                with server.lock:
                    server.authorizations.append(self.headers.get("Authorization"))
                if server.authorization and self.headers.get("Authorization") != server.authorization:
                    self._send(401, _problem(401, "UnauthorizedRequestException", "bad or missing credentials"))
                    return False
                return True

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if server.hang_seconds:
                    time.sleep(server.hang_seconds)
                if not self._authorised():
                    return
                if self.path.rstrip("/") != "/capture":
                    return self._send(404, _problem(404, "NoSuchResourceException", self.path))
                if server.redirect_post:
                    return self._send(302, {}, {"Location": server.redirect_post})
                if server.accept_delay:
                    time.sleep(server.accept_delay)
                status, headers, body = server._capture(body)
                self._send(status, body, headers)

            def do_GET(self):
                if not self._authorised():
                    return
                parts = self.path.strip("/").split("/")
                moved = parts[0] == "moved"  # where redirect_get sends the poll: served, never redirected
                parts = parts[1:] if moved else parts
                if len(parts) != 2 or parts[0] != "capture":
                    return self._send(404, _problem(404, "NoSuchResourceException", self.path))
                if server.redirect_get and not moved:
                    return self._send(302, {}, {"Location": f"{server.redirect_get}/moved{self.path}"})
                if server.job_body is not None:
                    return self._send(200, server.job_body)
                self._send(*server._job(parts[1]))

        return Handler


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _problem(status: int, kind: str, detail: str) -> dict:
    """RFC 7807 problem details, as the OpenAPI's error responses use."""
    return {"type": f"epcisException:{kind}", "title": kind, "status": status, "detail": detail}
