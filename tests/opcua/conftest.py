"""OPC UA fixtures: a real ledger, a users file, a real asyncua server on a loopback port and an
independent asyncua client (host/opcua/client.py's PoolClient speaks plain OPC UA to it)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from serialine.host import db, masterdata, serials
from serialine.host.opcua import users
from serialine.host.opcua.client import PoolClient
from serialine.host.opcua.server import Background

GTIN = "09506000134352"
PREFIX_LEN = 7
PASSWORDS = {"olga": ("operator", "op-secret-1"), "vera": ("viewer", "view-secret-1"),
             "emil": ("engineer", "eng-secret-1")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ledger(path, count: int = 0, batch: bool = True):
    c = db.connect(str(path))
    masterdata.add_product(c, GTIN, "Aspirin 100 mg", "EU_FMD", PREFIX_LEN)
    if count:
        serials.generate(c, GTIN, count)
    if batch:
        masterdata.create_batch(c, "B1", GTIN, "L1", "2030-01-31", 100, 3, 2)
        masterdata.start_batch(c, "B1")
    return c


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


def session(bg, user="olga", password=None):
    password = password if password is not None else PASSWORDS[user][1]
    return PoolClient(bg.endpoint, user, password, bg.pki)


def run(coro):
    return asyncio.run(coro)
