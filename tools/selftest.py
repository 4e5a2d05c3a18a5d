"""`serialine selftest`: the protocol self-test. Starts the real MicroPython unix port running
boards/sim/linkdev.py on one pty, connects the host endpoint through pyserial on another, and
relays bytes between them while corrupting, dropping and duplicating some. Checks HELLO with the
fingerprint, N events delivered exactly once in order, host commands applied exactly once.
Exit status 0 only if everything held."""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

from serialine.host.resources import board_dir
from serialine.host.sim import unixport
from serialine.host.sim.faults import FaultyRelay


def spawn_linkdev(tty_path: str, events: int, *args: str) -> subprocess.Popen:
    """boards/sim/linkdev.py in the real MicroPython unix port, on tty_path."""
    return unixport.spawn(["-X", "heapsize=1m", board_dir("sim") / "linkdev.py",
                           tty_path, str(events), *args],
                          cwd=None, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_linkdev(proc: subprocess.Popen, host=None, timeout: float = 5.0) -> str:
    """Ask linkdev to exit (COMMAND REBOOT, reliably delivered) and return its output."""
    if host is not None and host.up:
        host.send("COMMAND", dict(command=5, arg=0))  # Command.REBOOT
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            host.poll(0.02)
            host.ack_delivered()
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


def device_counters(output: str) -> dict:
    m = re.search(r"^DONE (.*)$", output, re.M)
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())} if m else {}


def run(events: int = 2000, commands: int = 5, corrupt: float = 0.001, drop: float = 0.001,
        dup: float = 0.01, seed: int = 1, timeout: float = 120.0) -> dict:
    """One self-test run; returns its figures and checks (see main)."""
    from serialine.host.link import HostLink

    result: dict = dict(events=events, commands=commands)
    with FaultyRelay(corrupt=corrupt, loss=drop, dup=dup, seed=seed) as relay:
        proc = spawn_linkdev(relay.device_path, events)
        host = HostLink(relay.host_path, ping_interval=0.05)
        output = ""
        try:
            t0 = time.monotonic()
            hello = host.connect(timeout=10)
            result["hello_s"] = time.monotonic() - t0
            t0 = time.monotonic()
            result["fingerprint"] = hello["fingerprint"]
            for arg in range(commands):
                host.send("COMMAND", dict(command=1, arg=1000 + arg))  # Command.START
            units: list[dict] = []
            logs: list[dict] = []
            end = time.monotonic() + timeout
            while (len(units) < events or len(logs) < commands) and time.monotonic() < end:
                for name, f in host.poll(0.05):
                    (units if name == "UNIT_DETECTED" else logs).append(f)
                host.ack_delivered()  # "stored": the ledger would commit here
            result["elapsed_s"] = time.monotonic() - t0
            output = stop_linkdev(proc, host)
        finally:
            if proc.poll() is None:
                proc.kill()
                output += proc.communicate()[0]
            host.close()
    applied = re.findall(r"^APPLIED COMMAND 1 (\d+)$", output, re.M)
    seqs = [u["unit_seq"] for u in units]
    want = [str(1000 + i) for i in range(commands)]
    result.update(
        delivered=len(units),
        exactly_once=seqs == list(range(events)),
        event_seq_in_order=[e["event_seq"] for e in sorted(units + logs, key=lambda e: e["event_seq"])]
        == list(range(events + commands)),
        commands_applied_once=applied == want,
        command_logs_once=sorted(x["text"] for x in logs) == sorted(f"applied {a}" for a in want),
        host=host.counters(), device=device_counters(output), relay=relay.totals(),
        rtt_ms=[round(r * 1000, 3) for r in host.rtts], device_output=output,
    )
    result["ok"] = all(result[k] for k in ("exactly_once", "event_seq_in_order",
                                           "commands_applied_once", "command_logs_once"))
    return result


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine selftest", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--corrupt", type=float, default=0.001, help="per-byte bit-flip rate")
    ap.add_argument("--drop", type=float, default=0.001, help="per-byte drop rate")
    ap.add_argument("--dup", type=float, default=0.01, help="per-chunk duplication rate")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    try:
        r = run(a.events, corrupt=a.corrupt, drop=a.drop, dup=a.dup, seed=a.seed, timeout=a.timeout)
    except Exception as exc:  # a clear one-line reason, non-zero exit
        console.print(f"[bold red]selftest FAILED:[/] {exc}")
        return 1
    h, d, rel, rtt = r["host"], r["device"], r["relay"], r["rtt_ms"]
    yes = lambda ok: "[green]yes[/]" if ok else "[bold red]NO[/]"  # noqa: E731
    t = Table(title="serialine selftest: host <-> MicroPython unix port over a faulty pty")
    t.add_column("check")
    t.add_column("result", justify="right")
    t.add_row("HELLO, fingerprint (incl. device start-up)",
              f"0x{r['fingerprint']:08x} in {r['hello_s'] * 1000:.0f} ms")
    t.add_row("events delivered / sent", f"{r['delivered']} / {r['events']} in {r['elapsed_s']:.2f} s")
    t.add_row("events delivered exactly once, in order", yes(r["exactly_once"] and r["event_seq_in_order"]))
    t.add_row("host commands applied exactly once", yes(r["commands_applied_once"] and r["command_logs_once"]))
    t.add_row("frames host in / out", f"{h['frames_in']} / {h['frames_out']}")
    t.add_row("retransmits device / host", f"{d.get('retransmits', '?')} / {h['retransmits']}")
    t.add_row("corrupt frames rejected host / device",
              f"{h['bad_frames']} / {d.get('bad_crc', 0) + d.get('bad_header', 0)}")
    t.add_row("wire faults: corrupted / dropped bytes, dup chunks",
              f"{rel['corrupted']} / {rel['dropped']} / {rel['duplicated']}")
    if rtt:
        t.add_row("round trip (PING/PONG) median / max",
                  f"{statistics.median(rtt):.2f} / {max(rtt):.2f} ms  (n={len(rtt)})")
    console.print(t)
    if not r["ok"]:
        console.print("[bold red]selftest FAILED[/]\n" + r["device_output"][-2000:])
        return 1
    console.print("[bold green]selftest passed[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
