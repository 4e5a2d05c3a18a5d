"""EPCIS 2.0 REST capture sink: POST /capture -> 202 + Location, then poll GET /capture/{id}
until the job is no longer running; delivered only when it finished with success=true.
Credentials (bearer token or basic auth) come from configuration; TLS verification is on
unless explicitly turned off, with an optional CA file for private PKIs (and client certificate).

Everything happens on the configured origin (scheme, host, port): a redirect elsewhere is not
followed, a job Location elsewhere is not polled, so neither credentials nor a job status ever
cross to another server; credentials over plain http go only to loopback (sinks.check_address)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

from serialine.host.epcis import document as doc
from serialine.host.epcis.sinks import SinkError, check_address, origin, redact


class HttpCaptureSink:
    def __init__(self, url: str, token: str | None = None, username: str | None = None,
                 password: str | None = None, verify_tls: bool = True, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None,
                 timeout: float = 10.0, poll_interval: float = 0.05, job_timeout: float = 60.0):
        if token and username:
            raise ValueError("configure either a bearer token or basic auth, not both")
        self.url = url.rstrip("/")
        self.origin = origin(self.url)
        if self.origin[0] not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {redact(url)}")
        check_address(self.url, self.origin[0] == "https", bool(token or username), "http")
        self.timeout, self.poll_interval, self.job_timeout = timeout, poll_interval, job_timeout
        self.headers = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
        self._secrets = [s for s in (token, password) if s]
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif username:
            creds = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {creds}"
            self._secrets.append(creds)
        self.context = None
        handlers = [_SameOriginRedirects(self)]
        if self.origin[0] == "http" and self._secrets:
            handlers.append(urllib.request.ProxyHandler({}))  # an http_proxy would get them in the clear
        if self.origin[0] == "https":
            self.context = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                self.context.load_cert_chain(cert_file, key_file)
            if not verify_tls:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=self.context))
        self.opener = urllib.request.build_opener(*handlers)

    def error(self, message: str) -> SinkError:
        return SinkError(redact(message, self._secrets))

    def _request(self, method: str, url: str, body: bytes | None = None):
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/ld+json"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            raise self.error(f"{method} {url}: HTTP {exc.code}: {_problem(exc.read())}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise self.error(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None
        except http.client.HTTPException as exc:  # not HTTP, or cut short: no answer we can count
            raise self.error(f"{method} {url}: not a valid HTTP response ({type(exc).__name__}: {str(exc)[:200]})") from None

    def send(self, document: dict, name: str = "") -> None:
        status, headers, body = self._request("POST", self.url + "/capture", doc.dumps(document))
        location = headers.get("Location")
        if status != 202 or not location:
            raise self.error(f"POST /capture: expected 202 with Location, got {status}: {_problem(body)}")
        job_url = _join(self.url + "/", location)
        if not _same_origin(job_url, self.origin):
            raise self.error(f"capture job Location {location[:200]} is not on {_show(self.origin)}: not "
                             "polled (a job status counts only from the server the events were posted to)")
        deadline = time.monotonic() + self.job_timeout
        while True:
            _, _, body = self._request("GET", job_url)
            try:
                job = json.loads(body)
            except ValueError:
                job = None
            if not isinstance(job, dict):
                raise self.error(f"GET {job_url}: not a capture job: {body[:200]!r}")
            if not job.get("running", False):
                if job.get("success") is True:
                    return
                raise self.error(f"capture job {job.get('captureID', location)} failed: "
                                 f"{json.dumps(job.get('errors') or job.get('errorFile'))}")
            if time.monotonic() > deadline:
                raise self.error(f"capture job {location} still running after {self.job_timeout}s")
            time.sleep(self.poll_interval)

    def close(self) -> None:
        pass


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect of a GET within the sink's origin only; anything else is a SinkError
    (a POST is never redirected: its body and its job must stay where they were configured)."""

    def __init__(self, sink: HttpCaptureSink):
        self.sink = sink

    def http_error_302(self, req, fp, code, msg, headers):
        try:
            return super().http_error_302(req, fp, code, msg, headers)
        except ValueError:  # urllib parses the Location first: a malformed one is refused here
            fp.close()
            raise self.sink.error(f"{req.get_method()} {req.full_url}: HTTP {code} redirect to a malformed address "
                                  f"{str(headers.get('Location'))[:200]!r} not followed") from None

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = _join(req.full_url, newurl)
        if req.get_method() == "GET" and _same_origin(target, self.sink.origin):
            return super().redirect_request(req, fp, code, msg, headers, newurl)
        fp.close()
        raise self.sink.error(f"{req.get_method()} {req.full_url}: HTTP {code} redirect to "
                              f"{target[:200]} not followed (only GETs within {_show(self.sink.origin)})")


def _join(base: str, location: str) -> str:
    try:
        return urllib.parse.urljoin(base, location)
    except ValueError:
        return location  # malformed: shown as sent, and on no origin


def _same_origin(url: str, o: tuple[str, str, int]) -> bool:
    try:
        return origin(url) == o
    except ValueError:  # a malformed address (bad port, broken IPv6 literal) is nobody's origin
        return False


def _show(o: tuple[str, str, int]) -> str:
    return f"{o[0]}://{o[1]}:{o[2]}"


def _problem(body: bytes) -> str:
    """The server's own words: RFC 7807 title/detail when it sent them, else the raw text."""
    try:
        problem = json.loads(body)
        return " — ".join(str(problem[k]) for k in ("title", "detail") if problem.get(k)) or body.decode()
    except (ValueError, AttributeError, TypeError):
        return body[:500].decode(errors="replace")
