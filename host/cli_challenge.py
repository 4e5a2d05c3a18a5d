"""`serialine challenge --config line.toml --user U --reason R [--plot FILE.png]`: the challenge test
through the running agent (host/challenge.py, docs/commissioning.md). Exit 0 when every pack was
handled right; 1 with one line per pack that was not (or a refusal); 2 on usage."""

from __future__ import annotations

import argparse
import sys
import time

from . import challenge


def main(argv: list[str]) -> int:
    from . import linefile
    from .control import Client, ControlError
    ap = argparse.ArgumentParser(prog="serialine challenge", description="challenge-test the reject system of a running line")
    ap.add_argument("--config", required=True, help="the line file (its [control] address)")
    ap.add_argument("--control", metavar="ADDR", help="the agent's control address (default: the line file's)")
    ap.add_argument("--user", required=True, help="who runs the challenge (in the audit record)")
    ap.add_argument("--reason", required=True, help="why (at least 4 characters)")
    ap.add_argument("--plan", help=f"pack kinds, bad ones first (default {','.join(challenge.PLAN)})")
    ap.add_argument("--timeout", type=float, default=challenge.TIMEOUT_S, help="seconds for every pack's outcome")
    ap.add_argument("--plot", metavar="FILE.png", help="the timing plot: gate open window against pack positions")
    a = ap.parse_args(argv)
    try:
        plan = challenge.parse_plan(a.plan)
        cfg = linefile.load(a.config)
        client = Client(a.control or cfg.control.address)
        from .tune import command_as
        got = command_as(client, "challenge.run", a.user, a.reason, plan=",".join(plan), timeout_s=f"{a.timeout:g}")
    except (ControlError, ValueError) as exc:  # LineFileError and ChallengeError are ValueErrors
        print(f"serialine challenge: {exc}", file=sys.stderr)
        return 1
    token = got["token"]
    print(f"challenge {token} armed on line {cfg.identity.line_id}: feed {len(plan)} pack(s) in this order: "
          + ", ".join(f"{i + 1} {k}" for i, k in enumerate(plan)), flush=True)
    view = None
    end = time.monotonic() + a.timeout + 30
    while time.monotonic() < end:
        try:
            view = client.status().get("challenge")
        except ControlError as exc:
            print(f"serialine challenge: {exc}", file=sys.stderr)
            return 1
        if view and view.get("token") == token and view.get("state") != "armed":
            break
        time.sleep(0.3)
    else:
        print(f"serialine challenge: no result from the agent within {a.timeout + 30:g} s", file=sys.stderr)
        return 1
    for line in challenge.result_lines(view):
        print(line)
    if a.plot:
        g = cfg.geometry
        challenge.plot(view, {"gate_window_mm": g.gate_window_mm, "gate_dwell_mm": g.gate_dwell_mm}, a.plot)
        print(f"timing plot: {a.plot}")
    print(f"audit record {view.get('record')}: challenge {view['state']}")
    if view["state"] != "passed":
        for p in view.get("problems", []):
            print(f"serialine challenge: {p}", file=sys.stderr)
        return 1
    return 0
