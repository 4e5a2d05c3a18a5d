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
    assert users.check_password("correct horse", acc["olga"].hashed)
    assert not users.check_password("correct horsE", acc["olga"].hashed)
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
    assert users.check_password("eng-secret-1", users.load(path)["emil"].hashed)


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


# --- the parsers: property tests ----------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from serialine.host import db, gs1, masterdata  # noqa: E402
from serialine.host.opcua import openscs  # noqa: E402

GTIN = "09506000134352"
SERIAL = st.text(alphabet=sorted(gs1.CSET82), min_size=1, max_size=20)


@pytest.fixture(scope="module")
def mem():
    c = db.connect(":memory:")
    masterdata.add_product(c, GTIN, "Aspirin", "EU_FMD", 7)
    return c


@settings(max_examples=300, deadline=None)
@given(serial=SERIAL, fmt=st.sampled_from(openscs.FORMATS))
def test_every_sn_format_round_trips(mem, serial, fmt):
    assert openscs.decode(mem, GTIN, openscs.encode(mem, GTIN, serial, fmt), fmt) == serial


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40), fmt=st.sampled_from(openscs.FORMATS))
def test_a_bad_serial_text_is_a_return_code_never_a_crash(mem, text, fmt):
    try:
        serial = openscs.decode(mem, GTIN, text, fmt)
    except openscs.CallRefused as r:
        assert r.status is openscs.Ret.InvalidSerialNumbersFormat
    else:
        assert openscs.encode(mem, GTIN, serial, fmt) == text


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(st.one_of(st.none(), st.text(max_size=8)), st.one_of(st.none(), st.text(max_size=16))),
                      max_size=4))
def test_selection_criteria_are_gtin_and_lot_or_a_return_code(pairs):
    try:
        gtin, lot = openscs.criteria(pairs)
    except openscs.CallRefused as r:
        assert r.status is openscs.Ret.InvalidSelectionCriteria
    else:
        assert len(gtin) == 14 and gtin.isdigit()


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_a_users_file_loads_or_is_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("u") / "users"
    path.write_text(text, encoding="utf-8")
    try:
        out = users.load(path)
    except users.UsersError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(a.role in users.ROLES for a in out.values())


def test_agent_with_its_opcua_port_taken_exits_1_in_one_line(tmp_path):
    import socket
    from serialine.host import db as ledger_db
    ledger_db.connect(str(tmp_path / "l.db")).close()
    users.add(tmp_path / "users", "olga", "operator", "op-secret-1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "line.toml"
        cfg.write_text(LINE.replace('path = "serialine.db"', f'path = "{tmp_path / "l.db"}"')
                       + f'[control]\naddress = "127.0.0.1:0"\n[opcua]\nendpoint = "opc.tcp://127.0.0.1:{port}"\n'
                       f'users = "{tmp_path / "users"}"\n')
        r = subprocess.run([sys.executable, "-m", "serialine.host.cli", "agent", "run", "--config", str(cfg)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "[opcua]" in r.stderr and "Traceback" not in r.stderr, r.stderr
