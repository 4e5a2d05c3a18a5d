"""`serialine` — one command, many subcommands. Each subcommand lives in its own module and is
imported only when used, so a broken or heavy module never slows the others down."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, function, one-line help). The function takes argv (list[str]) and returns
# an exit status.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "selftest": ("serialine.tools.selftest", "main", "protocol self-test: host <-> firmware in the MicroPython unix port over a pty"),
    "sim": ("serialine.host.sim.cli", "main", "run a simulated line end to end"),
    "agent": ("serialine.host.cli_agent", "main", "the host agent for one line: run (a service) | check (its line file)"),
    "init": ("serialine.host.cli_batch", "init_main", "create an empty ledger (no other command creates one)"),
    "batch": ("serialine.host.cli_batch", "main", "products, batches, serials: create, start, close, reconcile, abort, reopen"),
    "rework": ("serialine.host.cli_batch", "rework_main", "rework: remove, replace, disaggregate, decommission"),
    "audit": ("serialine.host.cli_batch", "audit_main", "verify the hash-chained audit log"),
    "users": ("serialine.host.cli_users", "main", "users and roles of the ledger: add, list, disable, reset-password (Part 11)"),
    "epcis": ("serialine.host.epcis.cli", "main", "EPCIS export"),
    "outbox": ("serialine.host.epcis.cli", "outbox_main", "what is waiting to go upstream, and why"),
    "ship": ("serialine.host.ship", "main", "pallets leave the site: EPCIS shipping event (PO, despatch advice)"),
    "line": ("serialine.host.cli_line", "main", "operator commands to a running agent: start, stop, clear, select, status"),
    "challenge": ("serialine.host.cli_challenge", "main", "challenge-test the reject system of a running line (audited, PNG plot)"),
    "tune": ("serialine.host.tune", "main", "live view for tuning a running line: speed, gate error, verdict latency, rejects; --plot"),
    "device": ("serialine.tools.device", "main", "flash a board (verified on the device, HELLO checked); the unix port as a sim board"),
    "verify": ("serialine.host.verify.cli", "main", "decode and grade DataMatrix images (ISO/IEC 15415, uncalibrated)"),
    "frames": ("serialine.tools.frames", "main", "decode a captured or live link byte stream into frames, flagging errors"),
    "opcua": ("serialine.host.opcua.cli", "main", "OPC UA: serve the ledger's serial pools (OPEN-SCS); users file"),
    "console": ("serialine.host.console.cli", "main", "the operator and QA console in a browser: line, batch records, signatures, audit, trends"),
    "bench": ("serialine.tools.bench", "main", "benchmarks: protocol | firmware | host | epcis | line | link | verify"),
}

# commands on the ledger: errors the ledger or its input raise are said in one line (host/ledgerfile.py)
LEDGER_COMMANDS = ("init", "batch", "rework", "audit", "epcis", "outbox", "users")


def at_least_one(text: str) -> int:
    """argparse type of a subcommand's count: a whole number of 1 or more (else argparse's one line)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return n


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return f"usage: serialine COMMAND [ARGS...]\n\ncommands:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"serialine: unknown command {name!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            print(f"serialine: command {name!r} is not available in this build ({exc})", file=sys.stderr)
            return 2
        raise
    if name in LEDGER_COMMANDS:  # an expected failure is one line, whichever module raised it
        from serialine.host import ledgerfile
        return ledgerfile.run(f"serialine {name}", getattr(mod, func), rest)
    return int(getattr(mod, func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
