"""`serialine bench line`: the highest line speed (packs/min) the whole loop sustains with every
invariant intact — firmware in the MicroPython unix port, host agent over a pty, simulated coder and
camera, SQLite — in virtual time and in real time; gate error and verdict latency at that speed, and
how much faster than the wall clock virtual time ran (`virtual_speedup`).

Searches upward from --start in steps of --step until a run breaks an invariant, --max is reached
or --budget seconds of wall time are spent. Prints a table; the last line is one JSON object.
--opcua: the same trials with the service's [opcua] section on (PackML + OPEN-SCS served on a loopback
port, docs/opcua.md), to see what serving OPC UA costs the line. --modes realtime: the real-time search
alone. Each trial reports the CPU it cost per pack (the simulator's process and every part it started:
firmware, agent, image worker) and the load average it ran at, since on a shared machine wall-clock
figures say as much about the others' work as about the line's; a real-time trial runs its hardware
parts on SCHED_FIFO where permitted (host/sim/rtsched.py; `sched` says which), and one judged
invalid (the simulator fell behind the line: it judges nothing) is run again up to --rt-retries times
at the same speed; the table shows every trial."""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (every part of a run has)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def search(mode: str, base, start: float, step: float, top: float, budget_s: float, units: int, rows,
           opcua_users: str | None = None, retries: int = 0):
    """`retries`: an invalid trial (the simulator fell behind: it judges nothing, tests skip it) is run
    again at the same speed up to this often; a valid trial that breaks an invariant ends the search."""
    from serialine.host.sim.run import run

    best, t0, ppm, left = None, time.monotonic(), start, retries
    while ppm <= top and time.monotonic() - t0 < budget_s:
        s = base.with_overrides(ppm=ppm, units=units)
        with tempfile.TemporaryDirectory() as d:
            opcua = (f"opc.tcp://127.0.0.1:{_free_port()}", opcua_users) if opcua_users else None
            load, cpu0 = os.getloadavg()[0], _cpu_s()
            r = run(s, out=Path(d), realtime=(mode == "realtime"), opcua=opcua)
            r["_cpu_ms_per_pack"], r["_load"] = (_cpu_s() - cpu0) * 1000 / max(1, units), load
            log = Path(d) / "serialine.agent.log"
            if opcua and "opcua: serving" not in (log.read_text() if log.exists() else ""):
                raise SystemExit(f"serialine bench line: the agent did not serve OPC UA at {opcua[0]} (see its log)")
        rows.append((mode, ppm, r))
        if r.get("invalid") and left > 0:
            left -= 1
            continue
        left = retries
        if not r["ok"]:
            break
        best, ppm = (ppm, r), ppm + step
    return best


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="serialine bench line")
    p.add_argument("--scenario", default="nominal")
    p.add_argument("--units", type=int, default=300, help="packs per trial (virtual time)")
    p.add_argument("--rt-units", type=int, default=200, help="packs per trial (real time)")
    p.add_argument("--start", type=float, default=600)
    p.add_argument("--step", type=float, default=300)
    p.add_argument("--max", type=float, default=6000)
    p.add_argument("--budget", type=float, default=240, help="wall seconds per mode")
    p.add_argument("--opcua", action="store_true", help="the same trials with the agent serving OPC UA ([opcua])")
    p.add_argument("--rt-retries", type=int, default=1, help="run an invalid real-time trial (the simulator "
                   "fell behind the line) again this often at the same speed")
    p.add_argument("--modes", default="virtual,realtime", help="which searches: virtual, realtime or both (comma-separated)")
    args = p.parse_args(argv)
    modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    if not modes or modes - {"virtual", "realtime"}:
        p.error(f"--modes {args.modes!r}: want virtual, realtime or virtual,realtime")

    from rich.console import Console
    from rich.table import Table

    from serialine.host.sim.scenario import load

    base = load(args.scenario)
    rows: list = []
    with tempfile.TemporaryDirectory() as keep:
        users_file = None
        if args.opcua:  # one viewer: the server needs a user; nobody logs in during the trials
            from serialine.host.opcua import users
            users_file = str(Path(keep) / "opcua-users")
            users.add(users_file, "bench", "viewer", "bench-viewer-pw")
        best_v = best_r = None
        if "virtual" in modes:
            best_v = search("virtual", base, args.start, args.step, args.max, args.budget, args.units, rows, users_file)
        if "realtime" in modes:
            best_r = search("realtime", base, args.start, args.step, args.max, args.budget, args.rt_units, rows, users_file,
                            retries=max(0, args.rt_retries))

    t = Table(title=f"bench line — {base.name}" + (" — with OPC UA" if args.opcua else ""))
    for col in ("mode", "ppm", "ok", "gate err p99", "latency p50 ms", "latency p99 ms", "wall s", "virtual x",
                "CPU ms/pack", "load", "worst tick ms"):
        t.add_column(col, justify="right")
    for mode, ppm, r in rows:
        why = ",".join(k for k, v in r["invariants"].items() if not v) or ("ticks late" if r.get("invalid") else "")
        t.add_row(mode, f"{ppm:.0f}", "yes" if r["ok"] else "NO: " + why,
                  f"{r['gate_error_counts']['p99']:.1f}", f"{r['verdict_latency_ms']['p50']:.2f}",
                  f"{r['verdict_latency_ms']['p99']:.2f}", f"{r['wall_s']:.1f}",
                  f"{r['run']['virtual_speedup']:.1f}" if mode == "virtual" else "", f"{r['_cpu_ms_per_pack']:.1f}",
                  f"{r['_load']:.1f}", f"{r['ticks']['worst_tick_ms']:.1f}" if mode == "realtime" else "")
    Console().print(t)

    def at(best, key, sub):
        return best[1][key][sub] if best else None

    # gate error and latency at the highest real-time speed (the figures a line cares about);
    # virtual-time figures reported beside them
    print(json.dumps({
        "max_ppm_virtual": best_v[0] if best_v else 0,
        "max_ppm_realtime": best_r[0] if best_r else 0,
        "gate_error_counts_p99": at(best_r, "gate_error_counts", "p99"),
        "verdict_latency_ms_p99": at(best_r, "verdict_latency_ms", "p99"),
        "verdict_latency_ms_p50": at(best_r, "verdict_latency_ms", "p50"),
        "gate_error_counts_p99_virtual": at(best_v, "gate_error_counts", "p99"),
        # simulated seconds per wall second of the line's run (setup and drain excluded) at max_ppm_virtual
        "virtual_speedup": at(best_v, "run", "virtual_speedup"),
        "virtual_speedup_by_ppm": {f"{ppm:.0f}": r["run"]["virtual_speedup"] for mode, ppm, r in rows if mode == "virtual"},
        # CPU of the whole trial (simulator, firmware, agent; setup and close too) per pack, and the load it ran at
        "cpu_ms_per_pack_virtual_by_ppm": {f"{ppm:.0f}": round(r["_cpu_ms_per_pack"], 2)
                                           for mode, ppm, r in rows if mode == "virtual"},
        "load_avg_virtual": [round(r["_load"], 1) for mode, _, r in rows if mode == "virtual"],
        "units_per_trial": {"virtual": args.units, "realtime": args.rt_units},
        "opcua": args.opcua,
        "cpu_ms_per_pack_realtime": round(best_r[1]["_cpu_ms_per_pack"], 2) if best_r else None,
        "load_avg_realtime": [round(r["_load"], 1) for mode, _, r in rows if mode == "realtime"],
        "sched_realtime": next((r.get("sched") for mode, _, r in rows if mode == "realtime"), None),
        "realtime_trials": sum(1 for mode, _, _ in rows if mode == "realtime"),
        "realtime_invalid_trials": sum(1 for mode, _, r in rows if mode == "realtime" and r.get("invalid")),
        "realtime_stopped_by": next((r.get("invalid") or ",".join(k for k, v in r["invariants"].items() if not v)
                                     for mode, _, r in rows if mode == "realtime" and not r["ok"]), None),
    }))
    return 0
