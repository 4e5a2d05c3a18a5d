"""`serialine opcua serve` (a standalone OPEN-SCS pool manager on a ledger) and `serialine opcua
user add` (the users file, passwords hashed with scrypt)."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import threading

from .. import ledgerfile


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine opcua", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="serve the ledger's serial pools as an OPEN-SCS pool manager")
    p.add_argument("--db", default=os.environ.get("SERIALINE_DB", "serialine.db"), help="ledger file")
    p.add_argument("--endpoint", default="opc.tcp://127.0.0.1:4840", help="opc.tcp://HOST:PORT to listen on")
    p.add_argument("--users", help="users file (serialine opcua user add), for a ledger without users: once it"
                   " has users (serialine users add), they log in")
    p.add_argument("--pki", help="folder of the application certificate (default: LEDGER.opcua-pki)")
    p.add_argument("--anonymous", action="store_true", help="also let anonymous clients in, as viewers")
    p = sub.add_parser("user", help="users file: add NAME with a role (password from the terminal or stdin)")
    p.add_argument("action", choices=["add"])
    p.add_argument("file")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["viewer", "operator", "engineer"])
    a = ap.parse_args(argv)
    if a.cmd == "user":
        return ledgerfile.run("serialine opcua", _add_user, a)
    return ledgerfile.run("serialine opcua", _serve, a)


def _add_user(a) -> int:
    from . import users
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {a.name}: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the passwords differ; nothing changed")
    else:
        password = sys.stdin.readline().rstrip("\n")
    users.add(a.file, a.name, a.role, password)
    print(f"user {a.name} ({a.role}) in {a.file}")
    return 0


def _serve(a) -> int:
    from .server import Background
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    conn = ledgerfile.open_ledger(a.db)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bg = Background(conn, a.endpoint, a.users, a.pki or f"{a.db}.opcua-pki", anonymous=a.anonymous).start()
    try:
        stop.wait()
    finally:
        bg.stop()
        conn.close()
    return 0
