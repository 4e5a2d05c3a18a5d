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
    ap.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain) file")
    ap.add_argument("--tls-key", metavar="PEM", help="... and its private key file")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from ..ledgerfile import LedgerFileError
    from .. import control as control_mod
    db, address = args.db, args.control
    window = None
    if args.config:
        from .. import linefile
        try:
            cfg = linefile.load(args.config)
        except linefile.LineFileError as exc:
            print(f"serialine console: {exc}", file=sys.stderr)
            return 1
        address = address or cfg.control.address
        window = cfg.geometry.gate_window_mm * cfg.geometry.counts_per_mm
        if "--db" not in argv and cfg.ledger:
            db = cfg.ledger
    address = address or control_mod.DEFAULT_ADDRESS
    if not 0 <= args.port <= 65535:
        print(f"serialine console: --port {args.port}: want 0-65535", file=sys.stderr)
        return 2
    try:
        ipaddress.ip_address(args.bind)
    except ValueError:
        print(f"serialine console: --bind {args.bind!r}: want an IP address (127.0.0.1, 0.0.0.0, ::1)", file=sys.stderr)
        return 2
    from .serve import ConsoleError, Server
    try:
        server = Server(db, address, args.bind, args.port, tls_cert=args.tls_cert, tls_key=args.tls_key,
                        gate_window_counts=window)
    except (LedgerFileError, ConsoleError) as exc:
        print(f"serialine console: {exc}", file=sys.stderr)
        return 1
    print(f"serialine console: on {server.url}/ (agent control at {address})", file=sys.stderr, flush=True)
    logging.getLogger("serialine").setLevel(logging.INFO)
    server.run()
    return 0
