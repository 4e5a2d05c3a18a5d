"""The control interface alone: a real ControlServer on loopback, a fake agent loop in a thread, real
HTTP from Client, http.client and raw sockets."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serialine.host import control
from serialine.host.control import Client, ControlError, ControlServer

BATCHES = {"B1", "B2"}


class FakeLoop(threading.Thread):
    """Stands in for the service loop: takes requests, changes its state, publishes a snapshot."""

    def __init__(self, server: ControlServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.seen: list[control.Request] = []
        self.state = {"ready": True, "line_id": "L1", "batch": None, "running": False, "line_stop": True}
        self.steps = 0
        self.awake = threading.Event()
        self.awake.set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if not self.awake.wait(0.01):
                continue
            for req in self.server.requests():
                self.seen.append(req)
                self.handle(req)
            self.steps += 1
            self.server.set_status({**self.state, "step": self.steps})
            time.sleep(0.005)

    def handle(self, req: control.Request) -> None:
        if req.command == "batch.select":
            if req.args["batch"] not in BATCHES:
                req.refuse(f"no batch {req.args['batch']!r} in the ledger")
                return
            self.state["batch"] = req.args["batch"]
        elif req.command == "line.start":
            if self.state["batch"] is None:
                req.refuse("no batch selected:\nselect one first")  # two lines: refuse makes one
                return
            self.state["running"] = True
        elif req.command == "line.stop":
            self.state["running"] = False
        elif req.command == "line.clear":
            self.state["line_stop"] = False
        req.reply({"state": dict(self.state)})

    def stop(self) -> None:
        self.done.set()
        self.join(5)


@pytest.fixture
def served():
    server = ControlServer("127.0.0.1", 0)
    loop = FakeLoop(server)
    loop.start()
    yield server, loop
    loop.stop()
    server.close()


def raw(address: str, data: bytes, timeout: float = 15) -> bytes:
    """Send bytes as they are, half-close, read until the server closes."""
    host, port = control.parse_address(address)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def responses(stream: bytes, head: bool = False) -> list[tuple[int, dict, dict]]:
    """Split what the server sent into (status, headers, JSON body); fails on anything not so.
    A reply to HEAD has the headers of its JSON body but not the body (`head`: the request was one)."""
    out = []
    while stream:
        head, sep, rest = stream.partition(b"\r\n\r\n")
        assert sep, stream[:200]
        lines = head.decode("latin-1").split("\r\n")
        version, code = lines[0].split()[:2]
        assert version == "HTTP/1.1", lines[0]
        headers = dict(line.split(": ", 1) for line in lines[1:])
        if code.startswith("1"):
            stream = rest
            continue
        n = int(headers["Content-Length"])
        assert headers["Content-Type"] == "application/json"
        body, stream = rest[:n], rest[n:]
        if head and not body and not stream:
            out.append((int(code), headers, None))
            break
        doc = json.loads(body)
        assert isinstance(doc, dict) and isinstance(doc["ok"], bool), body
        if not doc["ok"]:
            assert isinstance(doc["error"], str) and doc["error"] and "\n" not in doc["error"]
            assert "Traceback" not in doc["error"]
        out.append((int(code), headers, doc))
    return out


def post(address: str, path: str, body: bytes | dict | None, method: str = "POST", headers=None):
    host, port = control.parse_address(address)
    conn = http.client.HTTPConnection(host, port, timeout=15)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers=headers or {})
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    conn.close()
    return resp.status, resp.headers, doc


def test_commands_reach_the_loop_with_user_reason_and_args(served):
    server, loop = served
    client = Client(server.address)
    with pytest.raises(ControlError, match=r"^no batch selected: select one first$"):
        client.command("line.start", "alice", "shift start")
    with pytest.raises(ControlError, match=r"^no batch 'B9' in the ledger$"):
        client.command("batch.select", "alice", "wrong batch", batch="B9")
    assert client.command("batch.select", "alice", "lot 42 today", batch="B1")["state"]["batch"] == "B1"
    assert client.command("line.start", "alice", "shift start")["state"]["running"] is True
    assert client.command("/line/stop", "bob", "jam at the coder")["state"]["running"] is False
    assert client.command("line.clear", "bob", "jam cleared")["state"]["line_stop"] is False
    assert [(r.command, r.args, r.user, r.reason) for r in loop.seen] == [
        ("line.start", {}, "alice", "shift start"),
        ("batch.select", {"batch": "B9"}, "alice", "wrong batch"),
        ("batch.select", {"batch": "B1"}, "alice", "lot 42 today"),
        ("line.start", {}, "alice", "shift start"),
        ("line.stop", {}, "bob", "jam at the coder"),
        ("line.clear", {}, "bob", "jam cleared"),
    ]
    status = client.status()
    assert status["batch"] == "B1" and status["running"] is False and "ok" not in status
    code, _, doc = post(server.address, "/line/start", {"user": "alice", "reason": "again please"})
    assert (code, doc["ok"]) == (200, True)
    code, _, doc = post(server.address, "/batch/select", {"user": "alice", "reason": "nope", "batch": "B7"})
    assert (code, doc) == (409, {"ok": False, "error": "no batch 'B7' in the ledger"})
    with pytest.raises(ControlError, match="unknown command 'line.jump'"):
        client.command("line.jump", "alice", "just because")


def test_status_is_served_while_the_loop_is_busy(served):
    server, loop = served
    client = Client(server.address)
    deadline = time.monotonic() + 5
    while client.status().get("step", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    loop.awake.clear()  # the loop is stuck in a long step
    time.sleep(0.05)
    frozen = client.status()["step"]
    t0 = time.monotonic()
    for _ in range(20):
        assert client.status() == {**loop.state, "step": frozen}
    assert time.monotonic() - t0 < 2
    loop.awake.set()


def test_status_before_the_first_snapshot_is_not_ready():
    with ControlServer("127.0.0.1", 0) as server:
        assert Client(server.address).status() == {"ready": False}
        server.set_status({"ready": True, "ok": "ignored", "counts": {"good": 3}})
        assert Client(server.address).status() == {"ready": True, "counts": {"good": 3}}
        with pytest.raises(TypeError):
            server.set_status({"ready": object()})


BAD_BODIES = [
    (b"", 400, "not JSON"),
    (b"user=alice&reason=shift", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"[" * 3000, 400, "not JSON"),
    (b"\xff\xfe\x00garbage", 400, "not JSON"),
    ({"reason": "shift start"}, 400, "user is required"),
    ({"user": "", "reason": "shift start"}, 400, "user is required"),
    ({"user": "   ", "reason": "shift start"}, 400, "user is required"),
    ({"user": "a" * 65, "reason": "shift start"}, 400, "user is required"),
    ({"user": "ali\nce", "reason": "shift start"}, 400, "user is required"),
    ({"user": 7, "reason": "shift start"}, 400, "user is required"),
    ({"user": "alice"}, 400, "reason is required"),
    ({"user": "alice", "reason": "ok"}, 400, "reason is required"),
    ({"user": "alice", "reason": "  ab  "}, 400, "reason is required"),
    ({"user": "alice", "reason": "shift\x1b[2Jstart"}, 400, "reason is required"),
    ({"user": "alice", "reason": "shift start", "force": True}, 400, "unknown field force"),
    (b'{"user": "alice", "reason": "' + b"x" * 5000 + b'"}', 413, "body over 4096 bytes"),
]


@pytest.mark.parametrize("body, code, message", BAD_BODIES)
def test_bad_bodies_are_refused_at_the_edge(served, body, code, message):
    server, loop = served
    status, headers, doc = post(server.address, "/line/start", body)
    assert (status, doc["ok"]) == (code, False)
    assert message in doc["error"] and "\n" not in doc["error"]
    assert loop.seen == []


def test_batch_select_needs_its_batch(served):
    server, loop = served
    for body in ({"user": "alice", "reason": "lot 42"}, {"user": "alice", "reason": "lot 42", "batch": ""},
                 {"user": "alice", "reason": "lot 42", "batch": ["B1"]}):
        status, _, doc = post(server.address, "/batch/select", body)
        assert (status, doc["error"]) == (400, "batch is required: 1-64 printable characters")
    assert loop.seen == []


def test_paths_methods_and_framing(served):
    server, loop = served
    status, _, doc = post(server.address, "/line/jump", {"user": "a", "reason": "abcd"})
    assert status == 404 and doc["error"].startswith("no such endpoint /line/jump; there are /status, ")
    status, headers, doc = post(server.address, "/line/start", None, method="GET")
    assert (status, headers["Allow"], doc["error"]) == (405, "POST", "/line/start takes POST, not GET")
    for method in ("PUT", "DELETE", "FOO", "HEAD", "OPTIONS"):
        status, headers, _ = (post(server.address, "/status", b"{}", method=method) if method != "HEAD"
                              else (405, {"Allow": "GET"}, None))
        assert (status, headers["Allow"]) == (405, "GET"), method
    host, port = control.parse_address(server.address)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("HEAD", "/status")
    resp = conn.getresponse()
    assert resp.status == 405 and resp.read() == b""
    conn.close()
    # no Content-Length, chunked, a lying Content-Length: refused, nothing reaches the loop
    (status, _, doc), = responses(raw(server.address, b"POST /line/stop HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 411 and "Content-Length" in doc["error"]
    (status, _, doc), = responses(raw(server.address, b"POST /line/stop HTTP/1.1\r\nTransfer-Encoding: chunked"
                                      b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
    assert status == 411
    (status, _, doc), = responses(raw(server.address, b"POST /line/stop HTTP/1.1\r\nContent-Length: 99\r\n\r\n{}"))
    assert (status, doc["error"]) == (400, "body shorter than its Content-Length")
    (status, _, doc), = responses(raw(server.address, b"POST /line/stop HTTP/1.1\r\nContent-Length: -1\r\n\r\n{}"))
    assert status == 400
    (status, _, doc), = responses(raw(server.address, b"GET /status HTTP/0.9\r\n\r\n"))
    assert status == 400
    (status, _, doc), = responses(raw(server.address, b"GET /status\r\n"))
    assert (status, doc["error"]) == (400, "HTTP/0.9 is not supported")
    for blank in (b"\r\n", b"\x85", b" \x1c\t\r\n"):  # what str.split() calls space: no request line
        (status, _, doc), = responses(raw(server.address, blank))
        assert (status, doc["error"]) == (400, "empty request line")
    assert loop.seen == []
    # two requests on one connection (keep-alive), then status with a query string
    body = json.dumps({"user": "alice", "reason": "keep alive"}).encode()
    one = b"POST /line/clear HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    got = responses(raw(server.address, one + b"GET /status?x=1 HTTP/1.1\r\n\r\n"))
    assert [(c, d["ok"]) for c, d in [(g[0], g[2]) for g in got]] == [(200, True), (200, True)]
    assert [r.command for r in loop.seen] == ["line.clear"]


def test_a_silent_agent_is_a_504_after_5_s_and_the_command_is_withdrawn():
    with ControlServer("127.0.0.1", 0) as server:
        t0 = time.monotonic()
        with pytest.raises(ControlError, match=r"^the agent did not answer within 5 s$"):
            Client(server.address).command("line.stop", "alice", "emergency")
        assert 4.9 < time.monotonic() - t0 < 7
        assert server.requests() == []  # the client was told nothing was done: the loop never sees it


def test_a_late_answer_is_reported_and_a_taken_command_is_answered_once():
    with ControlServer("127.0.0.1", 0, answer_s=0.3) as server:
        got: list = []

        def slow_loop():
            while not got:
                got.extend(server.requests())
                time.sleep(0.01)
            time.sleep(0.6)
            got.append(got[0].reply({}))

        t = threading.Thread(target=slow_loop, daemon=True)
        t.start()
        status, _, doc = post(server.address, "/line/stop", {"user": "alice", "reason": "emergency"})
        assert (status, doc["error"]) == (504, "the agent did not answer within 0.3 s")
        t.join(5)
        assert got[1] is False
        with pytest.raises(RuntimeError, match="answered twice"):
            got[0].refuse("again")


def test_no_agent_bad_address_and_busy_port():
    with ControlServer("127.0.0.1", 0) as server:
        address = server.address
        with pytest.raises(ControlError, match=r"control interface cannot listen on 127\.0\.0\.1:\d+: "):
            ControlServer("127.0.0.1", server.port)
    with pytest.raises(ControlError, match=rf"^no agent answering at {address}$"):
        Client(address).status()
    with pytest.raises(ControlError, match=rf"^no agent answering at {address}$"):
        Client(address).command("line.stop", "alice", "emergency")
    for bad in ("localhost", "127.0.0.1:99999", "127.0.0.1:x", "[::1:80"):
        with pytest.raises(ControlError, match="expected"):
            Client(bad)
    with pytest.raises(ControlError, match="port 0"):
        Client("127.0.0.1:0")
    assert control.parse_address(":0") == ("127.0.0.1", 0)
    assert control.parse_address("[::1]:8765") == ("::1", 8765)
    with ControlServer.at("127.0.0.1:0") as server:
        assert server.port > 0 and server.address == f"127.0.0.1:{server.port}"
    if socket.has_ipv6:
        try:
            server = ControlServer.at("[::1]:0")
        except ControlError:
            return  # no IPv6 loopback here
        with server:
            assert server.address == f"[::1]:{server.port}" and Client(server.address).status() == {"ready": False}


def test_not_an_agent():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]

        def answer():
            c, _ = s.accept()
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            c.close()

        threading.Thread(target=answer, daemon=True).start()
        with pytest.raises(ControlError, match=rf"^127\.0\.0\.1:{port} answered HTTP 200 but not as a Serialine agent$"):
            Client(f"127.0.0.1:{port}").status()


def test_close_refuses_what_is_waiting():
    server = ControlServer("127.0.0.1", 0)
    out: dict = {}

    def call():
        try:
            Client(server.address).command("line.stop", "alice", "end of shift")
        except ControlError as exc:
            out["error"] = str(exc)

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 5
    while not server._pending and time.monotonic() < deadline:
        time.sleep(0.01)
    server.close()
    t.join(5)
    assert out["error"] == "the agent is stopping"


def test_nothing_a_client_sends_makes_a_traceback_or_a_raw_log_line(served, caplog, capfd):
    server, loop = served
    caplog.set_level(logging.DEBUG, logger="serialine.control")
    host, port = control.parse_address(server.address)
    # a client that dies mid-body, one that sends terminal escapes, one that idles out
    with socket.create_connection((host, port)) as s:
        s.sendall(b"POST /line/stop HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"us")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    responses(raw(server.address, b"GET /\x1b[2J\x07\x00 HTTP/1.1\r\n\r\n"))
    responses(raw(server.address, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))  # TLS hello
    Client(server.address).command("batch.select", "alice", "lot \u00e9 42", batch="B1")
    time.sleep(0.3)
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    for rec in caplog.records:
        line = rec.getMessage()
        assert "Traceback" not in line and "\n" not in line and "\x1b" not in line and "\x00" not in line
        assert rec.exc_info is None
    assert any("batch.select by alice" in r.getMessage() for r in caplog.records)


# --- fuzz: any bytes are a JSON reply (or none for no bytes at all), and the server stays up ---

@pytest.fixture(scope="module")
def fuzz_server():
    server = ControlServer("127.0.0.1", 0)
    loop = FakeLoop(server)
    loop.start()
    yield server
    loop.stop()
    server.close()


_text = st.text(max_size=80)
_json_bodies = st.one_of(
    st.fixed_dictionaries({"user": _text, "reason": _text}, optional={"batch": st.one_of(_text, st.integers()),
                                                                      "x": st.none()}),
    st.recursive(st.none() | st.booleans() | st.integers() | _text,
                 lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_text, kids, max_size=4), max_leaves=12),
).map(lambda v: json.dumps(v).encode())
_bodies = st.one_of(st.binary(max_size=300), _json_bodies)
_request_lines = st.tuples(
    st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"FOO", b"get", b""]) | st.binary(max_size=8),
    st.sampled_from([b"/status", b"/line/start", b"/line/stop", b"/line/clear", b"/batch/select", b"/",
                     b"*", b"http://x/status", b"/status?a=%00", b"/line/start/"]) | st.binary(max_size=20),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.1x", b""]),
).map(lambda t: b" ".join(p for p in t if p))


@st.composite
def _requests(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=600))
    body = draw(_bodies)
    headers = draw(st.lists(st.sampled_from([
        b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 3),
        b"Content-Length: %d" % max(0, len(body) - 3), b"Content-Length: x", b"Content-Length: 99999999",
        b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"Connection: close", b"Host: x",
        b"Content-Type: application/json", b"no colon here", b"X: \xff\x00",
    ]) | st.binary(max_size=30), max_size=4))
    return draw(_request_lines) + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_requests())
def test_fuzz_any_bytes_get_a_json_reply_and_the_server_stays_up(fuzz_server, data):
    got = responses(raw(fuzz_server.address, data), head=data.startswith(b"HEAD "))
    assert got or data == b""
    assert Client(fuzz_server.address).status()["ready"] is True


def test_a_failing_authorizer_is_a_json_500_and_the_server_stays_up(caplog):
    def broken(user, password, command):
        raise RuntimeError("bug\nwith two lines")

    with ControlServer("127.0.0.1", 0, authorize=broken) as server:
        for _ in range(2):
            status, _, doc = post(server.address, "/line/stop", {"user": "alice", "reason": "emergency"})
            assert (status, doc) == (500, {"ok": False, "error": "the agent failed on this request (RuntimeError);"
                                                                  " see its log"})
        assert server.requests() == [] and Client(server.address).status() == {"ready": False}
    assert all("\n" not in r.getMessage() for r in caplog.records)
