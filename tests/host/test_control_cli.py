"""`serialine line …` as the operator types it: real processes against a real ControlServer on loopback
with a fake agent loop (tests/host/test_control.py's FakeLoop)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serialine.host.control import ControlServer
from test_control import FakeLoop

SERIALINE = str(Path(sys.executable).with_name("serialine"))


def line(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([SERIALINE, "line", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "120", **(env or {})})


@pytest.fixture
def agent():
    server = ControlServer("127.0.0.1", 0)
    loop = FakeLoop(server)
    loop.state.update({
        "device": {"port": "/dev/ttyACM0", "device_id": 7, "boot_id": 3, "fw_version": "1.4.0",
                   "board": "rpi_pico", "fingerprint": "ab12cd34", "state": "RUNNING"},
        "coder": "connected", "camera": "lost [red]x[/red]", "counts": {"detected": 12, "good": 11, "bad": 1},
        "alarms": [{"at": "2026-12-01T14:00:00Z", "kind": "CAMERA_LOST", "detail": "reconnecting"}],
        "outbox": {"waiting": 2},
    })
    loop.start()
    yield server, loop
    loop.stop()
    server.close()


def test_operator_commands_carry_user_and_reason(agent):
    server, loop = agent
    addr = ["--control", server.address]
    r = line("start", *addr, "--user", "alice", "--reason", "shift start")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "serialine line start: no batch selected: select one first\n")
    r = line("select", "B1", *addr, "--user", "alice", "--reason", "lot 42 today")
    assert (r.returncode, r.stdout, r.stderr) == (0, "batch.select: done\n", "")
    r = line("start", *addr, "--user", "alice", "--reason", "shift start", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"]["running"] is True
    for cmd in ("stop", "clear"):
        r = line(cmd, *addr, "--user", "bob", "--reason", "jam at the coder")
        assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert [(q.command, q.args, q.user, q.reason) for q in loop.seen] == [
        ("line.start", {}, "alice", "shift start"),
        ("batch.select", {"batch": "B1"}, "alice", "lot 42 today"),
        ("line.start", {}, "alice", "shift start"),
        ("line.stop", {}, "bob", "jam at the coder"),
        ("line.clear", {}, "bob", "jam at the coder"),
    ]


def test_refused_at_the_edge_is_one_line_and_nothing_reaches_the_agent(agent):
    server, loop = agent
    r = line("stop", "--control", server.address, "--user", "alice", "--reason", "no")
    assert (r.returncode, r.stderr) == (1, "serialine line stop: a reason is required: 4 to 500 printable characters,"
                                           " saying why (got 'no')\n")
    r = line("stop", "--control", server.address, "--user", "", "--reason", "jam at the coder")
    assert (r.returncode, r.stderr) == (1, "serialine line stop: user is required: 1-64 printable characters\n")
    r = line("stop", "--control", server.address, "--reason", "jam at the coder")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--user" in r.stderr
    r = line("start", "--control", server.address, "--config", "line.toml", "--user", "a", "--reason", "abcd")
    assert r.returncode == 2 and "not allowed with" in r.stderr
    assert loop.seen == []


def test_status_readable_and_json(agent):
    server, loop = agent
    r = line("status", "--control", server.address)
    assert r.returncode == 0 and r.stderr == ""
    out = r.stdout
    for text in (f"{server.address}  ready: yes", "rpi_pico", "fw_version 1.4.0", "fingerprint ab12cd34",
                 "lost [red]x[/red]", "detected 12", "CAMERA_LOST", "reconnecting", "none selected"):
        assert text in out, (text, out)
    r = line("status", "--control", server.address, "--json")
    snap = json.loads(r.stdout)
    assert snap["device"]["boot_id"] == 3 and snap["ready"] is True and "ok" not in snap


def test_no_agent_and_bad_address():
    with ControlServer("127.0.0.1", 0) as server:
        address = server.address
    r = line("status", "--control", address)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"serialine line status: no agent answering at {address}\n")
    r = line("stop", "--control", address, "--user", "alice", "--reason", "jam at the coder")
    assert (r.returncode, r.stderr) == (1, f"serialine line stop: no agent answering at {address}\n")
    r = line("status", "--control", "nowhere")
    assert (r.returncode, r.stderr) == (
        1, "serialine line status: control address 'nowhere': expected HOST:PORT with a port 0-65535\n")


def test_the_line_file_names_the_address(agent, tmp_path):
    from serialine.host import linefile

    server, _ = agent
    examples = Path(__file__).resolve().parents[2] / "examples" / "line.toml"
    text = examples.read_text()
    cfg = linefile.parse(text, str(examples))
    old = cfg.control.address
    assert old in text
    path = tmp_path / "line.toml"
    path.write_text(text.replace(old, server.address))
    r = line("status", "--config", str(path), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ready"] is True
    r = line("status", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no such file" in r.stderr
