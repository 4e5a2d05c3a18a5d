"""Store and forward against real servers on loopback: the capture server written for the tests
and a real Mosquitto. Sinks are cut off mid-batch and brought back: every event arrives, the
ledger counts each once, and the capture server (dedup by eventID) sees nothing lost."""

from __future__ import annotations

import json
import subprocess
import sqlite3
import threading
import time
from datetime import date, datetime, timedelta, timezone

import paho.mqtt.client as mqtt
import pytest

from serialine.host.epcis import events as ev, outbox
from serialine.host.epcis.capture_server import CaptureServer
from serialine.host.epcis.forwarder import Forwarder
from serialine.host.epcis.mosquitto import Mosquitto
from serialine.host.epcis.sinks import SinkError
from serialine.host.epcis.sinks.directory import DirectorySink
from serialine.host.epcis.sinks.http import HttpCaptureSink
from serialine.host.epcis.sinks.mqtt import MqttSink

from .conftest import GTIN


class Clock:
    """Forwarder time under the test's control, so backoff needs no sleeping."""
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def fill(conn, ctx, batch: str, n: int) -> list[str]:
    """n commissioning events for one batch, written as the ledger would: in one transaction."""
    when = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)
    ids = []
    with conn:
        for i in range(n):
            event = ev.commissioning(ctx, [ev.sgtin_urn(GTIN, f"{batch}-{i}", 7)], "L1",
                                     date(2028, 1, 31), when + timedelta(seconds=i))
            outbox.enqueue(conn, batch, event)
            ids.append(event["eventID"])
    return ids


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "ledger.db"
    conn = sqlite3.connect(path)
    outbox.ensure_schema(conn)
    return path, conn


def delivered_ids(conn) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT event_id FROM epcis_outbox WHERE delivered_at IS NOT NULL ORDER BY seq")]


def test_http_failures_mid_batch_then_recovery(db, ctx):
    path, conn = db
    ids = fill(conn, ctx, "B1", 30)
    clock = Clock()
    with CaptureServer(token="s3cret") as server:
        sink = HttpCaptureSink(server.url, token="s3cret", timeout=2, poll_interval=0.01)
        fwd = Forwarder(conn, sink, doc_size=7, backoff_base=2, clock=clock)
        server.fail_http = 1
        assert fwd.run_once() == 0
        row = conn.execute("SELECT attempts, next_try_at, last_error FROM epcis_outbox WHERE seq=1").fetchone()
        assert row[0] == 1 and row[1] == clock.now + 2
        assert "HTTP 500" in row[2] and "capture store unavailable (injected)" in row[2]
        assert fwd.run_once() == 0                    # not due yet: backoff holds the batch
        clock.now += 2
        server.job_polls = 2                          # jobs report running for a while
        delivered = fwd.run_once()
        assert delivered == 30 and delivered_ids(conn) == ids
        assert set(server.events) == set(ids) and server.duplicates == 0
        assert server.documents == 5                  # 7+7+7+7+2
        assert outbox.counts(conn) == {"pending": 0, "delivered": 30}


def test_http_job_failure_and_timeout_are_retried_with_backoff(db, ctx):
    path, conn = db
    ids = fill(conn, ctx, "B1", 10)
    clock = Clock()
    with CaptureServer() as server:
        fwd = Forwarder(conn, HttpCaptureSink(server.url, timeout=0.5, poll_interval=0.01),
                        doc_size=4, backoff_base=1, backoff_max=3, clock=clock)
        server.fail_jobs = 1
        assert fwd.run_once() == 0
        assert "rejected by injected fault" in outbox.pending_rows(conn)[0][6]
        for expected_wait in (2, 3):                  # 1, 2, then capped at 3
            server.hang_seconds = 1.0                 # the client times out, the server still stores
            clock.now += 10
            assert fwd.run_once() == 0
            attempts, next_try = outbox.pending_rows(conn)[0][4:6]
            assert next_try == clock.now + expected_wait
        assert attempts == 3 and "timed out" in outbox.pending_rows(conn)[0][6]
        server.hang_seconds = 0
        clock.now += 10
        assert fwd.run_once() == 10
        assert delivered_ids(conn) == ids
        assert set(server.events) == set(ids)         # every event arrived
        assert server.duplicates > 0                  # resends happened; dedup by eventID held


def test_http_server_stopped_mid_batch_and_restarted(db, ctx):
    path, conn = db
    ids = fill(conn, ctx, "B1", 20)
    clock = Clock()
    first = CaptureServer().start()

    class CutAfterTwo(HttpCaptureSink):
        """The server goes away right after confirming the second document."""
        sent = 0

        def send(self, document, name=""):
            super().send(document, name)
            self.sent += 1
            if self.sent == 2:
                first.stop()

    fwd = Forwarder(conn, CutAfterTwo(first.url, timeout=2, poll_interval=0.01), doc_size=5,
                    backoff_base=1, clock=clock)
    assert fwd.run_once() == 10
    assert fwd.run_once() == 0                         # backoff: not due
    clock.now += 1
    assert fwd.run_once() == 0                         # due, but the server is gone
    assert "Connection refused" in outbox.pending_rows(conn)[0][6]
    assert outbox.pending_rows(conn)[0][4] == 2
    with CaptureServer(port=first.port) as second:     # back, on the same address
        clock.now += 2
        assert fwd.run_once() == 10
        assert set(first.events) | set(second.events) == set(ids)
        assert not set(first.events) & set(second.events)
    assert delivered_ids(conn) == ids


class Crash(BaseException):
    """The agent process dying: not an Exception, so nothing on the way catches it."""


def test_resume_after_crash_from_sqlite_state(db, ctx):
    path, conn = db
    ids = fill(conn, ctx, "B1", 12) + fill(conn, ctx, "B2", 5)
    with CaptureServer() as server:

        class DiesAfterSecondConfirm(HttpCaptureSink):
            sent = 0

            def send(self, document, name=""):
                super().send(document, name)
                self.sent += 1
                if self.sent == 2:
                    raise Crash  # confirmed upstream, not yet marked in SQLite

        with pytest.raises(Crash):
            Forwarder(conn, DiesAfterSecondConfirm(server.url, poll_interval=0.01), doc_size=4).run_once()
        conn.close()
        conn = sqlite3.connect(path)                   # the agent restarts
        assert outbox.counts(conn) == {"pending": 13, "delivered": 4}
        sink = HttpCaptureSink(server.url, poll_interval=0.01)
        assert Forwarder(conn, sink, doc_size=4).run_once() == 13
        assert delivered_ids(conn) == ids              # in order, each counted once
        assert set(server.events) == set(ids)
        assert server.duplicates == 4                  # the unmarked document was sent again
        assert Forwarder(conn, sink, doc_size=4).run_once() == 0


def test_directory_sink_writes_whole_documents_atomically(db, ctx, tmp_path):
    path, conn = db
    ids = fill(conn, ctx, "B/1", 9)
    out = tmp_path / "out"
    Forwarder(conn, DirectorySink(out), doc_size=4).run_once()
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["B_1-000000000001.jsonld", "B_1-000000000005.jsonld",
                                       "B_1-000000000009.jsonld"]
    got = [e["eventID"] for f in files for e in json.loads(f.read_text())["epcisBody"]["eventList"]]
    assert got == ids
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the directory should be")
    fill(conn, ctx, "B2", 1)
    fwd = Forwarder(conn, DirectorySink(blocker / "sub"), doc_size=4)
    assert fwd.run_once() == 0
    assert "blocked/sub" in outbox.pending_rows(conn)[0][6]


class Subscriber:
    """Counts the eventIDs that reach the broker's topic (reconnects and resubscribes)."""
    def __init__(self, port: int, topic: str):
        self.received: list[str] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = lambda c, *a: (c.subscribe(topic, qos=1), self.ready.set())
        self.client.on_disconnect = lambda *a: self.ready.clear()
        self.client.on_message = lambda c, u, m: self.received.extend(
            e["eventID"] for e in json.loads(m.payload)["epcisBody"]["eventList"])
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def wait(self, timeout=10):
        assert self.ready.wait(timeout)
        time.sleep(0.2)  # SUBACK

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_broker_killed_mid_batch_and_restarted(db, ctx):
    path, conn = db
    ids = fill(conn, ctx, "B1", 24)
    clock = Clock()
    broker = Mosquitto().start()
    sub = Subscriber(broker.port, "serialine/plant1/line2/epcis")
    sink = MqttSink(port=broker.port, site="plant1", line="line2", timeout=5)
    try:
        sub.wait()
        fwd = Forwarder(conn, sink, doc_size=5, backoff_base=1, clock=clock)
        original_send = sink.send

        def send_then_kill_broker(document, name=""):
            original_send(document, name)
            if not outbox.counts(conn)["delivered"]:
                broker.kill()                         # dies right after the first PUBACK
        sink.send = send_then_kill_broker
        assert fwd.run_once() == 5
        assert "mqtt" in outbox.pending_rows(conn)[0][6]
        sink.send = original_send
        broker = Mosquitto(port=broker.port).start()
        sub.wait()
        clock.now += 100
        assert fwd.run_once() == 19
        deadline = time.monotonic() + 10
        while len(set(sub.received)) < 24 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(sub.received) == set(ids)
        assert delivered_ids(conn) == ids
    finally:
        sink.close()
        sub.close()
        broker.stop()


def test_sink_refuses_bad_configuration():
    with pytest.raises(ValueError):
        HttpCaptureSink("http://127.0.0.1:1", token="t", username="u")
    with pytest.raises(SinkError):
        HttpCaptureSink("http://127.0.0.1:1", timeout=0.5).send({"epcisBody": {"eventList": []}})


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    return str(d / "cert.pem"), str(d / "key.pem")


def test_https_verifies_the_server_by_default(certificate):
    cert, key = certificate
    one = {"epcisBody": {"eventList": [{"eventID": "ni:///sha-256;" + "b" * 64 + "?ver=CBV2.0"}]}}
    with CaptureServer(tls=(cert, key), basic=("line1", "pw")) as server:
        with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED"):
            HttpCaptureSink(server.url, username="line1", password="pw", timeout=2).send(one)
        with pytest.raises(SinkError, match="HTTP 401: UnauthorizedRequestException"):
            HttpCaptureSink(server.url, username="line1", password="bad", ca_file=cert,
                            timeout=2).send(one)
        HttpCaptureSink(server.url, username="line1", password="pw", ca_file=cert, timeout=2,
                        poll_interval=0.01).send(one)
        assert len(server.events) == 1
        HttpCaptureSink(server.url, username="line1", password="pw", verify_tls=False, timeout=2,
                        poll_interval=0.01).send(one)   # explicitly turned off: accepted
        assert server.duplicates == 1


def test_sinks_from_configuration(tmp_path):
    from serialine.host.epcis import sinks
    assert isinstance(sinks.from_config({"kind": "directory", "path": str(tmp_path)}), DirectorySink)
    http = sinks.from_config({"kind": "http", "url": "https://epcis.example/api/", "token": "t"})
    assert http.headers["Authorization"] == "Bearer t"
    assert http.context.verify_mode.name == "CERT_REQUIRED"     # TLS verification on by default
    mqtt_sink = sinks.from_config({"kind": "mqtt", "site": "s1", "line": "l2",
                                   "topic": "plants/{site}/{line}"})
    assert mqtt_sink.topic == "plants/s1/l2"
    with pytest.raises(ValueError, match="unknown sink kind"):
        sinks.from_config({"kind": "ftp"})


@pytest.mark.parametrize("reply", [b"garbage\r\n\r\n", b"HTTP/1.1 2020 X\r\n\r\n",
                                   b"HTTP/1.1 202 Accepted\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
                                   b"HTTP/1.1 202 Accepted\r\nLocation: /capture/1\r\nContent-Length: 100\r\n\r\nshort"])
def test_a_server_that_does_not_speak_http_is_a_delivery_failure(db, ctx, reply):
    """Not HTTP on the configured port (or an answer cut short): the events stay pending with the
    reason, never a traceback from the forwarder."""
    import socket
    path, conn = db
    ids = fill(conn, ctx, "B1", 3)
    srv = socket.create_server(("127.0.0.1", 0))

    def answer():
        c, _ = srv.accept()
        c.recv(65536)
        c.sendall(reply)
        time.sleep(0.2)
        c.close()

    threading.Thread(target=answer, daemon=True).start()
    sink = HttpCaptureSink(f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=2)
    assert Forwarder(conn, sink, doc_size=10, clock=Clock()).run_once() == 0
    assert delivered_ids(conn) == [] and outbox.pending_rows(conn)[0][6]
    srv.close()
