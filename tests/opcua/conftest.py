"""OPC UA fixtures: a real ledger, a users file, a real asyncua server on a loopback port and an
independent asyncua client (host/opcua/client.py's PoolClient speaks plain OPC UA to it)."""

from __future__ import annotations

import pytest

from serialine.host.opcua import users
from serialine.host.opcua.server import Background

from opcuakit import PASSWORDS, free_port, make_ledger


@pytest.fixture(scope="session")
def users_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("opcua") / "users"
    for name, (role, password) in PASSWORDS.items():
        users.add(path, name, role, password)
    return path


@pytest.fixture
def site(tmp_path, users_file):
    """A site ledger with 3,000 serials, served as an OPEN-SCS pool manager."""
    conn = make_ledger(tmp_path / "site.db", 3000)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    bg = Background(conn, endpoint, str(users_file), tmp_path / "site.db.opcua-pki", max_requestable=1000).start()
    bg.conn, bg.endpoint, bg.pki = conn, endpoint, tmp_path / "client-pki"
    yield bg
    bg.stop()
    conn.close()
