"""`serialine sim` as a line engineer runs it: the command, its report, its plot, its exit status."""

from __future__ import annotations

import json
import sqlite3

from serialine.host.sim import cli


def test_sim_command_writes_report_plot_ledger_and_epcis(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["--units", "40", "--seed", "3", "--out", str(out), "--report", str(tmp_path / "r.json"),
                   "--quiet"])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["ok"] and r["units_detected"] == 40 and r["scenario"] == "nominal" and r["mode"] == "virtual"
    for key in ("batch", "units_good", "units_bad", "bad_rejected", "good_rejected", "unaccounted",
                "serials_issued_twice", "events_lost", "gate_error_counts", "verdict_latency_ms",
                "throughput_ppm", "cases", "pallets", "epcis_events", "reconciliation_ok", "alarms"):
        assert key in r, key
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "epcis").glob("*.json*"))
    with sqlite3.connect(out / "serialine.db") as c:
        state = c.execute("SELECT state FROM batch WHERE batch_id=?", (r["batch"],)).fetchone()[0]
        assert state == "closed"
        assert c.execute("SELECT count(*) FROM unit WHERE batch_id=? AND outcome IS NOT NULL",
                         (r["batch"],)).fetchone()[0] == 40


def test_sim_in_real_time_holds_the_invariants(tmp_path, monkeypatch):
    """The wall clock drives the line (600 packs/min, far below what the bench sustains); --out is
    relative, as in the README's quick start."""
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--units", "30", "--realtime", "--out", "out", "--quiet"])
    r = json.loads((tmp_path / "out" / "report-nominal.json").read_text())
    assert r["mode"] == "realtime" and r["units_detected"] == 30
    assert rc == 0, {k: v for k, v in r["invariants"].items() if not v}


def test_sim_refuses_a_bad_scenario_and_runs_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('units = 10\n[line]\ncoder_at_mm = "near"\n')
    assert cli.main(["--scenario", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "coder_at_mm" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
