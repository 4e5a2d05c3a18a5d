"""`serialine bench epcis`: EPCIS events built, hashed and written to the outbox (events/s, no
schema validation on that path), then forwarding throughput to the HTTP capture sink (the
loopback capture server) and to the MQTT sink (a real mosquitto), both started here.
Prints a table, then one JSON object as the last line."""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from serialine.host.epcis import events as ev, outbox
from serialine.host.epcis.capture_server import CaptureServer
from serialine.host.epcis.forwarder import Forwarder
from serialine.host.epcis.mosquitto import Mosquitto
from serialine.host.epcis.sinks.http import HttpCaptureSink
from serialine.host.epcis.sinks.mqtt import MqttSink

GTIN = "04012345123456"


def _ledger(path: Path) -> sqlite3.Connection:
    # the ledger's own settings (host/db.py): WAL, synchronous=FULL, explicit transactions
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    outbox.ensure_schema(conn)
    return conn


def build_and_enqueue(conn, ctx, batch: str, n: int, per_txn: int) -> float:
    """Seconds to build + hash + enqueue n commissioning events, per_txn per transaction."""
    when = datetime(2026, 11, 24, 8, tzinfo=timezone.utc)
    expiry = date(2028, 1, 31)
    start = time.perf_counter()
    for first in range(0, n, per_txn):
        conn.execute("BEGIN IMMEDIATE")
        for i in range(first, min(n, first + per_txn)):
            event = ev.commissioning(ctx, [ev.sgtin_urn(GTIN, f"{batch}{i:08d}", 7)], "LOT1",
                                     expiry, when + timedelta(milliseconds=i))
            outbox.enqueue(conn, batch, event)
        conn.execute("COMMIT")
    return time.perf_counter() - start


def forward(conn, sink, doc_size: int) -> tuple[int, float]:
    start = time.perf_counter()
    sent = Forwarder(conn, sink, doc_size=doc_size).run_once()
    return sent, time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serialine bench epcis")
    parser.add_argument("--events", type=int, default=20000, help="events built into the outbox")
    parser.add_argument("--forward-events", type=int, default=5000, help="events per sink")
    parser.add_argument("--doc-size", type=int, default=100)
    parser.add_argument("--per-txn", type=int, default=100, help="events per ledger transaction")
    args = parser.parse_args(argv)
    ctx = ev.Context(read_point=ev.sgln_urn("4012345000009", 7, "1"),
                     biz_location=ev.sgln_urn("4012345000009", 7), tz_offset="+01:00")
    with tempfile.TemporaryDirectory() as tmp:
        conn = _ledger(Path(tmp) / "bench.db")
        build_s = build_and_enqueue(conn, ctx, "BUILD", args.events, args.per_txn)
        conn.close()
        # every target gets a ledger's whole story: each sink its own ledger with its own batch
        conn = _ledger(Path(tmp) / "http.db")
        build_and_enqueue(conn, ctx, "HTTP", args.forward_events, args.per_txn)
        with CaptureServer() as server:
            http_sent, http_s = forward(conn, HttpCaptureSink(server.url, poll_interval=0.002),
                                        args.doc_size)
            assert len(server.events) == http_sent == args.forward_events, "HTTP lost events"

        conn.close()
        conn = _ledger(Path(tmp) / "mqtt.db")
        build_and_enqueue(conn, ctx, "MQTT", args.forward_events, args.per_txn)
        with Mosquitto() as broker:
            sink = MqttSink(port=broker.port, site="bench", line="l1")
            try:
                mqtt_sent, mqtt_s = forward(conn, sink, args.doc_size)
            finally:
                sink.close()
            assert mqtt_sent == args.forward_events, "MQTT lost events"
        conn.close()

    figures = {
        "events": args.events,
        "events_per_s": round(args.events / build_s),
        "forward_events": args.forward_events,
        "doc_size": args.doc_size,
        "http_events_per_s": round(http_sent / http_s),
        "mqtt_events_per_s": round(mqtt_sent / mqtt_s),
    }
    from rich.console import Console
    from rich.table import Table
    table = Table(title="serialine bench epcis")
    for column in ("what", "events", "seconds", "events/s"):
        table.add_column(column, justify="right")
    table.add_row("build + hash + outbox (SQLite WAL)", str(args.events), f"{build_s:.2f}",
                  str(figures["events_per_s"]))
    table.add_row(f"forward → HTTP capture, {args.doc_size}/doc", str(http_sent), f"{http_s:.2f}",
                  str(figures["http_events_per_s"]))
    table.add_row(f"forward → MQTT QoS 1, {args.doc_size}/doc", str(mqtt_sent), f"{mqtt_s:.2f}",
                  str(figures["mqtt_events_per_s"]))
    Console().print(table)
    print(json.dumps(figures))
    return 0
