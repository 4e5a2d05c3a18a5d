"""EPCIS 2.0 REST capture sink: POST /capture -> 202 + Location, then poll GET /capture/{id}
until the job is no longer running; delivered only when it finished with success=true.
Credentials (bearer token or basic auth) come from configuration; TLS verification is on
unless explicitly turned off, with an optional CA file for private PKIs."""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

from serialine.host.epcis import document as doc
from serialine.host.epcis.sinks import SinkError


class HttpCaptureSink:
    def __init__(self, url: str, token: str | None = None, username: str | None = None,
                 password: str | None = None, verify_tls: bool = True, ca_file: str | None = None,
                 timeout: float = 10.0, poll_interval: float = 0.05, job_timeout: float = 60.0):
        if token and username:
            raise ValueError("configure either a bearer token or basic auth, not both")
        self.url = url.rstrip("/")
        self.timeout, self.poll_interval, self.job_timeout = timeout, poll_interval, job_timeout
        self.headers = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif username:
            creds = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {creds}"
        self.context = None
        if self.url.startswith("https:"):
            self.context = ssl.create_default_context(cafile=ca_file)
            if not verify_tls:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    def _request(self, method: str, url: str, body: bytes | None = None):
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/ld+json"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            raise SinkError(f"{method} {url}: HTTP {exc.code}: {_problem(exc.read())}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise SinkError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from exc

    def send(self, document: dict, name: str = "") -> None:
        status, headers, body = self._request("POST", self.url + "/capture", doc.dumps(document))
        location = headers.get("Location")
        if status != 202 or not location:
            raise SinkError(f"POST /capture: expected 202 with Location, got {status}: {_problem(body)}")
        job_url = urllib.parse.urljoin(self.url + "/", location)
        deadline = time.monotonic() + self.job_timeout
        while True:
            _, _, body = self._request("GET", job_url)
            try:
                job = json.loads(body)
            except ValueError as exc:
                raise SinkError(f"GET {job_url}: not a capture job: {body[:200]!r}") from exc
            if not job.get("running", False):
                if job.get("success") is True:
                    return
                raise SinkError(f"capture job {job.get('captureID', location)} failed: "
                                f"{json.dumps(job.get('errors') or job.get('errorFile'))}")
            if time.monotonic() > deadline:
                raise SinkError(f"capture job {location} still running after {self.job_timeout}s")
            time.sleep(self.poll_interval)

    def close(self) -> None:
        pass


def _problem(body: bytes) -> str:
    """The server's own words: RFC 7807 title/detail when it sent them, else the raw text."""
    try:
        problem = json.loads(body)
        return " — ".join(str(problem[k]) for k in ("title", "detail") if problem.get(k)) or body.decode()
    except (ValueError, AttributeError, TypeError):
        return body[:500].decode(errors="replace")
