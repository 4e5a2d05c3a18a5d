"""Helpers of the OPC UA tests (a module of its own: `conftest` is a shared name across test folders)."""

from __future__ import annotations

import asyncio
import socket

from serialine.host import db, masterdata, serials
from serialine.host.opcua.client import PoolClient

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


def session(bg, user="emil", password=None):  # pool calls take masterdata.change (engineer)
    password = password if password is not None else PASSWORDS[user][1]
    return PoolClient(bg.endpoint, user, password, bg.pki)


def run(coro):
    return asyncio.run(coro)
