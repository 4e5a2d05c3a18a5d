"""`serialine sim`: run one simulated batch end to end and report on it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .scenario import ScenarioError, load, names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="serialine sim",
        description="Run a simulated line end to end: firmware in the MicroPython unix port, the host "
                    "agent over a pty, simulated coder and camera on loopback, SQLite, EPCIS.")
    p.add_argument("--scenario", default="nominal",
                   help=f"a shipped scenario ({', '.join(names())}) or a TOML file (default nominal)")
    p.add_argument("--units", type=int, help="packs to run (overrides the scenario)")
    p.add_argument("--ppm", type=float, help="line speed, packs per minute (overrides the scenario)")
    p.add_argument("--seed", type=int, help="random seed (overrides the scenario)")
    p.add_argument("--realtime", action="store_true", help="run on the wall clock (latency, jitter)")
    p.add_argument("--out", type=Path, default=Path("out"), help="SQLite ledger and EPCIS files (default ./out)")
    p.add_argument("--report", type=Path, help="JSON report path (default OUT/report-SCENARIO.json); "
                                                "the PNG plot goes beside it")
    p.add_argument("--batch", metavar="B", help="run batch B, created and started with serialine batch"
                   " (default: the run makes its own)")
    p.add_argument("--db", type=Path, help="the ledger B is in (default OUT/serialine.db)")
    p.add_argument("--opcua", metavar="OPC_TCP_URL", help="the agent also serves OPC UA there (PackML, OPEN-SCS:"
                   " docs/opcua.md), e.g. opc.tcp://127.0.0.1:4840; with --opcua-users")
    p.add_argument("--opcua-users", type=Path, metavar="FILE", help="its users file (serialine opcua user add)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        scenario = load(args.scenario).with_overrides(units=args.units, ppm=args.ppm, seed=args.seed)
    except ScenarioError as exc:
        print(f"serialine sim: {exc}", file=sys.stderr)
        return 2
    if (args.opcua is None) != (args.opcua_users is None):
        print("serialine sim: --opcua and --opcua-users go together", file=sys.stderr)
        return 2
    from rich.console import Console

    from . import report as rep
    from .errors import Interrupted, RunError
    from .run import run

    console = Console(stderr=False, quiet=args.quiet)
    try:
        result = run(scenario, out=args.out, realtime=args.realtime, console=console, batch_id=args.batch,
                     db=args.db, opcua=(args.opcua, str(args.opcua_users.resolve())) if args.opcua else None)
    except Interrupted as exc:
        print(f"serialine sim: {exc}", file=sys.stderr)
        return 130  # as a shell reports a SIGINT
    except (RunError, ScenarioError) as exc:
        print(f"serialine sim: {exc}", file=sys.stderr)
        return 2
    path = args.report or args.out / f"report-{scenario.name}.json"
    json_path, png = rep.write(result, path)
    console.print(rep.table(result))
    console.print(f"report {json_path}  plot {png}")
    status = exit_status(result)
    if status == 3:
        print(f"serialine sim: run invalid: {result['invalid']}", file=sys.stderr)
    elif status:
        broken = [k for k, v in result["invariants"].items() if not v]
        print(f"serialine sim: invariants broken: {', '.join(broken)}", file=sys.stderr)
    return status


def exit_status(result: dict) -> int:
    """0 every invariant holds; 1 one is broken; 3 the run is invalid (the simulator itself could
    not keep up, so the line is neither passed nor blamed); 2 refused or failed to run; 130 Ctrl-C."""
    if result.get("invalid"):
        return 3
    return 0 if result["ok"] else 1
