"""Virtual time jumps from one physical event to the next (the line's edges, the firmware's next
deadline from core.next_due, the camera's results) instead of stepping 250 µs at a time: the same
packs go to the bin and the ledger says the same as with fixed steps, two runs of one seed are
identical, and the loop takes a small fraction of the steps. Counts only, no wall-clock figures."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

from serialine.host.sim import scenario as sc
from serialine.host.sim.run import run

# wall-clock figures, and the EPCIS event count: the host commissions in one event the units it
# stores in one step (its own clock); what is commissioned and packed where is compared instead
DROP = ("wall_s", "batch", "_latencies", "verdict_latency_ms", "run", "link", "db", "epcis_dir", "epcis_events")
# scans at other times: the gate acts a few µs apart, the run ends a few µs apart
TIMING = ("_gate_errors", "gate_error_counts", "timing", "virtual_s", "throughput_ppm")


def _ledger(r) -> list[tuple]:
    """Per unit, in order: its verdict and outcome with their reasons (boot ids are random)."""
    with sqlite3.connect(r["db"]) as c:
        return c.execute("SELECT unit_seq, inspected, verdict, verdict_reason, outcome, reason FROM unit"
                         " WHERE batch_id = ? ORDER BY unit_seq", (r["batch"],)).fetchall()


def _epcis(r) -> tuple:
    """Units commissioned and the cases they were packed in, by unit_seq (serials are random)."""
    with sqlite3.connect(r["db"]) as c:
        unit = dict(c.execute("SELECT serial, unit_seq FROM unit WHERE batch_id = ? AND serial IS NOT NULL",
                              (r["batch"],)))
    seq = lambda epc: unit.get(epc.rsplit(".", 1)[1], epc)  # noqa: E731 - a case stays an SSCC
    commissioned, packed = [], []
    for doc in sorted(Path(r["epcis_dir"]).glob("*.jsonld")):
        for e in json.loads(doc.read_text())["epcisBody"]["eventList"]:
            if e["type"] == "ObjectEvent":
                commissioned += [seq(x) for x in e["epcList"]]
            elif e["type"] == "AggregationEvent":
                packed.append((e["parentID"], sorted(seq(x) for x in e["childEPCs"])))
    return sorted(commissioned), sorted(packed)


def test_jumps_give_what_fixed_steps_gave_and_one_seed_gives_one_ledger(tmp_path):
    s = sc.load("nominal")
    s = s.with_overrides(units=60, seed=3, ppm=1200, defects=dataclasses.replace(s.defects, misprint=0.05, skip=0.03))
    a = run(s, out=tmp_path / "a")
    b = run(s, out=tmp_path / "b")
    fixed = run(s, out=tmp_path / "fixed", fixed_step_us=250)
    for r in (a, b, fixed):
        assert r["ok"], {k: v for k, v in r["invariants"].items() if not v}
        assert r["run"]["barrier_timeouts"] == 0 and r["units_detected"] == 60
    assert a["units_bad"] > 0 and a["bad_rejected"] == a["units_bad"]
    # one seed, one run: every figure but wall-clock ones, and the ledger unit by unit
    assert _ledger(a) == _ledger(b) and _epcis(a) == _epcis(b)
    assert len(_epcis(a)[0]) == a["units_detected"] - a["bad_rejected"] - a["good_rejected"]
    assert {k: v for k, v in a.items() if k not in DROP} == {k: v for k, v in b.items() if k not in DROP}
    # jumping changes when the firmware scans, not what happens to the packs
    assert _ledger(a) == _ledger(fixed) and _epcis(a) == _epcis(fixed)
    assert ({k: v for k, v in a.items() if k not in DROP + TIMING}
            == {k: v for k, v in fixed.items() if k not in DROP + TIMING})
    # and it scans at the events only: a few steps per pack instead of one per 250 µs
    assert a["run"]["steps"] * 10 < fixed["run"]["steps"], (a["run"]["steps"], fixed["run"]["steps"])


def test_virtual_time_never_runs_past_a_firmware_deadline_at_speed(tmp_path, monkeypatch):
    """At 3,000 packs/min (where held camera results and their answer times put many steps between
    two scans) every scan comes no later than the deadline the scan before it named (core.next_due:
    µs to its next timer, counts to its next position), so the gate acts where fixed steps put it:
    within a count or so of the pack. Before, a step that did not scan (a camera result due, a held
    result's answer time) moved the firmware's deadlines on by the time since its last scan: the
    gate fired 10-25 counts late at 2,700-3,000 packs/min, growing with speed (here a bad pack passed)."""
    from serialine.host.sim import parts, unixboard

    scans: list[tuple] = []  # (t µs, encoder, due_counts, due_us) of each scan, in order
    late: list[tuple] = []
    scan = parts.SimDevice._scan

    def recorded(self, t_us, encoder, upto=-1):
        if scans and self.board is not None:
            t0, e0, dc, du = scans[-1]
            if (du != unixboard.NO_DUE and t_us > t0 + du) or (dc != unixboard.NO_DUE and encoder > e0 + dc):
                late.append((scans[-1], (t_us, encoder)))
        out = scan(self, t_us, encoder, upto)
        scans.append((t_us, encoder, self.status.due_counts, self.status.due_us))
        return out

    monkeypatch.setattr(parts.SimDevice, "_scan", recorded)
    s = sc.load("nominal")
    s = s.with_overrides(units=80, seed=5, ppm=3000, defects=dataclasses.replace(s.defects, misprint=0.05, skip=0.03))
    r = run(s, out=tmp_path / "a")
    assert not late, f"{len(late)} scan(s) after the deadline the scan before named, first {late[0]}"
    assert r["ok"], {k: v for k, v in r["invariants"].items() if not v}
    assert r["units_bad"] > 0 and r["bad_rejected"] == r["units_bad"]
    assert r["gate_error_counts"]["max"] < 2.0, r["_gate_errors"]
