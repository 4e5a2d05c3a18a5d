"""`serialine tune calibrate` against `serialine agent run` with the firmware in the MicroPython unix
port and the simulated line of tests/host/test_service.py, whose gate here acts after a REAL lead
different from the line file's gate_lead_ms, and whose confirm sensor sees a struck pack a fixed
travel after the strike: the proposal must come within tolerance of the truth; --apply sets it
through the audited device config path."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time

import pytest

from serialine.host import tune

from test_service import CPM, SERIALINE, Agent, Rig, fields_of, line_file, make_batch

REAL_LEAD_MS = 30.0  # the line file says 8
CONFIRM_MM = 25.0  # strike → confirm sensor, travel


class CalibRig(Rig):
    """The rig with a gate actuator that acts `real_lead_ms` after the device's output and a confirm
    sensor `confirm_mm` of travel after the strike; `feed(n)` gives n packs, half at each speed."""

    def __init__(self, *a, speeds=(800.0, 400.0), **kw):
        self.real_lead_us = REAL_LEAD_MS * 1000
        self.confirm_counts = CONFIRM_MM * CPM
        self.speeds, self.groups, self.to_feed = speeds, [], 0
        self.pending: list[tuple[float, bool]] = []
        self.struck: dict[int, float] = {}
        self.confirm_at: list[list] = []
        self.confirm_of: dict[int, float] = {}
        self.loops = 0
        super().__init__(*a, **kw)
        self.feeding = False

    def feed(self, n: int) -> None:
        self.groups = [n // 2, n - n // 2]
        self.cps, self.to_feed = self.speeds[0], self.groups.pop(0)
        self.feeding = True

    def _feed(self):
        if self.feeding and self.to_feed == 0:  # a group fed: the next speed once every pack is past the confirm
            if all(p.confirmed or self.belt - p.at > self.f["confirm_to"] + 40 for p in self.packs):
                if self.groups:
                    self.cps, self.to_feed = self.speeds[1], self.groups.pop(0)
                else:
                    self.feeding = False
            return
        n = len(self.packs)
        super()._feed()
        if len(self.packs) > n:
            self.to_feed -= 1

    def _output(self, name, t):
        if name in ("gate_open", "gate_close"):
            self.pending.append((t + self.real_lead_us, name == "gate_open"))
            return
        super()._output(name, t)

    # the confirm sensor's level, read by the rig's loop as `time.monotonic() < confirm_until`
    @property
    def confirm_until(self):
        now = self._now_us()
        for c in self.confirm_at:  # [time, sampled]: a pulse of 3 ms, and at least one loop's sample
            if now >= c[0] and (not c[1] or now < c[0] + 3000):
                c[1] = True
                return float("inf")
        return float("-inf")

    @confirm_until.setter
    def confirm_until(self, _):
        pass

    def _confirms(self):
        """Strikes at the actuator's own time (the belt position then, back from this loop's) and
        confirms at the strike's time + the travel: the rig's loop period adds no delay of its own."""
        now = self._now_us()
        self.loops += 1
        for p in self.packs[-40:]:
            if p.index in self.confirm_of and now >= self.confirm_of[p.index] + 3000:
                p.confirmed = True
        while self.pending and self.pending[0][0] <= now:
            t_o, out = self.pending.pop(0)
            self.gate_out = out
            if out:
                self._strike(t_o, self.belt - self.cps * (now - t_o) / 1e6)
        if self.gate_out:
            self._strike(now, self.belt)

    def _strike(self, t_us, belt):
        for p in self.packs[-40:]:
            off = belt - p.at - self.f["gate_at"]
            if not p.rejected and abs(off) <= 60:
                p.rejected = True
                self.struck[p.index] = off
                self.confirm_at.append([t_us + self.confirm_counts / self.cps * 1e6, False])
                self.confirm_of[p.index] = self.confirm_at[-1][0]

    def loop_ms(self) -> float:
        return (self._now_us() / 1000) / max(1, self.loops)


@pytest.fixture
def calib_line(tmp_path):
    db = tmp_path / "serialine.db"
    batch = make_batch(db)
    rig = CalibRig(tmp_path, {})
    cfg = line_file(tmp_path / "line.toml", rig, db)
    rig.f = fields_of(cfg)
    yield rig, cfg, db, batch
    rig.close()


def calibrate(agent, rig, cfg, *extra, packs=8):
    proc = subprocess.Popen([SERIALINE, "tune", "calibrate", "--config", str(cfg), "--control", agent.control.address,
                             "--user", "eng-bob", "--reason", "commissioning: gate lead calibration",
                             "--packs", str(packs), "--timeout", "90", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert "armed" in first, (first, proc.stderr.read() if proc.poll() is not None else "")
    rig.feed(packs)
    out, err = proc.communicate(timeout=150)
    return proc.returncode, out, err


def test_calibrate_measures_the_real_lead_and_applies_it_audited(calib_line):
    rig, cfg, db, batch = calib_line
    agent = Agent(cfg, batch)
    try:
        agent.wait_status(lambda s: s["ready"] and s["device"]["state"] == "RUNNING")
        rc, out, err = calibrate(agent, rig, cfg, "--apply")
        assert rc == 0, (out, err, agent.log)
        assert re.search(r"(^|\n)[4-7] pack\(s\) done: lower the line speed \(about half\), then feed the other 4\n", out), out
        m = json.loads(next(ln for ln in out.splitlines() if ln.startswith("{")))
        lead = m["gate_lead_ms"]
        print("calibration:", json.dumps(m), f"rig loop {rig.loop_ms():.2f} ms")  # shown with -s
        assert lead["configured"] == 8.0
        tol = 3.0 + 2 * rig.loop_ms()  # the device samples the rig once a loop: fire and confirm that late
        assert abs(lead["measured"] - REAL_LEAD_MS) <= tol, (m, rig.loop_ms())
        assert abs(m["confirm_delay_mm"] - CONFIRM_MM) <= 3.0, m
        assert m["speeds_mm_s"][0] < 0.7 * m["speeds_mm_s"][1], m
        prop = m["proposal"]
        assert abs(prop["gate_lead_ms"] - REAL_LEAD_MS) <= tol and 30.0 <= prop["confirm_window_mm"] <= 60.0, m
        assert "proposal for the line file:\n[line]\ngate_lead_ms = " in out, out
        assert f"[line] gate_lead_ms: 8.0 → {prop['gate_lead_ms']:g}" in out, out
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT user, detail FROM audit WHERE action='device.config'").fetchall()
            challenges = conn.execute("SELECT COUNT(*) FROM audit WHERE action='line.challenge'").fetchone()[0]
        finally:
            conn.close()
        (user, detail), = rows
        d = json.loads(detail)
        assert user == "eng-bob" and d["reason"] == "commissioning: gate lead calibration"
        assert d["before"] == {"gate_lead_ms": 8.0, "confirm_window_mm": 80.0}
        assert d["after"] == {"gate_lead_ms": prop["gate_lead_ms"], "confirm_window_mm": prop["confirm_window_mm"]}
        assert challenges == 0  # a calibration run is a measurement, not a challenge
        got = subprocess.run([SERIALINE, "device", "config", "get", "--config", str(cfg), "--control",
                              agent.control.address], capture_output=True, text=True, timeout=30)
        assert f"gate_lead_ms = {prop['gate_lead_ms']:g}" in got.stdout, got
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    assert "Traceback" not in agent.log


def _pack(v_cps: float, lead_ms: float, d_mm: float, cfg_lead_ms: float = 8.0, gate_mm: float = 400.0,
          late_ms: float = 0.0) -> dict:
    """A confirmed test pack as the device times it under the model (photo-eye at pos 1000, t 5 s);
    `late_ms`: the scan that fired it came that late (the device's gate_error says so)."""
    v = v_cps / 1e6
    late = v * late_ms * 1000
    rel = gate_mm * CPM + late + v * (lead_ms - cfg_lead_ms) * 1000 + d_mm * CPM
    return {"outcome": "REJECTED_CONFIRMED", "detected_pos": 1000, "detected_t_us": 5_000_000,
            "outcome_pos": 1000 + round(rel), "outcome_t_us": 5_000_000 + round(rel / v),
            "gate_error_mm": round(late / CPM, 2)}


KW = dict(counts_per_mm=CPM, gate_at_mm=400.0, gate_lead_ms=8.0, gate_window_mm=15.0, max_speed_mm_s=300.0)


def test_the_fit_recovers_lead_and_delay_and_one_speed_is_refused_in_one_line():
    packs = [_pack(v, 22.0, 40.0, late_ms=late) for v, late in ((1000, 4), (1000, 6), (1000, 5), (500, 5), (500, 6),
                                                                 (500, 4))]
    m = tune.calibration(packs, **KW)
    # positions are whole counts: at 125 mm/s half a count is 1 ms of travel
    assert abs(m["gate_lead_ms"]["measured"] - 22.0) < 0.5 and abs(m["confirm_delay_mm"] - 40.0) < 0.5, m
    assert abs(m["proposal"]["gate_lead_ms"] - 22.0) < 0.5 and 55.0 <= m["proposal"]["confirm_window_mm"] <= 60.0, m
    blind = [dict(p, gate_error_mm=0.0) for p in packs]  # without the firing scan's lateness: off by it
    assert tune.calibration(blind, **KW)["gate_lead_ms"]["measured"] > 25.0
    assert m["confirm_delay_ms"]["300 mm/s"] == pytest.approx(m["confirm_delay_mm"] / 300 * 1000, abs=0.1)
    with pytest.raises(tune.CalibrationError, match="at one speed the gate's lead and the confirm delay cannot"):
        tune.calibration([_pack(1000, 22.0, 40.0)] * 6, **KW)
    unconfirmed = [dict(p, outcome="REJECTED_UNCONFIRMED") for p in packs]
    with pytest.raises(tune.CalibrationError, match="0 test pack"):
        tune.calibration(unconfirmed, **KW)
