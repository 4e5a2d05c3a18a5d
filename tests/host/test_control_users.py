"""The control interface on a ledger with users (host/users.py): the user must prove it with a
password and may do the command, checked in the HTTP thread before the agent loop sees anything;
`serialine line` asks for the password only when the agent wants it. Real SQLite ledger, real HTTP."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from serialine.host import db, users
from serialine.host.control import Client, ControlError, ControlServer, ledger_authorizer
from test_control import FakeLoop

SERIALINE = str(Path(sys.executable).with_name("serialine"))
PASSWORDS = {"ada": "admin-pass-123", "otto": "line-pass-456", "quinn": "qa-pass-7890"}


@pytest.fixture
def ledger(tmp_path):
    path = tmp_path / "ledger.db"
    conn = db.connect(str(path))
    users.add(conn, "ada", "admin", PASSWORDS["ada"], by="setup", reason="first admin", full_name="Ada Admin")
    users.add(conn, "otto", "operator", PASSWORDS["otto"], by="ada", reason="line operator", full_name="Otto Op")
    users.add(conn, "quinn", "qa", PASSWORDS["quinn"], by="ada", reason="QA reviewer", full_name="Quinn QA")
    conn.close()
    return path


@pytest.fixture
def agent(ledger):
    server = ControlServer("127.0.0.1", 0, authorize=ledger_authorizer(str(ledger)))
    loop = FakeLoop(server)
    loop.start()
    yield server, loop
    loop.stop()
    server.close()


def trail(path: Path, action: str) -> list[dict]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [json.loads(d) for (d,) in conn.execute("SELECT detail FROM audit WHERE action=? ORDER BY seq", (action,))]
    finally:
        conn.close()


def test_a_command_needs_the_users_password_and_role(agent, ledger, caplog):
    server, loop = agent
    caplog.set_level(logging.DEBUG, logger="serialine.control")
    client = Client(server.address)
    with pytest.raises(ControlError, match=r"^line.clear needs the password of otto \(this ledger has users\)$") as e:
        client.command("line.clear", "otto", "jam cleared")
    assert e.value.need == "password"
    with pytest.raises(ControlError, match=r"^wrong password for otto \(1 of 5 before a lockout\)$") as e:
        client.command("line.clear", "otto", "jam cleared", password="not-the-one-00")
    assert e.value.need is None
    with pytest.raises(ControlError, match="unknown user 'mallory'"):
        client.command("line.stop", "mallory", "just looking", password="whatever-123")
    with pytest.raises(ControlError, match="quinn"):  # QA may not start the line ...
        client.command("line.start", "quinn", "shift start", password=PASSWORDS["quinn"])
    assert loop.seen == []  # nothing of that reached the agent loop
    client.command("line.stop", "quinn", "something smells", password=PASSWORDS["quinn"])  # ... but stop it
    client.command("line.clear", "otto", "jam cleared", password=PASSWORDS["otto"])
    assert [(r.command, r.user) for r in loop.seen] == [("line.stop", "quinn"), ("line.clear", "otto")]
    assert not hasattr(loop.seen[0], "password")  # the loop never holds a password
    assert [d["why"] for d in trail(ledger, "user.login_failed")] == ["wrong password", "unknown user"]
    assert [d["action"] for d in trail(ledger, "user.refused")] == ["line.start"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(p in logged for p in PASSWORDS.values()) and "not-the-one-00" not in logged


def test_a_ledger_without_users_takes_the_user_as_given(tmp_path):
    path = tmp_path / "ledger.db"
    db.connect(str(path)).close()
    with ControlServer("127.0.0.1", 0, authorize=ledger_authorizer(str(path))) as server:
        loop = FakeLoop(server)
        loop.start()
        try:
            Client(server.address).command("line.stop", "anyone", "before users were set up")
        finally:
            loop.stop()
        assert [r.user for r in loop.seen] == ["anyone"]
    with ControlServer("127.0.0.1", 0, authorize=ledger_authorizer(str(tmp_path / "gone.db"))) as server:
        with pytest.raises(ControlError, match=r"^the ledger cannot be read to check anyone: no ledger at "):
            Client(server.address).command("line.stop", "anyone", "ledger went away")


def line(*args: str, env=None, input=None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != users.PASSWORD_ENV}
    return subprocess.run([SERIALINE, "line", *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})}, input=input)


def test_serialine_line_sends_the_password_when_the_agent_asks(agent):
    server, loop = agent
    addr = ["--control", server.address]
    r = line("clear", *addr, "--user", "otto", "--reason", "jam cleared", env={users.PASSWORD_ENV: PASSWORDS["otto"]})
    assert (r.returncode, r.stdout, r.stderr) == (0, "line.clear: done\n", "")
    r = line("stop", *addr, "--user", "otto", "--reason", "end of shift", input=PASSWORDS["otto"] + "\n")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    r = line("stop", *addr, "--user", "otto", "--reason", "end of shift", input="")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no password on stdin" in r.stderr, r.stderr
    r = line("start", *addr, "--user", "otto", "--reason", "shift start", input="wrong-password-1\n")
    assert (r.returncode, r.stderr) == (1, "serialine line start: wrong password for otto (1 of 5 before a lockout)\n")
    assert [(q.command, q.user) for q in loop.seen] == [("line.clear", "otto"), ("line.stop", "otto")]


def test_every_command_is_an_action_the_users_table_knows():
    from serialine.host import control
    for _, command, _ in control.ENDPOINTS.values():
        if command is not None:
            assert control.USER_ACTION.get(command, command) in users.PERMISSIONS, command
