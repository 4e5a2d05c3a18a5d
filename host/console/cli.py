"""`serialine console --db LEDGER [--port N] [--bind ADDR] [--control ADDR]`: the web console."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

DEFAULT_PORT = 8780


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="serialine console", description=(
        "The operator and QA console in a browser: operator screen, batch records and signatures,"
        " audit trail, trends (docs/console.md)."))
    ap.add_argument("--db", default=os.environ.get("SERIALINE_DB", "serialine.db"), help="the ledger")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    ap.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this PC only)")
    ap.add_argument("--control", metavar="ADDR", help="the agent's control address, e.g. 127.0.0.1:8765"
                    " (default: from --config, else 127.0.0.1:8765)")
    ap.add_argument("--config", metavar="LINE.TOML", help="a line file: its [control] address and [ledger] path")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from ..ledgerfile import LedgerFileError
    from .. import control as control_mod
    db, address = args.db, args.control
    if args.config:
        from .. import linefile
        try:
            cfg = linefile.load(args.config)
        except linefile.LineFileError as exc:
            print(f"serialine console: {exc}", file=sys.stderr)
            return 1
        address = address or cfg.control.address
        if "--db" not in argv and cfg.ledger.path:
            db = cfg.ledger.path
    address = address or control_mod.DEFAULT_ADDRESS
    if not 0 <= args.port <= 65535:
        print(f"serialine console: --port {args.port}: want 0-65535", file=sys.stderr)
        return 2
    try:
        ipaddress.ip_address(args.bind)
    except ValueError:
        print(f"serialine console: --bind {args.bind!r}: want an IP address (127.0.0.1, 0.0.0.0, ::1)", file=sys.stderr)
        return 2
    try:
        from .app import create_app
        app = create_app(db, address)
    except LedgerFileError as exc:
        print(f"serialine console: {exc}", file=sys.stderr)
        return 1
    return serve(app, args.bind, args.port)


def serve(app, host: str, port: int) -> int:
    import socket

    import uvicorn
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        print(f"serialine console: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"serialine console: on http://{shown}:{bound}/", file=sys.stderr, flush=True)
    logging.getLogger("serialine").setLevel(logging.INFO)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0
