"""The report's arithmetic and invariants, on a line run by the test's tracker (see test_model) and
ledgers written to agree or disagree with it; the JSON keys are the issue's, exactly."""

from __future__ import annotations

import json

from serialine.host.sim import report as rep
from serialine.host.sim import scenario as sc
from serialine.host.sim.coder import SimCoder
from serialine.host.sim.line import LineModel
from serialine.protocol.schema import Outcome, Reason

from .test_model import Tracker

KEYS = {"batch", "units_detected", "units_good", "units_bad", "bad_rejected", "good_rejected",
        "unaccounted", "left_unaccounted", "unresolved", "ledger_mismatch", "invalid", "serials_issued_twice", "events_lost", "gate_error_counts",
        "verdict_latency_ms", "throughput_ppm", "cases", "pallets", "epcis_events",
        "reconciliation_ok", "alarms"}


def _run(reject_good=False, pass_bad=False, faults=sc.Faults()):
    s = sc.Scenario(units=60, defects=sc.ScenarioDefects(misprint=0.1), faults=faults, seed=3)
    coder = SimCoder(misprint=0.1, seed=9)
    for i in range(60):
        coder.buffer.append(f"01095060001343522100{i:04d}")
    line = LineModel(s, coder=coder)
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
    # the ledger binds each code to the pack it was printed on (the coder's order)
    codes = {p.code: rep.CodeRecord(p.code[-4:], "rejected" if p.rejected else "commissioned",
                                    "REJECTED_CONFIRMED" if p.rejected else "PASSED")
             for p in line.packs if p.code}
    ledger = rep.LedgerView("B1", units, 0, 0, True, 180, True, cases=6, pallets=1, alarms={}, codes=codes,
                        commissioned=[r.serial for r in codes.values() if r.state == "commissioned"])
    return s, line, ledger


def _build(s, line, ledger):
    return rep.build(s, line, ledger, mode="virtual", virtual_s=1, wall_s=1)


def _passed(line, n=1, after=5):
    return [i for i, p in enumerate(line.packs) if not p.rejected and i > after][:n]


def test_a_clean_run_holds_every_invariant_and_has_the_issue_keys(tmp_path):
    s, line, ledger = _run()
    r = rep.build(s, line, ledger, mode="virtual", virtual_s=line.t / 1e6, wall_s=1.0)
    assert r["ok"], r["invariants"]
    assert r["units_bad"] > 0 and r["bad_rejected"] == r["units_bad"]
    assert r["units_good"] + r["units_bad"] == r["units_detected"] == 60
    assert r["verdict_latency_ms"] == {"p50": 3.0, "p99": 5.0, "max": 5.0, "over_budget": 0}
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


def test_missing_or_double_outcomes_are_unaccounted():
    s, line, ledger = _run()
    ledger.units[3].outcomes = []
    ledger.units[4].outcomes *= 2
    r = _build(s, line, ledger)
    assert r["unaccounted"] == 2
    assert not r["ok"]


def _rebind(ledger, code, state, outcome):
    old = ledger.codes[code]
    ledger.codes[code] = rep.CodeRecord(old.serial, state, outcome)
    ledger.commissioned = [c.serial for c in ledger.codes.values() if c.state == "commissioned"]


def test_a_pack_on_the_market_whose_serial_the_ledger_rejected_is_left_unaccounted():
    """The reboot defect: the pack passed the gate, its PASSED was lost, the host rejected its
    serial. Whatever the unit rows say, by the code on the pack it is on the market uncommissioned."""
    s, line, ledger = _run()
    i = _passed(line)[0]
    _rebind(ledger, line.packs[i].printed, "rejected", "PURGED")
    r = _build(s, line, ledger)
    assert r["left_unaccounted"] == 1 and r["left_unaccounted_packs"][0]["pack"] == i
    assert r["left_unaccounted_packs"][0]["serial_state"] == "rejected"
    assert not r["invariants"]["no_pack_left_unaccounted"] and not r["ok"]
    assert r["ledger_mismatch"] == 0


def test_an_unknown_outcome_is_unresolved_not_unaccounted():
    s, line, ledger = _run()
    i = _passed(line)[0]
    _rebind(ledger, line.packs[i].printed, "printed", "UNKNOWN")
    r = _build(s, line, ledger)
    assert r["unresolved"] == 1 and r["left_unaccounted"] == 0
    assert r["invariants"]["no_pack_left_unaccounted"]


def test_a_commissioned_serial_in_the_bin_or_bound_to_a_neighbour_is_a_mismatch():
    s, line, ledger = _run(reject_good=True)
    binned = next(p for p in line.packs if p.in_bin and p.printed and p.printed == p.code)
    _rebind(ledger, binned.printed, "commissioned", "PASSED")
    r = _build(s, line, ledger)
    assert r["ledger_mismatch"] == 1 and r["ledger_mismatches"][0]["physically"] == "in the bin"
    assert not r["invariants"]["ledger_matches_line"] and not r["ok"]
    # commissioned, on a pack that left the line, but the unit it is bound to did not pass
    s, line, ledger = _run()
    i = _passed(line)[0]
    _rebind(ledger, line.packs[i].printed, "commissioned", "REJECTED_CONFIRMED")
    r = _build(s, line, ledger)
    assert r["ledger_mismatch"] == 1 and "REJECTED_CONFIRMED" in r["ledger_mismatches"][0]["physically"]
    # a dropped UNIT_PRINTED: the ledger bound each pack to its neighbour's serial (unit rows all
    # say PASSED, the unit-number view sees nothing wrong)
    s, line, ledger = _run()
    a, b = _passed(line, 2)
    ca, cb = line.packs[a].printed, line.packs[b].printed
    ledger.codes[ca], ledger.codes[cb] = ledger.codes[cb], ledger.codes[ca]
    ledger.codes[cb] = rep.CodeRecord(ledger.codes[cb].serial, "rejected", "REJECTED_CONFIRMED")
    ledger.commissioned = [c.serial for c in ledger.codes.values() if c.state == "commissioned"]
    r = _build(s, line, ledger)
    assert r["left_unaccounted"] == 1  # pack b's code names a rejected serial
    assert r["unaccounted"] == 0 and r["invariants"]["every_unit_one_outcome"]


def test_events_lost_counts_units_without_a_row_and_outcomes_the_device_decided_but_lost():
    s, line, ledger = _run()
    assert _build(s, line, ledger)["events_lost"] == 0
    a, b = _passed(line, 2)
    ledger.units[a].row = False
    ledger.units[b].from_device = False  # booked by the host, though the device decided it
    r = _build(s, line, ledger)
    d = r["events_lost_detail"]
    assert (d["sequence_gaps"], d["units_without_row"], d["outcomes_missing"]) == (0, 1, 1)
    assert [(u["pack"], u["lost"]) for u in d["units"]] == [(a, "unit row"), (b, "outcome")]
    assert r["events_lost"] == 2 and not r["invariants"]["no_event_lost"]
    # a pack still short of the gate when its boot ended never had an outcome to lose
    for p in line.packs:
        p.unit_key = (0, p.index)
    line.boot_ends = [line.packs[b].belt_at + line.gate_at - 1]
    r = _build(s, line, ledger)
    assert r["events_lost_detail"]["outcomes_missing"] == 0


def test_a_power_cycle_loss_is_accounted_only_for_an_uncoded_pack_in_the_bin_or_a_settled_outcome():
    s, line, ledger = _run()
    rejected = [i for i, p in enumerate(line.packs) if p.rejected and i > 5][0]
    a, b = _passed(line, 2)
    for p in line.packs:
        p.unit_key = (0, p.index)
    line.boot_ends = [line.packs[-1].belt_at + line.gate_at + 10_000]  # every pack's boot was power-cycled
    # an uncoded pack the purge took, whose UNIT_DETECTED went with the device's RAM
    line.packs[rejected].printed, line.packs[rejected].in_bin = None, True
    ledger.units[rejected].row, ledger.units[rejected].outcomes = False, []
    # a pack that passed, whose PASSED went with the RAM: booked UNKNOWN, then settled by a person
    ledger.units[b].from_device = False
    r = _build(s, line, ledger)
    d = r["events_lost_detail"]
    assert (d["units_without_row"], d["outcomes_missing"], d["lost_at_power_cycle"]) == (0, 0, 2)
    assert r["events_lost"] == 0 and r["unaccounted"] == 0 and r["ok"]
    # a coded pack without a row is a loss the host should have repaired (the coder knew of it)
    line.packs[rejected].printed = "01095060001343522100XXXX"
    r = _build(s, line, ledger)
    assert r["events_lost_detail"]["units_without_row"] == 1 and not r["invariants"]["no_event_lost"]
    assert not r["invariants"]["every_unit_one_outcome"]
    # a lost outcome still UNKNOWN (nobody settled it) is no accounted loss
    line.packs[rejected].printed = None
    ledger.units[b].outcomes = [(rep.UNKNOWN, None)]
    r = _build(s, line, ledger)
    assert r["events_lost_detail"]["outcomes_missing"] == 1 and not r["ok"]
    # outside a power-cycled boot nothing is excused
    line.boot_ends = []
    ledger.units[b].outcomes = [(Outcome.PASSED, Reason.OK)]
    r = _build(s, line, ledger)
    assert r["events_lost_detail"]["lost_at_power_cycle"] == 0 and r["events_lost"] >= 1


def test_an_invalid_run_is_never_ok():
    s, line, ledger = _run()
    r = rep.build(s, line, ledger, mode="realtime", virtual_s=1, wall_s=1,
                  extra={"invalid": "the simulator's loop was 40 ms late (bound 7.5 ms)"})
    assert all(r["invariants"].values()) and not r["ok"] and r["invalid"].startswith("the simulator")


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
