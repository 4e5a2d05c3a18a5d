"""Where the forwarder delivers EPCIS documents. A sink's `send(document)` returns only once the
receiver has confirmed the whole document, and raises SinkError (with the receiver's own message)
otherwise; the forwarder then keeps the events and retries later."""

from __future__ import annotations


class SinkError(Exception):
    """Delivery not confirmed; the message says why (the server's words when it gave any)."""


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
