"""firmware Core.next_due, under the real MicroPython unix port: after a scan it names the next
encoder count and the next timer at which the core may act by itself; the simulator skips every scan
before them. Checked against scanning every 100 µs (boards/sim/simline.py): with the inputs
unchanged (photo-eye, confirm, no new verdict), no output and no event ever comes before the point
a previous scan named — across the 2**30 wrap of clock and encoder."""

from __future__ import annotations

import ast

import pytest

CODE = """
import simline as mpline
from array import array
NO = 0x3FFFFFFF
L = mpline.VirtualLine(mpline.config(purge_counts=2060), t0=T0, pos0=P0, npacks=40, dt=100,
                       bad=lambda u: 18 if u % 3 == 0 else 0)
L.core.start()
b = L.b
due = array("i", [0, 0])
def state():
    s = L.sink
    return (b.n, s.detected_n, s.printed_n, s.inspected_n, s.outcomes[0], s.alarm_bits)
promise = None  # (pos, t) before which nothing happens by itself; None for either: nothing ahead
ext_was = None
early = []
kept = quiet = 0
for k in range(60000):
    ext = L.insp_r  # verdicts applied after the previous scan
    st = state()
    L.step(4000)
    ext = (ext, L.pe_level(), L.core.confirm_prev)
    if ext != ext_was:
        promise = None  # an input changed: the previous scan promised nothing about it
    ext_was = ext
    if promise is not None:
        ahead_pos = promise[0] is None or b.ticks_diff(b.pos, promise[0]) < 0
        ahead_t = promise[1] is None or b.ticks_diff(b.t, promise[1]) < 0
        if ahead_pos and ahead_t:
            quiet += 1
            if state() != st:
                early.append((k, b.t, b.pos, promise))
        else:
            kept += 1
    L.core.next_due(due)
    promise = (None if due[0] == NO else (b.pos + due[0]) & 0x3FFFFFFF,
               None if due[1] == NO else (b.t + due[1]) & 0x3FFFFFFF)
    if L.sink.outcomes[0] >= L.npacks and not L.core.count:
        break
print(repr({"early": early[:5], "quiet": quiet, "kept": kept, "outcomes": L.sink.outcomes[0],
            "diverted": sum(L.diverted[i] for i in range(L.npacks)), "t": b.t, "pos": b.pos}))
"""


@pytest.mark.parametrize("t0,pos0", [(0, 0), (0x3FFFFFFF - 2_000_000, 0x3FFFFFFF - 5_000)], ids=["zero", "wrap"])
def test_no_scan_skipped_by_next_due_would_have_done_anything(run_mp, t0, pos0):
    out = ast.literal_eval(run_mp(CODE.replace("T0", str(t0)).replace("P0", str(pos0))).strip().splitlines()[-1])
    assert out["outcomes"] == 40 and out["diverted"] == 14  # every third pack rejected, all done
    assert out["early"] == [], out
    # most scans of a 100 µs scan loop are ones the simulator may skip
    assert out["quiet"] > 5 * out["kept"], out
