"""`serialine bench line` reports how much faster than the wall clock virtual time ran: a tiny run's
JSON line carries `virtual_speedup` (simulated seconds per wall second of the line's run) overall and
per speed tried, with the CPU each trial cost per pack. Their values are the machine's; only their
presence and sign are checked here."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_bench_line_reports_virtual_speedup():
    r = subprocess.run([sys.executable, "-m", "serialine.host.cli", "bench", "line", "--modes", "virtual",
                        "--units", "20", "--start", "1200", "--max", "1200", "--budget", "1"],
                       capture_output=True, text=True, timeout=400, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "virtual x" in r.stdout and "Traceback" not in r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["max_ppm_virtual"] == 1200
    assert got["virtual_speedup"] > 0 and list(got["virtual_speedup_by_ppm"]) == ["1200"]
    assert got["cpu_ms_per_pack_virtual_by_ppm"]["1200"] > 0 and len(got["load_avg_virtual"]) == 1
