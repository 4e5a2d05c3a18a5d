"""The run's report: ground truth from the line model set against the ledger, the invariants, a
JSON file, a rich summary table and a PNG plot (gate position error, verdict latency)."""

from __future__ import annotations

import json
import math
import collections
from dataclasses import dataclass, field
from pathlib import Path

from serialine.protocol.schema import Outcome, Reason

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


@dataclass
class UnitRecord:
    """One detected unit as the ledger holds it, in detection order across boots."""

    outcomes: list[tuple[int, int]]  # (Outcome, Reason) recorded; exactly one when accounted for
    gate_error: int | None = None  # the device's view, counts
    verdict_latency_ms: float | None = None  # camera result delivered -> verdict sent


@dataclass
class Ledger:
    """What the host's ledger says about the batch (filled by run.py from SQLite)."""

    batch: str
    units: list[UnitRecord]
    serials_issued_twice: int
    events_lost: int
    reconciliation_ok: bool
    epcis_events: int
    epcis_valid: bool
    cases: int = 0
    pallets: int = 0
    alarms: dict[str, int] = field(default_factory=dict)
    epcis_errors: list[str] = field(default_factory=list)


def percentile(xs, q: float) -> float:
    """Nearest-rank percentile; 0 for no data."""
    xs = sorted(x for x in xs if x is not None and not math.isnan(x))
    if not xs:
        return 0.0
    k = max(0, min(len(xs) - 1, math.ceil(q / 100 * len(xs)) - 1))
    return float(xs[k])


def build(scenario, line, ledger: Ledger, *, mode: str, virtual_s: float, wall_s: float,
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
        reason = Reason(rec.outcomes[0][1]) if rec and len(rec.outcomes) == 1 else None
        reasons[reason.name.lower() if reason else "unrecorded"] += 1
        allowed = CAMERA_REASONS.get(p.camera_fault, set())
        if p.index in slipped:
            allowed = allowed | SLIP_REASONS
        if scenario.has_faults:
            allowed = allowed | FAIL_SAFE
        if reason is None or reason not in allowed:
            unexcused.append(p.index)
    # the ledger must agree with the physics: passed <=> the pack went on down the line
    disagree = []
    for p in detected:
        rec = ledger.units[p.index] if p.index < len(ledger.units) else None
        if rec and len(rec.outcomes) == 1:
            if (rec.outcomes[0][0] == Outcome.PASSED) == p.rejected:
                disagree.append(p.index)
    unaccounted = sum(1 for i in range(len(detected))
                      if i >= len(ledger.units) or len(ledger.units[i].outcomes) != 1)
    unaccounted += max(0, len(ledger.units) - len(detected))
    gate_err = [abs(g.error) for g in line.gate_events if not math.isnan(g.error)]
    lat = [u.verdict_latency_ms for u in ledger.units if u.verdict_latency_ms is not None]
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
        "serials_issued_twice": ledger.serials_issued_twice,
        "events_lost": ledger.events_lost,
        "gate_error_counts": {"max": max(gate_err, default=0.0), "p99": percentile(gate_err, 99)},
        "verdict_latency_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99)},
        "throughput_ppm": round(len(detected) / virtual_s * 60, 1) if virtual_s > 0 else 0.0,
        "cases": ledger.cases,
        "pallets": ledger.pallets,
        "epcis_events": ledger.epcis_events,
        "reconciliation_ok": ledger.reconciliation_ok,
        "alarms": dict(sorted(ledger.alarms.items())),
        "defects": dict(sorted(collections.Counter(p.defect for p in bad).items())),
        "ledger_disagrees_with_line": disagree[:20],
        "virtual_s": round(virtual_s, 3),
        "wall_s": round(wall_s, 3),
    }
    r["invariants"] = {
        "every_bad_pack_rejected": r["bad_rejected"] == r["units_bad"],
        "no_good_pack_rejected_without_reason": not unexcused,
        "every_unit_one_outcome": unaccounted == 0,
        "no_serial_issued_twice": ledger.serials_issued_twice == 0,
        "no_event_lost": ledger.events_lost == 0,
        "ledger_matches_line": not disagree,
        "reconciliation_ok": ledger.reconciliation_ok,
        "epcis_valid": ledger.epcis_valid,
        "all_packs_detected": len(detected) == scenario.units,
    }
    r["ok"] = all(r["invariants"].values())
    r.update(extra or {})
    r["_gate_errors"] = [g.error for g in line.gate_events if not math.isnan(g.error)]
    r["_latencies"] = lat
    return r


def write(report: dict, path: Path) -> tuple[Path, Path]:
    """The JSON report (without the raw series) and the PNG plot beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    path.write_text(json.dumps(public, indent=2) + "\n")
    png = path.with_suffix(".png")
    plot(report.get("_gate_errors", []), report.get("_latencies", []), png,
         f"{report['scenario']} seed {report['seed']} ({report['mode']})")
    return path, png


def plot(gate_errors, latencies, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.hist(gate_errors or [0], bins=40, color="#3a7")
    a.set(title="gate position error", xlabel="pack offset - gate_at when the paddle is out (counts)",
          ylabel="gate openings")
    b.hist(latencies or [0], bins=40, color="#37a")
    b.set(title="verdict latency", xlabel="camera result -> verdict (ms)", ylabel="units")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


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
        ("events lost", report["events_lost"], inv["no_event_lost"]),
        ("ledger matches line", len(report["ledger_disagrees_with_line"]) or "yes", inv["ledger_matches_line"]),
        ("gate error max / p99 (counts)",
         f"{report['gate_error_counts']['max']:.1f} / {report['gate_error_counts']['p99']:.1f}", None),
        ("verdict latency p50 / p99 (ms)",
         f"{report['verdict_latency_ms']['p50']:.2f} / {report['verdict_latency_ms']['p99']:.2f}", None),
        ("throughput (packs/min)", report["throughput_ppm"], None),
        ("cases / pallets", f"{report['cases']} / {report['pallets']}", None),
        ("EPCIS events", report["epcis_events"], inv["epcis_valid"]),
        ("reconciliation", "ok" if report["reconciliation_ok"] else "FAILED", inv["reconciliation_ok"]),
        ("alarms", ", ".join(f"{k}×{v}" for k, v in report["alarms"].items()) or "none", None),
        ("virtual / wall time (s)", f"{report['virtual_s']} / {report['wall_s']}", None),
    ]
    for name, value, ok in rows:
        t.add_row(name, str(value), "" if ok is None else mark(ok))
    return t
