"""Upstream security against real servers on loopback: two capture servers (the one configured and
another origin that would say "success" to anything), a real Mosquitto with a TLS listener and a
test CA made here with the openssl command. Credentials never reach another origin or a plain
connection off loopback, never travel in a URL, and no message, stored error or table shows them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from serialine.host.epcis import outbox
from serialine.host.epcis.capture_server import CaptureServer
from serialine.host.epcis.cli import sink_from_spec
from serialine.host.epcis.forwarder import Forwarder
from serialine.host.epcis.mosquitto import Mosquitto
from serialine.host.epcis.sinks import SinkError, redact
from serialine.host.epcis.sinks.http import HttpCaptureSink
from serialine.host.epcis.sinks.mqtt import MqttSink

from .test_forwarding import delivered_ids, fill

SERIALINE = str(Path(sys.executable).with_name("serialine"))
TOKEN = "s3cret-T0ken"
ONE = {"epcisBody": {"eventList": [{"eventID": "ni:///sha-256;" + "c" * 64 + "?ver=CBV2.0"}]}}


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA, a server certificate for 127.0.0.1 and a client certificate signed by it, and a
    second CA that signed nothing of ours."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-days", "2", "-subj", f"/CN=Serialine test {ca}", "-keyout",
                f"{ca}.key", "-out", f"{ca}.pem", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who, cn in (("server", "127.0.0.1"), ("client", "line1")):
        openssl("req", *ec, "-subj", f"/CN={cn}", "-keyout", f"{who}.key", "-out", f"{who}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-out", f"{who}.pem", "-extfile", f"{who}.ext", cwd=d)
    return {name: str(d / name) for name in ("ca.pem", "other-ca.pem", "server.pem", "server.key",
                                             "client.pem", "client.key")}


@pytest.fixture
def ledger(tmp_path, ctx):
    path = tmp_path / "ledger.db"
    conn = sqlite3.connect(path, isolation_level=None)
    outbox.ensure_schema(conn)
    return path, conn, fill(conn, ctx, "B1", 6)


def last_errors(conn) -> list[str]:
    return [r[0] or "" for r in conn.execute("SELECT last_error FROM epcis_outbox")]


# --- HTTP: one origin --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["redirect_post", "job_base", "redirect_get"])
def test_nothing_goes_to_another_origin(ledger, mode):
    """A 302 on the POST, an absolute job Location elsewhere, a 302 on the job poll: the other
    server gets no request (so no credentials), and its "success" delivers nothing."""
    path, conn, ids = ledger
    with CaptureServer(token=TOKEN) as ours, CaptureServer() as other:
        other.every_job_succeeds = True
        setattr(ours, mode, other.url + ("/capture" if mode == "redirect_post" else ""))
        sink = HttpCaptureSink(ours.url, token=TOKEN, timeout=2, poll_interval=0.01)
        assert Forwarder(conn, sink, doc_size=10).run_once() == 0
        assert other.authorizations == []              # not one request reached it
        assert delivered_ids(conn) == []
        error = last_errors(conn)[0]
        assert "not followed" in error or "not polled" in error
        assert TOKEN not in error
        assert ours.authorizations and set(ours.authorizations) == {f"Bearer {TOKEN}"}
        setattr(ours, mode, None)                      # the configured server alone: delivered
        outbox.retry_now(conn)
        assert Forwarder(conn, sink, doc_size=10).run_once() == 6


def test_https_is_never_downgraded_to_http(pki):
    with CaptureServer(tls=(pki["server.pem"], pki["server.key"]), token=TOKEN) as ours, \
            CaptureServer() as plain:
        plain.every_job_succeeds = True
        sink = HttpCaptureSink(ours.url, token=TOKEN, ca_file=pki["ca.pem"], timeout=2, poll_interval=0.01)
        sink.send(ONE)                                  # verified against the test CA
        ours.redirect_get = plain.url                   # plain http on the same host
        with pytest.raises(SinkError, match="not followed"):
            sink.send(ONE)
        ours.redirect_get, ours.job_base = None, plain.url.replace("127.0.0.1", "localhost")
        with pytest.raises(SinkError, match="not polled"):
            sink.send(ONE)
        assert plain.authorizations == []


def test_same_origin_redirect_of_the_poll_is_followed(ledger):
    path, conn, ids = ledger
    with CaptureServer(token=TOKEN) as ours:
        ours.redirect_get = ours.url
        sink = HttpCaptureSink(ours.url, token=TOKEN, timeout=2, poll_interval=0.01)
        assert Forwarder(conn, sink, doc_size=10).run_once() == 6
        assert set(ours.authorizations) == {f"Bearer {TOKEN}"}


def test_credentials_over_plain_http_only_to_loopback():
    for url in ("http://epcis.example.com", "http://10.1.2.3:8080/api"):
        with pytest.raises(ValueError, match="refusing to send credentials over a plain http"):
            HttpCaptureSink(url, token=TOKEN)
        with pytest.raises(ValueError, match="plain http"):
            HttpCaptureSink(url, username="u", password="p")
        HttpCaptureSink(url)                            # no credentials: allowed
    for url in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9", "https://epcis.example.com"):
        HttpCaptureSink(url, token=TOKEN)
    with pytest.raises(ValueError, match="credentials in the http address are refused") as exc:
        HttpCaptureSink("https://alice:pa55word@epcis.example.com")
    assert "pa55word" not in str(exc.value)


def test_redact():
    text = ("GET http://alice:pa55word@h/x: Authorization: Bearer abc.DEF-1 and Basic YWxpY2U6cGE1NXdvcmQ= "
            "mqtts://bob:hunter2@broker:8883/a said hunter2")
    out = redact(text, ["hunter2"])
    for secret in ("pa55word", "abc.DEF-1", "YWxpY2U6cGE1NXdvcmQ=", "hunter2", "alice", "bob"):
        assert secret not in out
    assert "http://***@h/x" in out and "Bearer ***" in out


def test_server_words_echoing_a_secret_are_redacted(ledger):
    path, conn, ids = ledger
    with CaptureServer(token="right") as server:
        sink = HttpCaptureSink(server.url, username="line1", password="pw-Echoed-1", timeout=2)
        server.authorization = None
        server.fail_jobs = 1
        import serialine.host.epcis.capture_server as cs
        original = cs._problem
        cs._problem = lambda status, kind, detail: original(status, kind, "you sent pw-Echoed-1")
        try:
            assert Forwarder(conn, sink, doc_size=10).run_once() == 0
        finally:
            cs._problem = original
        assert "you sent ***" in last_errors(conn)[0] and "pw-Echoed-1" not in last_errors(conn)[0]


# --- the CLI: credentials from the environment or a file, never from the URL ----------------------

def serialine(*args, env=None, timeout=60):
    full = {k: v for k, v in os.environ.items() if not k.startswith("SERIALINE_")}
    full.update(env or {})
    return subprocess.run([SERIALINE, *args], capture_output=True, text=True, env=full, timeout=timeout)


@pytest.mark.parametrize("spec,secret", [("http://alice:pa55word@127.0.0.1:{port}", "pa55word"),
                                         ("mqtt://bob:hunter2@127.0.0.1:{port}/site/line", "hunter2"),
                                         ("mqtts://bob:hunter2@127.0.0.1:{port}", "hunter2")])
def test_userinfo_in_the_sink_url_is_refused_without_echo(ledger, spec, secret):
    path, conn, ids = ledger
    with CaptureServer() as server:
        r = serialine("outbox", "--db", str(path), "--forward", spec.format(port=server.port))
        assert r.returncode == 2
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert "credentials in the" in r.stderr and "refused" in r.stderr
        assert secret not in r.stderr + r.stdout
        assert server.authorizations == []
    assert last_errors(conn) == [""] * 6 and delivered_ids(conn) == []


def test_cli_http_token_from_the_environment_and_failures_redacted(ledger):
    path, conn, ids = ledger
    with CaptureServer(token=TOKEN) as server:
        r = serialine("outbox", "--db", str(path), "--forward", server.url, env={"SERIALINE_HTTP_TOKEN": "wrong-1"})
        assert r.returncode == 0 and "forwarded 0 events" in r.stdout
        assert "HTTP 401" in last_errors(conn)[0]
        r = serialine("outbox", "--db", str(path), "--retry-now", "--forward", server.url,
                      env={"SERIALINE_HTTP_TOKEN": TOKEN})
        assert r.returncode == 0 and "forwarded 6 events" in r.stdout, r.stderr
    assert delivered_ids(conn) == ids


def test_cli_credentials_file_must_be_private(ledger, tmp_path):
    path, conn, ids = ledger
    creds = tmp_path / "creds"
    creds.write_text(f"# upstream\nSERIALINE_HTTP_USER=line1\nSERIALINE_HTTP_PASSWORD='{TOKEN}'\n")
    creds.chmod(0o644)
    with CaptureServer(basic=("line1", TOKEN)) as server:
        args = ("outbox", "--db", str(path), "--forward", server.url, "--credentials", str(creds))
        r = serialine(*args)
        assert r.returncode == 2 and "accessible to others (mode 0644): chmod 600" in r.stderr
        assert server.authorizations == []
        creds.chmod(0o600)
        r = serialine(*args, env={"SERIALINE_HTTP_TOKEN": "ignored: the file is the source"})
        assert r.returncode == 0 and "forwarded 6 events" in r.stdout, r.stderr
        creds.write_text(f"SERIALINE_HTTP_PASWORD={TOKEN}\n{TOKEN}\n")
        r = serialine(*args)
        assert r.returncode == 2 and "line 1" in r.stderr and TOKEN not in r.stderr
    assert delivered_ids(conn) == ids


def test_sink_spec_rules(pki, tmp_path):
    with pytest.raises(ValueError, match="use mqtts://"):
        sink_from_spec("mqtt://127.0.0.1:1883/s/l", ca_file=pki["ca.pem"])
    with pytest.raises(ValueError, match="unknown sink"):
        sink_from_spec("ftp://127.0.0.1/x")
    with pytest.raises(ValueError, match="plain mqtt connection to broker.example"):
        os.environ["SERIALINE_MQTT_USER"], os.environ["SERIALINE_MQTT_PASSWORD"] = "bob", "hunter2"
        try:
            sink_from_spec("mqtt://broker.example:1883/s/l")
        finally:
            del os.environ["SERIALINE_MQTT_USER"], os.environ["SERIALINE_MQTT_PASSWORD"]
    with pytest.raises(ValueError, match="No such file"):
        sink_from_spec("https://127.0.0.1:1", ca_file=str(tmp_path / "missing.pem"))
    sink = sink_from_spec("mqtts://127.0.0.1/plant1/line2", ca_file=pki["ca.pem"])
    assert (sink.port, sink.topic) == (8883, "serialine/plant1/line2/epcis")


# --- MQTT over TLS against a real mosquitto ---------------------------------------------------------

class TlsSubscriber:
    def __init__(self, port, topic, ca, user, password):
        self.received, self.ready = [], threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.tls_set(ca_certs=ca)
        self.client.username_pw_set(user, password)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_message = lambda c, u, m: self.received.extend(
            e["eventID"] for e in json.loads(m.payload)["epcisBody"]["eventList"])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtts_from_the_cli_with_a_test_ca(ledger, pki, tmp_path):
    path, conn, ids = ledger
    creds = tmp_path / "creds"
    creds.write_text("SERIALINE_MQTT_USER=line1\nSERIALINE_MQTT_PASSWORD=hunter2-Xy\n")
    creds.chmod(0o600)
    tls = (pki["ca.pem"], pki["server.pem"], pki["server.key"])
    with Mosquitto(tls=tls, users={"line1": "hunter2-Xy", "qa": "sub-pw"}) as broker:
        sub = TlsSubscriber(broker.port, "serialine/plant1/line2/epcis", pki["ca.pem"], "qa", "sub-pw")
        spec = f"mqtts://127.0.0.1:{broker.port}/plant1/line2"
        try:
            r = serialine("outbox", "--db", str(path), "--forward", spec, "--credentials", str(creds),
                          "--ca", pki["other-ca.pem"])
            assert r.returncode == 0 and "forwarded 0 events" in r.stdout, r.stderr
            assert "certificate verify failed" in last_errors(conn)[0]
            r = serialine("outbox", "--db", str(path), "--retry-now", "--forward", spec, "--ca", pki["ca.pem"],
                          env={"SERIALINE_MQTT_USER": "line1", "SERIALINE_MQTT_PASSWORD": "wrong-pw"})
            assert r.returncode == 0 and "forwarded 0 events" in r.stdout
            assert "broker refused the connection: Not authorized" in last_errors(conn)[0]
            assert "wrong-pw" not in r.stdout + r.stderr + "".join(last_errors(conn))
            r = serialine("outbox", "--db", str(path), "--retry-now", "--forward", spec, "--credentials",
                          str(creds), "--ca", pki["ca.pem"])
            assert r.returncode == 0 and "forwarded 6 events" in r.stdout, r.stderr
            deadline = time.monotonic() + 10
            while len(sub.received) < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sub.received == ids and delivered_ids(conn) == ids
        finally:
            sub.close()


def test_mqtts_client_certificate(pki):
    tls = (pki["ca.pem"], pki["server.pem"], pki["server.key"])
    with Mosquitto(tls=tls, require_certificate=True) as broker:
        without = MqttSink(port=broker.port, tls=True, tls_ca_file=pki["ca.pem"], timeout=3)
        with pytest.raises(SinkError, match="mqtt 127.0.0.1"):
            without.send(ONE)
        without.close()
        sink = MqttSink(port=broker.port, tls_ca_file=pki["ca.pem"], tls_certfile=pki["client.pem"],
                        tls_keyfile=pki["client.key"], timeout=5)
        try:
            sink.send(ONE)
        finally:
            sink.close()


@pytest.mark.parametrize("body", [b"[1, 2]", b"42", b'"success"', b"null", b"\xff\xfe"])
def test_a_job_status_that_is_no_capture_job_is_a_delivery_failure(ledger, body):
    """Whatever the job poll answers, it is a SinkError (events kept, retried), never a traceback."""
    path, conn, ids = ledger
    with CaptureServer() as server:
        server.job_body = body
        assert Forwarder(conn, HttpCaptureSink(server.url, timeout=2, poll_interval=0.01), doc_size=10).run_once() == 0
        assert "not a capture job" in last_errors(conn)[0] and delivered_ids(conn) == []


def test_credentials_over_plain_http_never_go_through_a_proxy(ledger, monkeypatch):
    """An http_proxy in the environment would get the token in the clear: plain http with
    credentials goes straight to the (loopback) server."""
    path, conn, ids = ledger
    with CaptureServer(token=TOKEN) as ours, CaptureServer() as proxy:
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", proxy.url)
        assert Forwarder(conn, HttpCaptureSink(ours.url, token=TOKEN, timeout=2), doc_size=10).run_once() == 6
        assert proxy.authorizations == [] and set(ours.authorizations) == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize("mode,where", [("redirect_post", "http://[::1/capture"), ("redirect_get", "http://[::1"),
                                        ("job_base", "http://[::1"), ("job_base", "http://127.0.0.1:99999")])
def test_a_malformed_redirect_or_job_location_is_a_delivery_failure(ledger, mode, where):
    """A Location urllib cannot even parse (broken IPv6 literal, port out of range): refused like
    another origin, a SinkError with the events kept, never a traceback."""
    path, conn, ids = ledger
    with CaptureServer(token=TOKEN) as server:
        setattr(server, mode, where)
        sink = HttpCaptureSink(server.url, token=TOKEN, timeout=2, poll_interval=0.01)
        assert Forwarder(conn, sink, doc_size=10).run_once() == 0
        error = last_errors(conn)[0]
        assert ("not followed" in error or "not polled" in error) and TOKEN not in error
        assert delivered_ids(conn) == []
