"""The simulator's report and plot speak mm and ms (issue 12): gate error against the gate window,
verdict latency against the decision budget, p50 / p99 / max — a single 500 ms outlier is the max,
and the table flags it against the budget."""

from __future__ import annotations

import dataclasses
import json

import pytest
from rich.console import Console

from serialine.host.sim import report as rep
from serialine.host.sim import scenario as sc

from tests.sim.test_report import _run


@pytest.fixture
def saved(monkeypatch):
    """What the figure saved last drew (`saved["axes"]`), matplotlib on Agg."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    seen = {}
    real = plt.Figure.savefig

    def keep(fig, *a, **kw):
        seen["axes"] = fig.axes
        return real(fig, *a, **kw)
    monkeypatch.setattr(plt.Figure, "savefig", keep)
    return seen


def test_the_report_has_mm_ms_max_window_budget_and_the_outlier_shows(tmp_path):
    s, line, ledger = _run()
    units = list(ledger.units)
    units[7] = dataclasses.replace(units[7], verdict_latency_ms=500.0)
    ledger = dataclasses.replace(ledger, units=units)
    r = rep.build(s, line, ledger, mode="virtual", virtual_s=1, wall_s=1)
    t = r["timing"]
    assert set(t) == {"gate_error_mm", "gate_window_mm", "outside_window", "decision_budget_ms"}
    assert set(t["gate_error_mm"]) == {"p50", "p99", "max"}
    v = r["verdict_latency_ms"]  # milliseconds; not in `timing`: it differs run to run (the host's own time)
    assert set(v) == {"p50", "p99", "max", "over_budget"}
    assert v["max"] == 500.0 and v["p50"] == 3.0
    assert t["gate_window_mm"] == s.line.gate_window_mm
    cpm = s.line.counts_per_mm
    assert t["gate_error_mm"]["max"] == round(r["gate_error_counts"]["max"] / cpm, 3)
    budget = t["decision_budget_ms"]
    assert budget == round(sc.host_budget_counts(s) / (sc.full_speed_cps(s) * 1.25) * 1000, 2) and 3.0 < budget < 500
    assert v["over_budget"] == 1
    path, png = rep.write(r, tmp_path / "r.json")
    assert json.loads(path.read_text())["timing"] == t
    assert png.read_bytes()[:4] == b"\x89PNG"
    c = Console(width=200, record=True)
    c.print(rep.table(r))
    text = c.export_text()
    assert f"gate error p50 / p99 / max (mm), window ±{s.line.gate_window_mm:g} mm" in text
    assert f"verdict latency p50 / p99 / max (ms), budget {budget:g} ms" in text and "/ 500.00" in text
    row = next(ln for ln in text.splitlines() if "verdict latency" in ln)
    assert "✗" in row  # over the budget


def test_the_plot_uses_log_scales_with_the_window_and_budget_lines(tmp_path, saved):
    rep.plot([-8, 4, 12, 0], [2.0, 3.0, 2.5, 370.0], tmp_path / "p.png", "t", counts_per_mm=4.0,
             window_mm=15.0, budget_ms=40.0)
    a, b = saved["axes"]
    assert a.get_yscale() == "log" and b.get_xscale() == "log" and b.get_yscale() == "log"
    assert b.get_xlim()[1] > 370 and "max 370.00 ms" in b.get_title() and "p99" in b.get_title()
    assert any("decision budget 40 ms" in t.get_text() for t in b.get_legend().get_texts())
    assert any("gate window ±15 mm" in t.get_text() for t in a.get_legend().get_texts())
    assert "max 3.00 mm" in a.get_title()


def test_the_tune_plot_draws_the_window_and_the_budget_on_log_scales(tmp_path, saved):
    from serialine.host import tune
    fig = {"units": [{"gate_error_mm": e} for e in (1.0, -2.0, None, 40.0)], "gate_window_mm": 15.0,
           "rejects_by_reason": {"no_read": 3}}
    status = {"speed_mm_s": 200, "budget_ms": 40.0, "verdict_latency_ms": {"p50": 3.0, "p99": 5.0, "max": 370.0, "n": 9}}
    tune.plot_figures(fig, status, str(tmp_path / "t.png"))
    ax, lx, _ = saved["axes"]
    assert ax.get_yscale() == "symlog" and lx.get_yscale() == "log"
    assert [round(b.get_height(), 1) for b in lx.patches] == [3.0, 5.0, 370.0]
    assert any("decision budget 40 ms" in t.get_text() for t in lx.get_legend().get_texts())
    assert "max 370.0 ms" in ax.get_title() and "budget 40.0 ms" in ax.get_title()
