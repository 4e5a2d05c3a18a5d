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


def test_serialine_agent_run_checks_the_users_of_its_ledger(tmp_path):
    """Through the real service: its control interface asks the ledger's users (a pty stands in for
    the device's port; the service serves its control interface while it waits for a batch)."""
    import pty
    import re
    import signal
    import threading
    import time

    from serialine.host.sim.camera import SimCamera
    from serialine.host.sim.coder import SimCoder

    path, batch = tmp_path / "ledger.db", "B-USERS"
    who = ["--db", str(path), "--user", "qa-anna"]
    for args in (["init", "--db", str(path)],
                 ["batch", "product", "09506000134352", "Aspirin", "--market", "EU_FMD", "--prefix-len", "7", *who],
                 ["batch", "serials", "09506000134352", "--generate", "1500", *who],
                 ["batch", "create", batch, "09506000134352", "L-U-1", "2031-01-31", "--planned", "10",
                  "--case-size", "10", "--pallet-size", "10", *who],
                 ["batch", "start", batch, *who]):
        r = subprocess.run([SERIALINE, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (args, r.stderr)
    conn = db.connect(str(path))
    users.add(conn, "ada", "admin", PASSWORDS["ada"], by="setup", reason="first admin", full_name="Ada Admin")
    users.add(conn, "otto", "operator", PASSWORDS["otto"], by="ada", reason="line operator", full_name="Otto Op")
    users.add(conn, "quinn", "qa", PASSWORDS["quinn"], by="ada", reason="QA reviewer", full_name="Quinn QA")
    conn.close()
    master, slave = pty.openpty()
    coder, camera = SimCoder().start(), SimCamera().start()
    config = tmp_path / "line.toml"
    config.write_text(f"""\
[identity]
line_id = "line-u"

[device]
port = "{os.ttyname(slave)}"

[line]
counts_per_mm = 4
coder_at_mm = 100.0
camera_at_mm = 200.0
gate_at_mm = 400.0
max_speed_mm_s = 300.0

[coder]
driver = "serialine"
address = "%s:%d"

[camera]
driver = "serialine"
address = "%s:%d"

[ledger]
path = "{path}"

[control]
address = "127.0.0.1:0"
""" % (*coder.address, *camera.address))
    proc = subprocess.Popen([SERIALINE, "agent", "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(x.rstrip("\n") for x in proc.stderr), daemon=True)
    reader.start()
    try:
        end, address = time.monotonic() + 30, None
        while address is None and time.monotonic() < end and proc.poll() is None:
            m = next((re.search(r"control interface on http://(\S+)", x) for x in list(lines) if "control interface" in x), None)
            address = m[1] if m else None
            time.sleep(0.05)
        assert address, "\n".join(lines)
        addr = ["--control", address]
        r = line("select", batch, *addr, "--user", "quinn", "--reason", "lot released", input=PASSWORDS["quinn"] + "\n")
        assert r.returncode == 1 and r.stderr.startswith("serialine line select: quinn (qa) may not do batch.select"), r.stderr
        r = line("select", batch, *addr, "--user", "otto", "--reason", "lot released", input="wrong-password-1\n")
        assert r.returncode == 1 and "wrong password for otto" in r.stderr, r.stderr
        r = line("select", batch, *addr, "--user", "otto", "--reason", "lot released", env={users.PASSWORD_ENV: PASSWORDS["otto"]})
        assert (r.returncode, r.stderr) == (0, ""), (r.stderr, "\n".join(lines))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        coder.close()
        camera.close()
        os.close(master)
        os.close(slave)
    log = "\n".join(lines)
    assert "Traceback" not in log and not any(p in log for p in PASSWORDS.values()) and "wrong-password-1" not in log
    assert [d["batch_id"] for d in trail(path, "batch.select")] == [batch]
    assert [d["action"] for d in trail(path, "user.refused")] == ["batch.select"]
