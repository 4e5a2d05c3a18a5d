"""`serialine challenge` and the batch start it gates, against `serialine agent run` with the firmware
in the MicroPython unix port and the simulated line of tests/host/test_service.py (its Rig: a belt in
wall-clock time, coder, camera, gate, confirm sensor). The rig feeds the challenge's packs once the
challenge is armed; their kinds are made the simulator's way (host/challenge.py sim_read)."""

from __future__ import annotations

import heapq
import json
import subprocess
import time
from pathlib import Path

import pytest

from serialine.host import challenge, cli
from serialine.host.sim.camera import SimCamera

from rigs import ledger_rows, service_lines
from test_service import SERIALINE, Agent, Rig, wait_for


class ChallengeCamera(SimCamera):
    """The simulated camera, reporting what the rig says the pack shows (code as read, grade)."""

    def read_as(self, t_us: int, read: str | None, grade: str) -> None:
        self.triggers += 1
        n = self.triggers
        line = self._no_read_line(n) if read is None else self._result_line(n, grade, read)
        with self._lock2:
            heapq.heappush(self._due, (t_us + round(self.latency_us), n, line))


class ChallengeRig(Rig):
    """Test_service's rig, not feeding until told; `feed(plan)` gives the next packs their kinds.
    `gate_fault` = a pack index the paddle misses (a gate that does not fire for it)."""

    def __init__(self, *a, **kw):
        self.kinds: dict[int, str] = {}
        self.plan_next: list[str] = []
        self.read_codes: list[str] = []
        self.gate_fault: set[int] = set()
        super().__init__(*a, **kw)
        self.feeding = False
        old, self.camera = self.camera, ChallengeCamera(latency_ms=2, jitter_ms=0).start()
        old.close()

    @property
    def address(self):
        return {"coder": "%s:%d" % tuple(self.coder.address), "camera": "%s:%d" % tuple(self.camera.address)}

    def feed(self, plan):
        self.plan_next = list(plan)
        self.feeding = True

    def _feed(self):
        n = len(self.packs)
        if self.feeding and not self.plan_next and self.kinds:
            self.feeding = False
        super()._feed()
        if len(self.packs) > n:
            kind = self.plan_next.pop(0) if self.plan_next else "good"
            self.kinds[n] = kind
            if not self.plan_next:
                self.feeding = False

    def _output(self, name, t):
        if name != "camera":
            return super()._output(name, t)
        p = self._near(self.f["camera_at"], self.pitch / 2)
        kind = self.kinds.get(p.index, "good") if p else "good"
        unread = [q.printed for q in self.packs if self.kinds.get(q.index) in ("no_code", "unreadable") and q.printed]
        read, grade = challenge.sim_read(kind, p.printed if p else None,
                                         earlier=self.read_codes[-1] if self.read_codes else None,
                                         other=unread[-1] if unread else None)
        if read is not None and kind in ("good", "wrong_code"):
            self.read_codes.append(read)
        self.camera.read_as(t, read, grade)

    def _confirms(self):
        for i in self.gate_fault:
            if i < len(self.packs):
                self.packs[i].rejected = False  # the paddle never reached it
        super()._confirms()
        for i in self.gate_fault:
            if i < len(self.packs):
                self.packs[i].rejected = False


@pytest.fixture
def challenge_line(tmp_path):
    with service_lines(tmp_path, ChallengeRig) as make:
        def make_challenge(policy: str | None = "on_change", min_grade: str | None = None):
            def edit(text: str) -> str:
                if min_grade:
                    text = text.replace("[camera]\n", f'[camera]\nmin_grade = "{min_grade}"\n')
                return text + (f'\n[policy]\nchallenge = "{policy}"\n' if policy else "")
            return make(edit)

        yield make_challenge


def run_challenge(agent, rig, cfg: Path, tmp_path: Path, plan=challenge.PLAN, *extra, start=False):
    """`serialine challenge` as a process; the rig feeds the plan once it is armed. `start`: the line
    waits (its [policy] held start_on_boot): the operator starts it once the challenge is armed."""
    plot = tmp_path / "challenge.png"
    proc = subprocess.Popen([SERIALINE, "challenge", "--config", str(cfg), "--control", agent.control.address,
                             "--user", "eng-bob",
                             "--reason", "commissioning: challenge after configuration", "--plot", str(plot),
                             "--timeout", "60", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert "armed" in first, (first, proc.stderr.read() if proc.poll() is not None else "")
    if start:
        agent.control.command("line.start", "op-otto", "challenge packs")
        agent.wait_status(lambda s: s["device"]["state"] == "RUNNING")
    rig.feed(plan)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, first + out, err, plot


def audit_rows(db: Path, action: str):
    return [(u, json.loads(d)) for u, d in ledger_rows(db, "SELECT user, detail FROM audit WHERE action=? ORDER BY seq",
                                                       action)]


def batch_start(db: Path, batch: str, *extra):
    """`serialine batch start` in a process (its one-line refusal is on stderr)."""
    return subprocess.run([SERIALINE, "batch", "start", batch, "--db", str(db), "--user", "qa-anna", *extra],
                          capture_output=True, text=True, timeout=60)


def new_batch(db: Path, batch: str):
    assert cli.main(["batch", "create", batch, "09506000134352", "L2", "2031-01-31", "--planned", "50",
                     "--case-size", "10", "--pallet-size", "10", "--db", str(db), "--user", "qa-anna"]) == 0


def test_challenge_passes_every_kind_and_unblocks_batch_start(challenge_line, tmp_path):
    rig, cfg, db, batch = challenge_line("on_change")
    agent = Agent(cfg, batch)
    try:
        # the policy holds start_on_boot: the line waits for the challenge
        agent.wait_status(lambda s: s["ready"] and s["device"]["state"] == "IDLE")
        (_, conf), = audit_rows(db, challenge.CONFIGURE)
        assert conf["policy"]["challenge"] == "on_change" and conf["line_id"] == "line-1"
        assert len(conf["line_file_sha256"]) == 64 and conf["device_fields"]["gate_at"] == rig.f["gate_at"]
        new_batch(db, "B2")
        refused = batch_start(db, "B2")
        assert refused.returncode == 1, refused
        assert refused.stderr.count("\n") == 1 and "line line-1 has no passed challenge since its configuration" \
            " changed" in refused.stderr and "serialine challenge" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr

        rc, out, err, plot = run_challenge(agent, rig, cfg, tmp_path, start=True)
        assert rc == 0, (out, err, agent.log)
        lines = [ln for ln in out.splitlines() if " pack " in ln and ln[:4] in ("ok  ", "FAIL")]
        assert len(lines) == len(challenge.PLAN) and all(ln.startswith("ok") for ln in lines), out
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        (user, rec), = audit_rows(db, challenge.ACTION)
        assert user == "eng-bob" and rec["result"] == "passed" and rec["problems"] == []
        assert rec["settings_sha256"] == conf["settings_sha256"] and rec["line_file_sha256"] == conf["line_file_sha256"]
        by_kind = {p["kind"]: p for p in rec["packs"]}
        for kind, want in challenge.KINDS.items():
            p = by_kind[kind]
            if want is None:
                assert (p["test"], p["verdict"], p["outcome"]) == (False, "PASS", "PASSED"), p
            else:
                assert p["test"] and p["verdict"] == "FAIL" and p["verdict_reason"] in want, p
                assert p["outcome"] == "REJECTED_CONFIRMED" and p["reason"] == "TEST_UNIT", p
                assert abs(p["gate_error_mm"]) <= 15.0, p
        ok = batch_start(db, "B2")
        assert ok.returncode == 0 and "batch B2 started" in ok.stdout, ok

        # serialine tune over the same units: gate error in mm vs the window, rejects by reason, the plot
        tune_png = tmp_path / "tune.png"
        t = subprocess.run([SERIALINE, "tune", "--config", str(cfg), "--control", agent.control.address, "--once",
                            "--plot", str(tune_png)], capture_output=True, text=True, timeout=60)
        assert t.returncode == 0, t
        assert "rejects by reason: test_unit 6" in t.stdout and "0 outside the window" in t.stdout, t.stdout
        assert "gate error vs ±15 mm" in t.stdout and "budget" in t.stdout and " max " in t.stdout, t.stdout
        assert tune_png.read_bytes()[:4] == b"\x89PNG"
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    assert "Traceback" not in agent.log


def test_challenge_fails_when_a_bad_pack_is_not_confirmed(challenge_line, tmp_path):
    rig, cfg, db, batch = challenge_line("on_change")
    rig.gate_fault = {5}  # the low-grade pack (6th): the paddle does not reach it
    agent = Agent(cfg, batch)
    try:
        agent.wait_status(lambda s: s["ready"] and s["device"]["state"] == "IDLE")
        rc, out, err, plot = run_challenge(agent, rig, cfg, tmp_path, start=True)
        assert rc == 1, (out, err, agent.log)
        problems = [ln for ln in err.splitlines() if ln.startswith("serialine challenge: pack")]
        assert len(problems) == 1, (err, agent.log)
        assert "pack 6 low_grade" in problems[0] and "REJECTED_UNCONFIRMED" in problems[0] \
            and "not confirmed in the bin" in problems[0], err
        assert plot.exists()
        (_, rec), = audit_rows(db, challenge.ACTION)
        assert rec["result"] == "failed" and len(rec["problems"]) == 1
        new_batch(db, "B2")
        refused = batch_start(db, "B2")
        assert refused.returncode == 1 and "no passed challenge" in refused.stderr, refused
        agent.stop()
    finally:
        agent.kill()


def test_a_kind_the_host_misses_fails_the_challenge_but_the_test_pack_is_still_rejected(challenge_line, tmp_path):
    rig, cfg, db, batch = challenge_line(None, min_grade="F")  # grade D passes: the host misses low_grade
    agent = Agent(cfg, batch)
    try:
        agent.wait_status(lambda s: s["ready"] and s["device"]["state"] == "RUNNING")
        rc, out, err, _ = run_challenge(agent, rig, cfg, tmp_path, ("low_grade", "good"), "--plan", "low_grade,good")
        assert rc == 1, (out, err)
        problems = [ln for ln in err.splitlines() if ln.startswith("serialine challenge: pack")]
        assert problems == ["serialine challenge: pack 1 low_grade (unit 0): host verdict PASS OK, expected FAIL"
                            " low_grade"], err
        (_, rec), = audit_rows(db, challenge.ACTION)
        assert rec["packs"][0]["outcome"] == "REJECTED_CONFIRMED" and rec["packs"][0]["reason"] == "TEST_UNIT"
        assert rec["packs"][1]["ok"] and rec["result"] == "failed"
        agent.stop()
    finally:
        agent.kill()


def test_challenge_refusals_are_one_line(challenge_line, tmp_path):
    rig, cfg, db, batch = challenge_line(None)
    bad = subprocess.run([SERIALINE, "challenge", "--config", str(cfg), "--user", "eng-bob", "--reason", "check",
                          "--plan", "good,no_code"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "bad packs come first" in bad.stderr, bad
    nobody = subprocess.run([SERIALINE, "challenge", "--config", str(cfg), "--control", "127.0.0.1:9", "--user",
                             "eng-bob", "--reason", "check"],
                            capture_output=True, text=True, timeout=30)
    assert nobody.returncode == 1 and "no agent answering" in nobody.stderr, nobody
    # no [policy]: batch start is not gated
    new_batch(db, "B2")
    assert batch_start(db, "B2").returncode == 0
