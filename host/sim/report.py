"""The run's report: ground truth from the line model set against the ledger, the invariants, a
JSON file, a rich summary table and a PNG plot (gate position error, verdict latency).

Packs are matched to the ledger by the code physically printed on them: a pack that left the line
must carry a code whose serial is commissioned (or whose unit's outcome is UNKNOWN, pending a
person's resolution: `unresolved`); no other serial may be commissioned (a pack in the bin, a code
on no pack that left)."""

from __future__ import annotations

import json
import math
import collections
from dataclasses import dataclass, field
from pathlib import Path

from serialine.protocol.schema import Reason

# Reasons a good pack may be rejected for when a fault forces it (fail safe), never on a clean line.
FAIL_SAFE = {Reason.NO_VERDICT, Reason.LINK_LOST, Reason.PURGE, Reason.BUFFER_OVERFLOW,
             Reason.DOUBLE_DETECT, Reason.CORRELATION, Reason.NO_READ, Reason.LOW_GRADE,
             Reason.CODE_MISMATCH, Reason.NOT_GS1, Reason.UNKNOWN_SERIAL}
# What a camera fault on a good print makes the host say.
CAMERA_REASONS = {"no_read": {Reason.NO_READ, Reason.NOT_GS1, Reason.CORRELATION},
                  "misread": {Reason.CODE_MISMATCH, Reason.NOT_GS1, Reason.UNKNOWN_SERIAL,
                              Reason.WRONG_BATCH, Reason.DUPLICATE, Reason.CORRELATION},
                  "low_grade": {Reason.LOW_GRADE}}
# After a missed camera trigger results slip against units until the host notices and pairs afresh:
# the packs in between are rejected for it — judged on a neighbour's result (whatever that says),
# unpaired, or decided before the host's FAIL for an unpaired unit arrived — each with that reason.
SLIP_REASONS = set().union(*CAMERA_REASONS.values()) | {Reason.NO_VERDICT}
UNKNOWN = 0  # a unit the ledger holds with outcome UNKNOWN: the host never received its outcome


def _reason_name(value) -> str:
    try:
        return Reason(value).name.lower()
    except ValueError:
        return f"reason_{value}"


@dataclass(frozen=True)
class CodeRecord:
    """What the ledger says about one code the coder was given."""

    serial: str
    state: str  # the serial's state
    outcome: str | None  # the outcome of the unit it is bound to (None: bound to no unit)


@dataclass
class UnitRecord:
    """One detected unit as the ledger holds it, in detection order across boots."""

    outcomes: list[tuple[int, int]]  # (Outcome, Reason) recorded; exactly one when accounted for
    gate_error: int | None = None  # the device's view, counts
    verdict_latency_ms: float | None = None  # camera result delivered -> verdict sent
    row: bool = True  # the ledger has a unit row for it
    from_device: bool = True  # its outcome came as the device's UNIT_OUTCOME (not booked by the host)


@dataclass
class LedgerView:
    """What the host's ledger says about the batch (filled by run.py from SQLite)."""

    batch: str
    units: list[UnitRecord]
    serials_issued_twice: int
    sequence_gaps: int  # event_seq numbers missing from a boot's stored events
    reconciliation_ok: bool
    epcis_events: int
    epcis_valid: bool
    cases: int = 0
    pallets: int = 0
    alarms: dict[str, int] = field(default_factory=dict)
    epcis_errors: list[str] = field(default_factory=list)
    codes: dict[str, CodeRecord] = field(default_factory=dict)  # by the code as printed
    commissioned: list[str] = field(default_factory=list)  # serials of the batch in that state
    extra_units: int = 0  # unit rows for no pack the line detected


def percentile(xs, q: float) -> float:
    """Nearest-rank percentile; 0 for no data."""
    xs = sorted(x for x in xs if x is not None and not math.isnan(x))
    if not xs:
        return 0.0
    k = max(0, min(len(xs) - 1, math.ceil(q / 100 * len(xs)) - 1))
    return float(xs[k])


def build(scenario, line, ledger: LedgerView, *, mode: str, virtual_s: float, wall_s: float,
          extra: dict | None = None) -> dict:
    detected = [p for p in line.packs if p.detected_t is not None]
    bad = [p for p in detected if p.bad]
    good = [p for p in detected if not p.bad]
    good_rej = [p for p in good if p.rejected]
    reasons = collections.Counter()
    unexcused = []
    slipped, slipping = set(), False  # packs from a missed trigger to the next good pack passed
    for p in detected:
        if p.camera_missed:
            slipping = True
        elif slipping and not p.bad and not p.rejected:
            slipping = False
        if slipping:
            slipped.add(p.index)
    for p in good_rej:
        rec = ledger.units[p.index] if p.index < len(ledger.units) else None
        reason = rec.outcomes[0][1] if rec and len(rec.outcomes) == 1 else None
        if reason is not None and rec.outcomes[0][0] == UNKNOWN:
            # the host does not claim it passed: fail safe, if a fault made the outcome unknown
            reasons["outcome_unknown"] += 1
            if not scenario.has_faults:
                unexcused.append(p.index)
            continue
        reasons[_reason_name(reason) if reason is not None else "unrecorded"] += 1
        allowed = CAMERA_REASONS.get(p.camera_fault, set())
        if p.index in slipped:
            allowed = allowed | SLIP_REASONS
        if scenario.has_faults:
            allowed = allowed | FAIL_SAFE
        if reason is None or reason not in allowed:
            unexcused.append(p.index)
    by_code = compare_by_code(detected, ledger)
    lost = events_lost(scenario, line, detected, ledger)
    power_cycle_packs = lost.pop("_power_cycle_packs")
    unaccounted = sum(1 for i in range(len(detected)) if i not in power_cycle_packs
                      and (i >= len(ledger.units) or len(ledger.units[i].outcomes) != 1))
    unaccounted += max(0, len(ledger.units) - len(detected)) + ledger.extra_units
    gate_err = [abs(g.error) for g in line.gate_events if not math.isnan(g.error)]
    lat = [u.verdict_latency_ms for u in ledger.units if u.verdict_latency_ms is not None]
    r_timing = timing(scenario, gate_err)
    budget = r_timing["decision_budget_ms"]
    r = {
        "batch": ledger.batch,
        "scenario": scenario.name,
        "seed": scenario.seed,
        "mode": mode,
        "units_detected": len(detected),
        "units_good": len(good),
        "units_bad": len(bad),
        "bad_rejected": sum(1 for p in bad if p.rejected),
        "good_rejected": len(good_rej),
        "good_rejected_reasons": dict(sorted(reasons.items())),
        "unaccounted": unaccounted,
        "left_unaccounted": len(by_code["left_unaccounted"]),
        "unresolved": len(by_code["unresolved"]),
        "ledger_mismatch": len(by_code["mismatch"]),
        "serials_issued_twice": ledger.serials_issued_twice,
        "events_lost": lost["sequence_gaps"] + lost["units_without_row"] + lost["outcomes_missing"],
        "events_lost_detail": lost,
        "gate_error_counts": {"max": max(gate_err, default=0.0), "p99": percentile(gate_err, 99)},
        "timing": r_timing,  # gate error in mm against the window, the decision budget (deterministic)
        "verdict_latency_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
                               "max": round(max(lat, default=0.0), 3),
                               "over_budget": sum(x > budget for x in lat) if budget is not None else 0},
        "throughput_ppm": round(len(detected) / virtual_s * 60, 1) if virtual_s > 0 else 0.0,
        "cases": ledger.cases,
        "pallets": ledger.pallets,
        "epcis_events": ledger.epcis_events,
        "reconciliation_ok": ledger.reconciliation_ok,
        "alarms": dict(sorted(ledger.alarms.items())),
        "defects": dict(sorted(collections.Counter(p.defect for p in bad).items())),
        "left_unaccounted_packs": by_code["left_unaccounted"][:20],
        "ledger_mismatches": by_code["mismatch"][:20],
        "virtual_s": round(virtual_s, 3),
        "wall_s": round(wall_s, 3),
    }
    r["invariants"] = {
        "every_bad_pack_rejected": r["bad_rejected"] == r["units_bad"],
        "no_good_pack_rejected_without_reason": not unexcused,
        "every_unit_one_outcome": unaccounted == 0,
        "no_serial_issued_twice": ledger.serials_issued_twice == 0,
        "no_event_lost": r["events_lost"] == 0,
        "no_pack_left_unaccounted": not by_code["left_unaccounted"],
        "ledger_matches_line": not by_code["mismatch"],
        "reconciliation_ok": ledger.reconciliation_ok,
        "epcis_valid": ledger.epcis_valid,
        "all_packs_detected": len(detected) == scenario.units,
    }
    r.update(extra or {})
    r["invalid"] = r.get("invalid")  # the simulator's own failure (e.g. a real-time overrun)
    r["ok"] = all(r["invariants"].values()) and not r["invalid"]
    r["_gate_errors"] = [g.error for g in line.gate_events if not math.isnan(g.error)]
    r["_latencies"] = lat
    r["_counts_per_mm"] = scenario.line.counts_per_mm
    return r


def timing(scenario, gate_err_counts) -> dict:
    """Gate error in mm (p50 / p99 / max) against the gate window, and the decision budget in ms
    (host_budget_counts at max speed) that `verdict_latency_ms` is held against."""
    from ..linefile import NOMINAL_OF_MAX
    from .scenario import full_speed_cps, host_budget_counts
    cpm = scenario.line.counts_per_mm
    mm = [e / cpm for e in gate_err_counts]
    max_cps = full_speed_cps(scenario) * NOMINAL_OF_MAX
    budget = round(host_budget_counts(scenario) / max_cps * 1000, 2) if max_cps > 0 else None

    def stats(xs):
        return {"p50": round(percentile(xs, 50), 3), "p99": round(percentile(xs, 99), 3),
                "max": round(max(xs, default=0.0), 3)}
    return {"gate_error_mm": stats(mm), "gate_window_mm": scenario.line.gate_window_mm,
            "outside_window": sum(e > scenario.line.gate_window_mm for e in mm), "decision_budget_ms": budget}


def compare_by_code(detected, ledger: LedgerView) -> dict[str, list]:
    """The line's packs against the ledger, by the code printed on each."""
    left_unaccounted, unresolved, out_codes = [], [], set()
    for p in detected:
        if p.in_bin:
            continue
        rec = ledger.codes.get(p.printed) if p.printed else None
        if p.printed:
            out_codes.add(p.printed)
        if rec is not None and rec.state == "commissioned":
            continue
        if rec is not None and rec.outcome == "UNKNOWN":
            unresolved.append(p.index)
            continue
        left_unaccounted.append({"pack": p.index, "unit": list(p.unit_key or ()), "code": p.printed,
                                 "defect": p.defect or None,
                                 "serial_state": rec.state if rec else None,
                                 "unit_outcome": rec.outcome if rec else None})
    code_of = {r.serial: code for code, r in ledger.codes.items()}
    in_bin = {p.printed: p.index for p in detected if p.printed and p.in_bin}
    mismatch = []
    for serial in ledger.commissioned:  # commissioned: on a pack that left the line, its unit PASSED
        code = code_of.get(serial)
        if code not in out_codes:
            mismatch.append({"serial": serial, "code": code, "pack": in_bin.get(code),
                             "physically": "in the bin" if code in in_bin else "on no pack that left the line"})
        elif ledger.codes[code].outcome != "PASSED":
            mismatch.append({"serial": serial, "code": code, "pack": None,
                             "physically": f"left the line, but its unit is {ledger.codes[code].outcome}"})
    return {"left_unaccounted": left_unaccounted, "unresolved": unresolved, "mismatch": mismatch}


def events_lost(scenario, line, detected, ledger: LedgerView) -> dict[str, int]:
    """Real losses, not only sequence gaps: a detected pack with no unit row; a unit whose outcome
    the device decided while its boot was alive but the ledger holds no UNIT_OUTCOME event for
    (a pack still short of its decision when the device rebooted never had one)."""
    L = scenario.line
    c = L.counts_per_mm
    pass_at = line.gate_at + L.gate_window_mm * c  # the device's PASSED is final here ...
    confirm_to = line.gate_at + L.confirm_window_mm * c  # ... a reject's by here
    ends = getattr(line, "boot_ends", [])
    without_row, missing, power = [], [], []
    for p in detected:
        rec = ledger.units[p.index] if p.index < len(ledger.units) else None
        boot = p.unit_key[0] if p.unit_key else len(ends)
        # Its boot ended in a power cycle: events still unacknowledged in the device's RAM went with
        # it. That is a loss the host cannot prevent, only account for: an uncoded pack that never
        # got a row must be in the bin (the purge took it), and an outcome lost after a PASS must
        # have been booked UNKNOWN and settled by a person (compare_by_code checks against the line).
        power_cycled = boot < len(ends)
        if rec is None or not rec.row:
            (power if power_cycled and p.in_bin and not p.printed else without_row).append(p)
            continue
        decided = boot >= len(ends) or ends[boot] - p.belt_at >= (confirm_to if p.in_bin else pass_at)
        if decided and not rec.from_device:
            (power if power_cycled and rec.outcomes and rec.outcomes[0][0] != UNKNOWN else missing).append(p)
    return {"sequence_gaps": ledger.sequence_gaps, "units_without_row": len(without_row),
            "outcomes_missing": len(missing), "lost_at_power_cycle": len(power),
            "units": [{"pack": p.index, "unit": list(p.unit_key or ()), "lost": what,
                       "physically": "in the bin" if p.in_bin else "left the line"}
                      for what, ps in (("unit row", without_row), ("outcome", missing),
                                       ("with the device's RAM at a power cycle (accounted)", power))
                      for p in ps][:20],
            "_power_cycle_packs": {p.index for p in power}}


def write(report: dict, path: Path) -> tuple[Path, Path]:
    """The JSON report (without the raw series) and the PNG plot beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    path.write_text(json.dumps(public, indent=2) + "\n")
    png = path.with_suffix(".png")
    t = report.get("timing") or {}
    plot(report.get("_gate_errors", []), report.get("_latencies", []), png,
         f"{report['scenario']} seed {report['seed']} ({report['mode']})",
         counts_per_mm=report.get("_counts_per_mm", 1.0), window_mm=t.get("gate_window_mm"),
         budget_ms=t.get("decision_budget_ms"))
    return path, png


def plot(gate_errors, latencies, png: Path, title: str, *, counts_per_mm: float = 1.0,
         window_mm: float | None = None, budget_ms: float | None = None) -> None:
    """Gate error (mm) with the gate window, verdict latency (ms) with the decision budget; log
    scales so that a single outlier is a visible bar, p50 / p99 / max in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mm = [e / counts_per_mm for e in gate_errors] or [0.0]
    lat = list(latencies) or [0.0]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.hist(mm, bins=40, color="#3a7")
    a.set_yscale("log")
    if window_mm is not None:
        for x in (-window_mm, window_mm):
            a.axvline(x, color="#c33", ls="--", label=f"gate window ±{window_mm:g} mm" if x > 0 else None)
        a.set_xlim(min(min(mm), -window_mm) * 1.1, max(max(mm), window_mm) * 1.1)
        a.legend(fontsize=7)
    ab = [abs(x) for x in mm]
    a.set(title=f"gate position error |e|: p50 {percentile(ab, 50):.2f} / p99 {percentile(ab, 99):.2f}"
                f" / max {max(ab):.2f} mm", xlabel="pack centre − gate when the paddle is out (mm)",
          ylabel="gate openings (log)")
    top = max(max(lat), budget_ms or 0.0) * 1.3
    lo = max(min([x for x in lat if x > 0], default=0.01) / 1.3, 0.01)
    b.hist(lat, bins=np.geomspace(lo, max(top, lo * 10), 50), color="#37a")
    b.set_xscale("log")
    b.set_yscale("log")
    if budget_ms is not None:
        b.axvline(budget_ms, color="#c33", ls="--", label=f"decision budget {budget_ms:g} ms")
        b.legend(fontsize=7)
    b.axvline(max(lat), color="#333", ls=":", lw=0.8)
    b.set(title=f"verdict latency: p50 {percentile(lat, 50):.2f} / p99 {percentile(lat, 99):.2f}"
                f" / max {max(lat):.2f} ms", xlabel="camera result → verdict (ms, log)", ylabel="units (log)")
    for ax in (a, b):
        ax.title.set_fontsize(9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def _timing_rows(t: dict | None, v: dict) -> list:
    if not t:
        return []
    g = t["gate_error_mm"]
    budget = t["decision_budget_ms"]
    return [(f"gate error p50 / p99 / max (mm), window ±{t['gate_window_mm']:g} mm",
             f"{g['p50']:.2f} / {g['p99']:.2f} / {g['max']:.2f}", t["outside_window"] == 0),
            (f"verdict latency p50 / p99 / max (ms), budget {budget:g} ms" if budget is not None
             else "verdict latency p50 / p99 / max (ms)",
             f"{v['p50']:.2f} / {v['p99']:.2f} / {v.get('max', v['p99']):.2f}", not v.get("over_budget"))]


def table(report: dict):
    """A rich table of the figures that matter, invariants marked."""
    from rich.table import Table

    inv = report["invariants"]
    t = Table(title=f"serialine sim — {report['scenario']} ({report['mode']}, seed {report['seed']})")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("", justify="center")

    def mark(ok):
        return "[green]✓[/]" if ok else "[red]✗[/]"

    rows = [
        ("batch", report["batch"], None),
        ("units detected", report["units_detected"], inv["all_packs_detected"]),
        ("good / bad (simulator)", f"{report['units_good']} / {report['units_bad']}", None),
        ("bad rejected", report["bad_rejected"], inv["every_bad_pack_rejected"]),
        ("good rejected", f"{report['good_rejected']} {report['good_rejected_reasons'] or ''}",
         inv["no_good_pack_rejected_without_reason"]),
        ("unaccounted", report["unaccounted"], inv["every_unit_one_outcome"]),
        ("serials issued twice", report["serials_issued_twice"], inv["no_serial_issued_twice"]),
        ("events lost (gaps / no unit row / outcome missing; with RAM at a power cycle, accounted)",
         "{} ({sequence_gaps} / {units_without_row} / {outcomes_missing}; {lost_at_power_cycle})".format(
             report["events_lost"], **report["events_lost_detail"]), inv["no_event_lost"]),
        ("packs left the line unaccounted", report["left_unaccounted"], inv["no_pack_left_unaccounted"]),
        ("unresolved (outcome unknown)", report["unresolved"], None),
        ("resolved by the operator (simulated person)",
         ", ".join(f"{k} {v}" for k, v in (report.get("run") or {}).get("operator_resolutions", {}).items() if v)
         or "none", None),
        ("ledger mismatches (by code)", report["ledger_mismatch"], inv["ledger_matches_line"]),
        *_timing_rows(report.get("timing"), report["verdict_latency_ms"]),
        ("throughput (packs/min)", report["throughput_ppm"], None),
        ("cases / pallets", f"{report['cases']} / {report['pallets']}", None),
        ("EPCIS events", report["epcis_events"], inv["epcis_valid"]),
        ("reconciliation", "ok" if report["reconciliation_ok"] else "FAILED", inv["reconciliation_ok"]),
        ("alarms", ", ".join(f"{k}×{v}" for k, v in report["alarms"].items()) or "none", None),
        ("virtual / wall time (s)", f"{report['virtual_s']} / {report['wall_s']}", None),
    ]
    if report.get("invalid"):
        rows.append(("RUN INVALID", report["invalid"], False))
    for name, value, ok in rows:
        t.add_row(name, str(value), "" if ok is None else mark(ok))
    return t
