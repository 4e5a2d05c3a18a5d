"""`serialine bench line --opcua`: the same trials with the agent serving OPC UA ([opcua]); a tiny run
prints its JSON line (the coordinator measures the real figures)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.alone  # its real-time trials run SCHED_FIFO as root (host/sim/rtsched.py): not beside other tests
def test_a_tiny_bench_line_with_opcua_prints_its_json_line():
    r = subprocess.run([sys.executable, "-m", "serialine.host.cli", "bench", "line", "--opcua", "--units", "20",
                        "--rt-units", "20", "--start", "600", "--max", "600", "--budget", "1"],
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "with OPC UA" in r.stdout and "Traceback" not in r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["opcua"] is True and got["units_per_trial"] == {"virtual": 20, "realtime": 20}
    assert got["max_ppm_virtual"] == 600  # every invariant held with the server on
    assert {"max_ppm_realtime", "verdict_latency_ms_p99", "gate_error_counts_p99"} <= set(got)
