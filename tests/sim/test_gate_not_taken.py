"""A pack the gate did not take off is never a pass and never confirmed: the firmware's confirm logic
under the real MicroPython unix port (boards/sim/simline.py), and the whole loop with the simulator
stalling itself just as a reject reaches the gate — which it must notice and call the run invalid."""

from __future__ import annotations

import ast
import os
import sqlite3

import pytest

from serialine.host import devevents
from serialine.host.sim import cli
from serialine.host.sim import scenario as sc
from serialine.host.sim.run import run

UNCONFIRMED, A_REJECT_UNCONFIRMED = 3, 2


def test_a_late_gate_is_unconfirmed_even_if_a_confirm_pulse_comes(run_mp):
    """One scan 30 ms late just as unit 5 (a reject) reaches its firing point: the paddle comes out
    ~120 counts past it, beyond its reach. A confirm pulse inside unit 5's window (a stray pulse,
    another pack falling) must not be taken for it: REJECTED_UNCONFIRMED, the alarm naming unit 5,
    a line stop."""
    code = """
import simline as mpline
L = mpline.VirtualLine(mpline.config(purge_counts=2060), npacks=12, dt=100, bad=lambda u: 18)
L.core.start()
k = 5
fire_at = L.cfg[mpline.C_GATE_AT] - L.core.lead_counts()
while L.travel - L.first - k * L.pitch < fire_at - 30:
    L.step(4000)
L.dt = 30000
L.step(4000)  # the scan that should have fired the gate comes 30 ms late
L.dt = 100
taken = L.diverted[k]
L.confirm_at[k] = L.first + k * L.pitch + L.cfg[mpline.C_CONFIRM_FROM] + 40  # a stray pulse
named = []
sink_alarm = L.sink.alarm
def alarm(a, active, unit, t):
    named.append((a, active, unit))
    sink_alarm(a, active, unit, t)
L.sink.alarm = alarm
while L.core.count:
    L.step(4000)
print(repr({"taken": taken, "outcome": L.sink.outcome_of[k], "gerr": L.sink.gerr[k],
            "named": named, "stop": L.stop_on, "others": [L.sink.outcome_of[i] for i in range(k)]}))
"""
    r = ast.literal_eval(run_mp(code).strip().splitlines()[-1])
    assert r["taken"] == 0 and r["gerr"] > 60, r  # the paddle really missed it
    assert r["outcome"] == UNCONFIRMED, r
    assert (A_REJECT_UNCONFIRMED, 1, 5) in r["named"] and r["stop"], r
    assert r["others"] == [2] * 5  # the units before it: confirmed as usual


def _stalled(tmp_path, realtime: bool):
    s = sc.Scenario(name="stall", units=60, seed=1, defects=sc.ScenarioDefects(misprint=1.0))  # every pack a reject
    return run(s, out=tmp_path, realtime=realtime, stall=(30, 25.0))


# real time is the wall clock, and as root its parts run SCHED_FIFO (host/sim/rtsched.py): beside other
# tests it would take their CPU, and theirs would make ticks late that the stall alone should make late
@pytest.mark.parametrize("realtime", [False, pytest.param(True, marks=pytest.mark.alone)], ids=["virtual", "realtime"])
def test_the_simulator_stalling_makes_the_run_invalid_and_the_missed_pack_unconfirmed(tmp_path, realtime):
    """25 ms of the simulator's own stall (100 counts of belt at 600 packs/min) as pack 30 reaches
    the gate: the device scans too late to aim at it and the pack stays on the belt. The device
    ends it REJECTED_UNCONFIRMED with an alarm naming it (never a pass); the report says the run
    is invalid and why, and is not ok — the line is neither blamed nor passed."""
    r = _stalled(tmp_path, realtime)
    assert r["invalid"] and "fell behind the line" in r["invalid"], r["invalid"]
    assert r["ticks"]["overruns"] >= 1 and r["ticks"]["worst_travel_counts"] >= 90
    assert not r["ok"]
    with sqlite3.connect(r["db"]) as c:  # no pack is ever recorded as passed
        assert c.execute("SELECT count(*) FROM unit WHERE outcome = 'PASSED'").fetchone()[0] == 0
    if realtime:  # on a loaded machine other ticks may be late too: which packs got away varies
        # and no thread it started is left SCHED_FIFO, to outrank this process's later tests
        tasks = [int(t) for t in os.listdir("/proc/self/task")]
        assert [t for t in tasks if os.sched_getscheduler(t) == os.SCHED_FIFO] == [], r["sched"]
        return
    missed = [p for p in r["left_unaccounted_packs"] if p["pack"] == 30]
    assert missed and missed[0]["defect"] == "misprint"
    with sqlite3.connect(r["db"]) as c:
        (outcome,) = c.execute("SELECT outcome FROM unit WHERE unit_seq = 30").fetchone()
        assert outcome == "REJECTED_UNCONFIRMED"
        alarms = [e.fields for e in devevents.events(c, names=("ALARM",), unit_seq=30)]
        assert any(f["alarm"] == 2 and f["active"] == 1 for f in alarms), alarms
    assert r["bad_rejected"] == r["units_bad"] - 1  # only pack 30 got away


def test_an_invalid_run_has_its_own_exit_status():
    assert cli.exit_status({"ok": False, "invalid": "fell behind", "invariants": {}}) == 3
    assert cli.exit_status({"ok": False, "invalid": None, "invariants": {"x": False}}) == 1
    assert cli.exit_status({"ok": True, "invalid": None, "invariants": {"x": True}}) == 0
