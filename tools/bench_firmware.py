"""`serialine bench firmware`: the line device core under the real MicroPython unix port.

Figures: per-unit cost of the core (us/unit) and the max tracked units/s it implies,
allocations per unit (gc.mem_alloc delta with GC off), gate position error in virtual time
across constant / ramp / stop-start speed, and real-time fire jitter (wall clock, virtual
encoder) p50/p99. The last line printed is one JSON object."""

from __future__ import annotations

import json
import sys

from serialine.host.resources import firmware_dir
from serialine.host.sim import unixport


_MP_VIRTUAL = r"""
import gc, time, simline

class NullCore:  # the same harness without the core: its cost is subtracted
    count = 0
    def update(self, now, pos, pe, confirm, bin_full): pass
    def apply_verdict(self, unit, verdict, reason): return True

def run(profile, n, null=False):
    L = simline.VirtualLine(simline.config(), npacks=n, dt=DT,
                     bad=lambda u: 18 if u % 3 == 0 else 0)
    L.core.start()
    if null:
        L.core = NullCore()
    gc.collect(); gc.disable()
    a0 = gc.mem_alloc(); t0 = time.ticks_us()
    t = 0; steps = 0
    while (L.sink.outcomes[0] < n or L.core.count) and steps < 4000000:
        t += L.dt; steps += 1
        L.step(profile(t))
        if null and steps >= STEPS[0]:
            break
    dt = time.ticks_diff(time.ticks_us(), t0); da = gc.mem_alloc() - a0
    gc.enable()
    STEPS[0] = steps
    g = max(abs(L.sink.gerr[i]) for i in range(n))
    return dt, da, g, L.sink.outcomes[0]

STEPS = [0]
DT = 50
const = lambda t: 10000
ramp = lambda t: 2000 + t // 100 if t < 1500000 else max(2000, 17000 - (t - 1500000) // 100)
stopstart = lambda t: 0 if (t // 400000) % 2 else 12000
N = NUNITS
for name, prof in (("constant", const), ("ramp", ramp), ("stop_start", stopstart)):
    dt, da, g, outs = run(prof, N)
    print("RESULT", name, outs, dt, da, g)
# throughput: scans 1 ms apart (10 counts), 40 scans per unit; core time = run minus harness
DT = 1000
dt, da, g, outs = run(const, 4 * N)
ndt, nda, _, _ = run(const, 4 * N, null=True)
print("THROUGHPUT", outs, dt - ndt, da, STEPS[0])
"""

_MP_REALTIME = r"""
import time, board, core, simline
b = board.SimBoard(virtual=False)
s = simline.CountingSink()
c = core.Core(b, s)
V = 50000  # 100 units/s: a short run
c.configure(simline.config(virtual_speed_cps=V, debounce_us=0, dwell=50))
t0 = b.now(); c.now = t0; c.sp_t = t0; c.start()
from array import array
n0 = 0; fired = 0; lat = array('i', bytes(4 * FIRES))  # preallocated: no GC pause in the loop
start_pos = c.pos
while fired < FIRES:
    now = b.now()
    travel = (c.pos - start_pos) & 0x3FFFFFFF
    pe = 1 if travel % 500 < 100 else 0
    c.update(now, 0, pe, 0, 0)
    while n0 < b.n:
        i = n0 % b.cap
        if b.kind[i] == 1:  # coder edge: when should it have fired?
            want = ((b.ep[i] - start_pos) & 0x3FFFFFFF) // 500 * 500 + 400
            ideal = t0 + want * 1000000 // V
            if fired < FIRES:
                lat[fired] = time.ticks_diff(b.et[i], ideal & 0x3FFFFFFF)
            fired += 1
        n0 += 1
lat = sorted(lat)
print("JITTER", lat[len(lat) // 2], lat[len(lat) * 99 // 100], lat[-1], len(lat))
"""


def run_mp(code: str, timeout: float = 600, prefix: tuple[str, ...] = ()) -> str:
    proc = unixport.run(["-X", "heapsize=8m", "-c", code], cwd=firmware_dir(), prefix=prefix,
                        timeout=timeout)
    if proc.returncode != 0 or "Traceback" in proc.stdout + proc.stderr:
        raise RuntimeError(proc.stdout + proc.stderr)
    return proc.stdout


def main(argv: list[str]) -> int:
    units = int(argv[argv.index("--units") + 1]) if "--units" in argv else 150
    fires = int(argv[argv.index("--fires") + 1]) if "--fires" in argv else 500
    rows: list[tuple[str, int, int, int, int]] = []
    touts = core_us = talloc = scans = 0
    for line in run_mp(_MP_VIRTUAL.replace("NUNITS", str(units))).splitlines():
        if line.startswith("RESULT"):
            w = line.split()
            rows.append((w[1], int(w[2]), int(w[3]), int(w[4]), int(w[5])))
        elif line.startswith("THROUGHPUT"):
            touts, core_us, talloc, scans = (int(x) for x in line.split()[1:])
    rt_code = _MP_REALTIME.replace("FIRES", str(fires))
    jit = run_mp(rt_code).split()
    c50, c99, cmax, _ = (int(x) for x in jit[-4:])
    # The scan loop is a busy loop: on a shared host the default scheduler preempts it for
    # milliseconds. A real-time deployment of the unix port runs it SCHED_FIFO (chrt).
    sched = "fifo"
    try:
        jit = run_mp(rt_code, prefix=("chrt", "-f", "10")).split()
    except (RuntimeError, FileNotFoundError):
        sched = "other (chrt -f not permitted)"
    p50, p99, pmax, nfires = (int(x) for x in jit[-4:])
    us_per_unit = core_us / touts
    allocs = (max(r[3] for r in rows) + talloc) / (units * 3 + touts)
    print("gate position error in virtual time (scan every 50 us of virtual time)")
    print(f"{'profile':<12}{'units':>7}{'alloc B/unit':>14}{'gate err max':>14}")
    for name, outs, run_us, alloc, gerr in rows:
        print(f"{name:<12}{outs:>7}{alloc / outs:>14.1f}{gerr:>14}")
    print(f"core cost: {touts} units, {scans} scans (1 ms apart, 10 counts), "
          f"{core_us / scans:.1f} us/scan, {us_per_unit:.1f} us/unit (all scans of a unit's pitch "
          f"included) -> {int(1e6 / us_per_unit)} units/s on one core")
    print(f"real-time fire latency (unix port, wall clock, {nfires} coder fires at 50000 counts/s)")
    print(f"  default scheduler (shared host): p50 {c50} us, p99 {c99} us, max {cmax} us")
    print(f"  scheduler {sched}: p50 {p50} us, p99 {p99} us, max {pmax} us")
    result = {
        "us_per_unit": round(us_per_unit, 1),
        "allocs_per_unit": allocs,
        "max_units_per_s": int(1e6 / us_per_unit),
        "gate_error_counts_max": max(r[4] for r in rows),
        "fire_jitter_ms_p50": p50 / 1000,
        "fire_jitter_ms_p99": p99 / 1000,
        "fire_jitter_ms_max": pmax / 1000,
        "fire_jitter_sched": sched.split()[0],
        "fire_jitter_ms_p99_default_sched": c99 / 1000,
        "units": units,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
