"""`serialine bench link`: link goodput against byte corruption. For each rate, the real
MicroPython device link (boards/sim/linkdev.py running firmware/link.py in the unix port) sends N
UNIT_DETECTED events to the host endpoint (host/link.py) through a pty relay that flips one bit
in that fraction of bytes, both directions; the host sends a few commands back. Prints a table,
then one JSON line.

    serialine bench link [--events N] [--rates 0,0.1,0.5,1,2,5] [--seed S] [--timeout SECONDS]

Rates are percent of bytes corrupted. A row counts only if HELLO completed and every event
arrived exactly once, in order (and every command was applied exactly once); goodput is
delivered events per second of wall time after HELLO.
"""

from __future__ import annotations

import argparse
import json
import sys

from serialine.tools import selftest

RATES = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)


def measure(rate_pct: float, events: int, seed: int, timeout: float) -> dict:
    try:
        r = selftest.run(events, commands=5, corrupt=rate_pct / 100, drop=0.0, dup=0.0,
                         seed=seed, timeout=timeout)
    except Exception as exc:  # no HELLO within 10 s: a row that says so
        return dict(corrupt_pct=rate_pct, ok=False, error=str(exc).splitlines()[0])
    d, h = r["device"], r["host"]
    return dict(
        corrupt_pct=rate_pct, ok=r["ok"], delivered=r["delivered"], events=events,
        hello_s=round(r["hello_s"], 3), elapsed_s=round(r["elapsed_s"], 3),
        events_per_s=round(r["delivered"] / max(r["elapsed_s"], 1e-9), 1),
        device_retransmits=d.get("retransmits", 0), device_fast=d.get("fast_retransmits", 0),
        device_timeouts=d.get("timeouts", 0), device_rto_ms=d.get("rto_ms", 0),
        host_retransmits=h["retransmits"], bad_frames=h["bad_frames"] + d.get("bad_crc", 0)
        + d.get("bad_header", 0), corrupted_bytes=r["relay"]["corrupted"])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine bench link", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES),
                    help="percent of bytes corrupted, comma separated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120.0, help="per rate, after HELLO")
    a = ap.parse_args(argv)
    try:
        rates = [float(x) for x in a.rates.split(",") if x.strip()]
    except ValueError:
        print(f"serialine bench link: --rates {a.rates!r} is not a list of numbers", file=sys.stderr)
        return 2
    if a.events < 1 or any(not 0 <= r < 100 for r in rates):
        print("serialine bench link: --events >= 1 and rates in [0, 100) are required", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = []
    for rate in rates:
        rows.append(measure(rate, a.events, a.seed, a.timeout))
        console.print(f"corruption {rate:g} %: " + (
            f"{rows[-1]['events_per_s']:,.0f} events/s" if "events_per_s" in rows[-1]
            else rows[-1]["error"]))
    t = Table(title=f"link goodput, {a.events} events, MicroPython device over a corrupting pty")
    for col in ("corrupt %", "HELLO s", "events/s", "exactly once", "resends fast+RTO", "host resends"):
        t.add_column(col, justify="right")
    for r in rows:
        if "error" in r:
            t.add_row(f"{r['corrupt_pct']:g}", "[bold red]none[/]", "0", "no", "", "")
            continue
        t.add_row(f"{r['corrupt_pct']:g}", f"{r['hello_s']:.2f}", f"{r['events_per_s']:,.0f}",
                  "[green]yes[/]" if r["ok"] else f"[bold red]{r['delivered']} of {r['events']}[/]",
                  f"{r['device_fast']} + {r['device_timeouts']}", str(r["host_retransmits"]))
    console.print(t)
    print(json.dumps(dict(events=a.events, seed=a.seed, rows=rows), sort_keys=True))
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
