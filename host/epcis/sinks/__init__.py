"""Where the forwarder delivers EPCIS documents. A sink's `send(document)` returns only once the
receiver has confirmed the whole document, and raises SinkError (with the receiver's own message)
otherwise; the forwarder then keeps the events and retries later.

Upstream security, one rule each (docs: README "EPCIS reporting"): credentials never travel in a
URL, never over a plain connection except to loopback, and never to an origin other than the one
configured; every message a sink raises goes through `redact`."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse


class SinkError(Exception):
    """Delivery not confirmed; the message says why (the server's words when it gave any)."""


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
_AUTH = re.compile(r"(?i)\b(bearer|basic)\s+(?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}")  # not a word


def redact(text: str, secrets=()) -> str:
    """`text` without any of `secrets`, URL userinfo or Authorization header values: the one
    redaction every sink error, stored last_error and CLI message goes through."""
    text = _USERINFO.sub(r"\1***@", str(text))
    text = _AUTH.sub(r"\1 ***", text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL: what a redirect or job location must keep."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme, 0)


def check_address(url_or_host: str, secure: bool, has_credentials: bool, what: str) -> None:
    """ValueError (one line, no secret) for userinfo in a URL, or credentials on a plain
    connection to anything but loopback."""
    parts = urllib.parse.urlsplit(url_or_host) if "://" in url_or_host else None
    if parts is not None and (parts.username is not None or parts.password is not None):
        raise ValueError(f"credentials in the {what} address are refused ({redact(url_or_host)}); "
                         "give them in the environment or a credentials file")
    host = parts.hostname if parts is not None else url_or_host
    if has_credentials and not secure and not is_loopback(host):
        raise ValueError(f"refusing to send credentials over a plain {what} connection to {host}: "
                         "use TLS (plain connections with credentials only to loopback)")


def from_config(config: dict):
    """Build a sink from configuration: {"kind": "directory"|"http"|"mqtt", ...options}."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind == "directory":
        from serialine.host.epcis.sinks.directory import DirectorySink
        return DirectorySink(**config)
    if kind == "http":
        from serialine.host.epcis.sinks.http import HttpCaptureSink
        return HttpCaptureSink(**config)
    if kind == "mqtt":
        from serialine.host.epcis.sinks.mqtt import MqttSink
        return MqttSink(**config)
    raise ValueError(f"unknown sink kind {kind!r} (directory | http | mqtt)")
