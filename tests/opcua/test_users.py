"""The OPC UA users file (scrypt hashes, never a password) and the [opcua] line-file section."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serialine.host import linefile
from serialine.host.opcua import users


def test_users_file_holds_only_scrypt_hashes(tmp_path):
    path = tmp_path / "users"
    users.add(path, "olga", "operator", "correct horse")
    users.add(path, "vera", "viewer", "battery staple")
    text = path.read_text()
    assert "correct horse" not in text and "battery staple" not in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    acc = users.load(path)
    assert acc["olga"].role == "operator" and acc["olga"].hashed.startswith("scrypt$16384$8$1$")
    assert users.check_password(acc["olga"].hashed, "correct horse")
    assert not users.check_password(acc["olga"].hashed, "correct horsE")
    assert acc["olga"].hashed != users.hash_password("correct horse")  # salted
    with pytest.raises(users.UsersError, match="role"):
        users.add(path, "x", "admin", "long enough")
    with pytest.raises(users.UsersError, match="at least 8"):
        users.add(path, "x", "viewer", "short")
    path.write_text("olga operator correct-horse\n")
    with pytest.raises(users.UsersError, match="line 1"):
        users.load(path)


def test_user_add_cli_reads_the_password_from_stdin(tmp_path):
    path = tmp_path / "users"
    r = subprocess.run([sys.executable, "-m", "serialine.host.cli", "opcua", "user", "add", str(path), "emil",
                        "--role", "engineer"], input="eng-secret-1\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "eng-secret-1" not in r.stdout + r.stderr + path.read_text()
    assert users.check_password(users.load(path)["emil"].hashed, "eng-secret-1")


def test_serve_refuses_bad_input_in_one_line(tmp_path):
    def serve(*args):
        return subprocess.run([sys.executable, "-m", "serialine.host.cli", "opcua", "serve", *args],
                              capture_output=True, text=True, timeout=60)
    from serialine.host import db
    db.connect(str(tmp_path / "l.db")).close()
    users.add(tmp_path / "users", "olga", "operator", "op-secret-1")
    for args, why in ((["--endpoint", "http://x:1", "--users", str(tmp_path / "users")], "opc.tcp://HOST:PORT"),
                      (["--endpoint", "opc.tcp://127.0.0.1:4999", "--users", str(tmp_path / "nope")], "no such users file"),
                      (["--endpoint", "opc.tcp://127.0.0.1:4999"], "no OPC UA users")):
        r = serve("--db", str(tmp_path / "l.db"), *args)
        assert r.returncode == 1 and why in r.stderr and "Traceback" not in r.stderr, r.stderr


LINE = """
[identity]
line_id = "line-1"
[device]
port = "/dev/ttyUSB0"
board = "sim"
[line]
counts_per_mm = 4
coder_at_mm = 100.0
camera_at_mm = 200.0
gate_at_mm = 400.0
gate_window_mm = 15.0
gate_lead_ms = 8.0
gate_dwell_mm = 20.0
confirm_window_mm = 80.0
max_speed_mm_s = 300.0
[coder]
driver = "serialine"
address = "127.0.0.1:7001"
[camera]
driver = "serialine"
address = "127.0.0.1:7002"
[ledger]
path = "serialine.db"
"""


def test_line_file_opcua_section():
    assert linefile.parse(LINE, "l.toml").opcua is None
    cfg = linefile.parse(LINE + '[opcua]\nendpoint = "opc.tcp://0.0.0.0:4840"\nusers = "/etc/serialine/opcua-users"\n',
                         "l.toml")
    assert cfg.opcua.endpoint == "opc.tcp://0.0.0.0:4840" and cfg.opcua.anonymous is False
    assert linefile.parse(linefile.to_toml(cfg), "l.toml") == cfg
    with pytest.raises(linefile.LineFileError, match=r"\[opcua\] endpoint"):
        linefile.parse(LINE + '[opcua]\nendpoint = "opc.tcp://nohost"\nusers = "u"\n', "l.toml")
    with pytest.raises(linefile.LineFileError, match="password"):  # a secret never in the TOML
        linefile.parse(LINE + '[opcua]\nendpoint = "opc.tcp://h:1"\nusers = "u"\npassword = "x"\n', "l.toml")
