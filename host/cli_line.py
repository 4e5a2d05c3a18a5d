"""`serialine line start|stop|clear|select|status`: the operator's commands to a running agent, through
its control interface (host/control.py, docs/agent.md). Every command that changes the line carries
a user and a reason, which the agent records in the audit log with the change."""

from __future__ import annotations

import argparse
import json
import sys

from . import control

COMMANDS = {
    "start": ("line.start", "start the line (the device runs the selected batch)"),
    "stop": ("line.stop", "stop the line; packs in flight still reach their outcome"),
    "clear": ("line.clear", "clear the latched line stop and its alarms"),
    "select": ("batch.select", "select the batch the agent runs (created and started by QA)"),
}


# On a ledger with users the agent asks for the user's password (control.NeedPassword): it is read as
# every changing command reads it (host/users.py read_password) and sent once, never shown or logged.


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line and exit 2, as argparse does, without the usage dump
        self.exit(2, f"{self.prog}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="serialine line", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{start,stop,clear,select,status}",
                           parser_class=_Parser)

    def where(sp):
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--config", metavar="LINE.TOML", help="the line file; its [control] address is used")
        g.add_argument("--control", metavar="ADDR", help=f"the agent's control address (default {control.DEFAULT_ADDRESS})")

    for name, (_, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        if name == "select":
            sp.add_argument("batch", help="batch id")
        where(sp)
        sp.add_argument("--user", required=True, help="who asks (recorded in the audit log)")
        sp.add_argument("--reason", required=True, help="why (at least 4 characters; recorded)")
        sp.add_argument("--json", action="store_true", help="print the agent's reply as JSON")
    sp = sub.add_parser("status", help="what the agent and the line are doing now",
                        description="what the agent and the line are doing now")
    where(sp)
    sp.add_argument("--json", action="store_true", help="print the raw status snapshot as JSON")
    return p


def address_of(args: argparse.Namespace) -> str:
    if args.control:
        return args.control
    if args.config:
        from . import linefile
        return linefile.load(args.config).control.address
    return control.DEFAULT_ADDRESS


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        client = control.Client(address_of(args))
        if args.cmd == "status":
            snapshot = client.status()
            if args.json:
                print(json.dumps(snapshot, indent=2, sort_keys=True))
            else:
                show_status(snapshot, client.address)
            return 0
        command, _ = COMMANDS[args.cmd]
        extra = {"batch": args.batch} if args.cmd == "select" else {}
        try:
            result = client.command(command, args.user, args.reason, **extra)
        except control.ControlError as exc:
            if exc.need != "password":
                raise
            from . import users  # a ledger with users: prove who asks ($SERIALINE_PASSWORD, prompt, stdin)
            password = users.read_password(f"password for {args.user}: ")
            result = client.command(command, args.user, args.reason, password=password, **extra)
    except control.ControlError as exc:
        print(f"serialine line {args.cmd}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # linefile.LineFileError: already names the file and key
        print(f"serialine line {args.cmd}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        said = result.get("message") or "done"
        print(f"{command}: {said}")
    return 0


def _yes_no(value) -> str:
    return "-" if value is None else ("yes" if value else "no")


def show_status(s: dict, address: str) -> None:
    """The snapshot (host/control.py, the contract in docs/agent.md) as an operator reads it."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, markup=False)  # what the agent reports is text, not markup
    dev = s.get("device") or {}
    stop = s.get("line_stop")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("agent", f"{address}  ready: {_yes_no(s.get('ready'))}"
                  + ("  (resuming the device's boot)" if s.get("resuming") else ""))
    table.add_row("line", str(s.get("line_id") or "-"))
    table.add_row("batch", str(s.get("batch") or "none selected"))
    table.add_row("line stop", "no" if not stop else (stop if isinstance(stop, str) else "latched"))
    if dev:
        table.add_row("device", "  ".join(f"{k} {dev[k]}" for k in ("device_id", "port", "board", "state") if dev.get(k) is not None))
        table.add_row("firmware", "  ".join(f"{k} {dev[k]}" for k in ("fw_version", "fingerprint", "boot_id") if dev.get(k) is not None))
    table.add_row("coder", str(s.get("coder") or "-"))
    table.add_row("camera", str(s.get("camera") or "-"))
    for key in ("counts", "outbox"):
        part = s.get(key)
        if isinstance(part, dict) and part:
            table.add_row(key, "  ".join(f"{k} {v}" for k, v in part.items()))
    console.print(table)
    alarms = s.get("alarms") or []
    if alarms:
        t = Table(title=f"latest alarms ({len(alarms)})", title_justify="left")
        keys = [k for k in ("at", "source", "alarm", "kind", "unit", "detail") if any(isinstance(a, dict) and k in a for a in alarms)]
        for k in keys or ["alarm"]:
            t.add_column(k)
        for a in alarms:
            t.add_row(*([str(a.get(k, "")) for k in keys] if isinstance(a, dict) and keys else [str(a)]))
        console.print(t)
