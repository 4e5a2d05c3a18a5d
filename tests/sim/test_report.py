"""The report's arithmetic and invariants, on a line run by the test's tracker (see test_model) and
ledgers written to agree or disagree with it; the JSON keys are the issue's, exactly."""

from __future__ import annotations

import json

from serialine.host.sim import report as rep
from serialine.host.sim import scenario as sc
from serialine.host.sim.coder import SimCoder
from serialine.host.sim.line import Line
from serialine.protocol.schema import Outcome, Reason

from .test_model import Tracker

KEYS = {"batch", "units_detected", "units_good", "units_bad", "bad_rejected", "good_rejected",
        "unaccounted", "serials_issued_twice", "events_lost", "gate_error_counts",
        "verdict_latency_ms", "throughput_ppm", "cases", "pallets", "epcis_events",
        "reconciliation_ok", "alarms"}


def _run(reject_good=False, pass_bad=False, faults=sc.Faults()):
    s = sc.Scenario(units=60, defects=sc.Defects(misprint=0.1), faults=faults, seed=3)
    coder = SimCoder(misprint=0.1, seed=9)
    for i in range(60):
        coder.buffer.append(f"01095060001343522100{i:04d}")
    line = Line(s, coder=coder)
    tr = Tracker(line)
    # the first good pack from 5 on (coder faults are decided at print time, before the gate)
    extra = set()

    def reject(i):
        if reject_good and not extra and i >= 5 and not line.packs[i].bad:
            extra.add(i)
        return (line.packs[i].bad and not pass_bad) or i in extra

    tr.reject = reject
    tr.run()
    coder.close()
    units = [rep.UnitRecord([(Outcome.REJECTED_CONFIRMED if p.rejected else Outcome.PASSED,
                              Reason.CODE_MISMATCH if p.rejected and p.bad else
                              Reason.NO_VERDICT if p.rejected else Reason.OK)],
                            verdict_latency_ms=1.0 + i % 5) for i, p in enumerate(line.packs)]
    ledger = rep.Ledger("B1", units, 0, 0, True, 180, True, cases=6, pallets=1, alarms={})
    return s, line, ledger


def test_a_clean_run_holds_every_invariant_and_has_the_issue_keys(tmp_path):
    s, line, ledger = _run()
    r = rep.build(s, line, ledger, mode="virtual", virtual_s=line.t / 1e6, wall_s=1.0)
    assert r["ok"], r["invariants"]
    assert r["units_bad"] > 0 and r["bad_rejected"] == r["units_bad"]
    assert r["units_good"] + r["units_bad"] == r["units_detected"] == 60
    assert r["verdict_latency_ms"] == {"p50": 3.0, "p99": 5.0}
    assert 500 < r["throughput_ppm"] < 650
    path, png = rep.write(r, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert KEYS <= set(data) and set(data["gate_error_counts"]) == {"max", "p99"}
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_a_bad_pack_let_through_breaks_the_run():
    s, line, ledger = _run(pass_bad=True)
    r = rep.build(s, line, ledger, mode="virtual", virtual_s=1, wall_s=1)
    assert not r["ok"] and not r["invariants"]["every_bad_pack_rejected"]


def test_a_good_pack_rejected_needs_a_fault_to_excuse_it():
    s, line, ledger = _run(reject_good=True)
    r = rep.build(s, line, ledger, mode="virtual", virtual_s=1, wall_s=1)
    assert r["good_rejected"] == 1 and r["good_rejected_reasons"] == {"no_verdict": 1}
    assert not r["invariants"]["no_good_pack_rejected_without_reason"]
    s2, line2, ledger2 = _run(reject_good=True, faults=sc.Faults(host_kill_at=(5,)))
    r2 = rep.build(s2, line2, ledger2, mode="virtual", virtual_s=1, wall_s=1)
    assert r2["invariants"]["no_good_pack_rejected_without_reason"]


def test_missing_or_double_outcomes_are_unaccounted_and_disagreement_is_caught():
    s, line, ledger = _run()
    ledger.units[3].outcomes = []
    ledger.units[4].outcomes *= 2
    first_pass = next(i for i, p in enumerate(line.packs) if not p.rejected and i > 5)
    ledger.units[first_pass].outcomes = [(Outcome.REJECTED_CONFIRMED, Reason.NO_VERDICT)]
    r = rep.build(s, line, ledger, mode="virtual", virtual_s=1, wall_s=1)
    assert r["unaccounted"] == 2
    assert r["ledger_disagrees_with_line"] == [first_pass]
    assert not r["ok"]


def test_percentile_nearest_rank():
    assert rep.percentile([], 99) == 0.0
    assert rep.percentile(range(1, 101), 99) == 99
    assert rep.percentile([5], 50) == 5


def test_table_renders():
    from rich.console import Console

    s, line, ledger = _run()
    r = rep.build(s, line, ledger, mode="virtual", virtual_s=1, wall_s=1)
    c = Console(record=True, width=120)
    c.print(rep.table(r))
    assert "bad rejected" in c.export_text()


def test_a_missed_camera_trigger_excuses_the_slip_until_a_good_pack_passes():
    s, line, ledger = _run(reject_good=True)  # a good pack rejected (no_verdict) from unit 5 on
    i = next(k for k, p in enumerate(line.packs) if p.rejected and not p.bad)
    r = rep.build(s, line, ledger, mode="virtual", virtual_s=1, wall_s=1)
    assert not r["invariants"]["no_good_pack_rejected_without_reason"]
    line.packs[i].camera_missed = True  # the camera missed this pack's trigger: results slip from here
    r = rep.build(s, line, ledger, mode="virtual", virtual_s=1, wall_s=1)
    assert r["invariants"]["no_good_pack_rejected_without_reason"]
    line.packs[i].camera_missed = False
    j = next(k for k in range(i) if not line.packs[k].bad and not line.packs[k].rejected)
    line.packs[j].camera_missed = True  # a slip that a good pack passing (before i) ended
    assert any(not p.bad and not p.rejected for p in line.packs[j + 1:i])  # this seed's line has one
    r = rep.build(s, line, ledger, mode="virtual", virtual_s=1, wall_s=1)
    assert not r["invariants"]["no_good_pack_rejected_without_reason"]
