"""The operator screen's live update, timed by the browser, while `serialine sim --realtime` runs a
line (default 1,200 packs/min) through `serialine agent run`. Not a test (it takes a minute and its
figures depend on the machine): run it by hand,

    .venv/bin/python tests/console/measure_live.py [--ppm 1200] [--units 1500] [--seconds 30]

It adds an operator to the simulator's ledger, starts `serialine console` on the agent's control
interface, logs in with Debian's chromium and reads the Resource Timing entries of every
`/operator/live` poll (request start to the last byte) and the time htmx took to swap it in."""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # consolekit, rigs
from consolekit import CHROMIUM, PASSWORD, SERIALINE, ConsoleProc, login  # noqa: E402


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ppm", type=int, default=1200)
    ap.add_argument("--units", type=int, default=1500)
    ap.add_argument("--seconds", type=float, default=30)
    a = ap.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="console-live-"))
    sim = subprocess.Popen([SERIALINE, "sim", "--realtime", "--ppm", str(a.ppm), "--units", str(a.units),
                            "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = out / "serialine.agent.log"
        end = time.monotonic() + 120
        control = None
        while control is None and time.monotonic() < end:
            if log.exists():
                m = re.search(r"control interface on http://(\S+)", log.read_text())
                control = m and m[1]
            if sim.poll() is not None:
                raise SystemExit(f"sim exited {sim.returncode}: {sim.stderr.read()}")
            time.sleep(0.2)
        from serialine.host import db, users
        conn = db.connect(str(out / "serialine.db"))
        users.add(conn, "admin", "admin", PASSWORD["admin"], by="admin", reason="measure", full_name="Ada Admin")
        users.add(conn, "olga", "operator", PASSWORD["olga"], by="admin", reason="measure", full_name="Olga Operator")
        conn.close()
        console = ConsoleProc(out / "serialine.db", control)
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = b.new_page()
            page.evaluate("0")
            login(page, console.url, "olga")
            page.wait_for_selector("#count-detected")
            page.evaluate("performance.setResourceTimingBufferSize(100000)")
            page.evaluate("window.__swaps = []; document.body.addEventListener('htmx:beforeRequest', e => "
                          "{ e.detail.elt.__t0 = performance.now(); });"
                          " document.body.addEventListener('htmx:afterSettle', e => "
                          "{ if (e.detail.elt.__t0) window.__swaps.push(performance.now() - e.detail.elt.__t0); });")
            first = int(page.inner_text("#count-detected"))
            time.sleep(a.seconds)
            last = int(page.inner_text("#count-detected"))
            fetch = page.evaluate("performance.getEntriesByType('resource').filter(e => e.name.includes('/operator/live'))"
                                  ".map(e => e.responseEnd - e.startTime)")
            swaps = page.evaluate("window.__swaps")
            b.close()
        console.close()
        rate = (last - first) * 60 / a.seconds
        print(f"line: {rate:.0f} packs/min counted on the screen over {a.seconds:g} s ({first} -> {last})")
        for name, xs in (("poll (request to last byte)", fetch), ("poll to swapped in", swaps)):
            if xs:
                print(f"{name}: n={len(xs)} p50={statistics.median(xs):.1f} ms p99={pct(xs, 0.99):.1f} ms"
                      f" max={max(xs):.1f} ms")
        return 0
    finally:
        sim.terminate()
        try:
            sim.wait(30)
        except subprocess.TimeoutExpired:
            sim.kill()


if __name__ == "__main__":
    sys.exit(main())
