"""The issue's proof: `serialine agent run` as a process, on a line made of the simulator's parts in
real time — the firmware unchanged in the MicroPython unix port on a pty (host/sim/parts.SimDevice),
the line model with its coder defects (host/sim/line.py), the Cognex DataMan emulator as the
camera and the coder emulator — a batch made with the `serialine batch` CLI, the operator's
commands through `serialine line`. Mid-batch the camera's connection drops; later the service is
SIGTERMed and started again. The ledger must then hold what the simulator's report calls its
invariants (host/sim/report.py): every bad pack rejected, one outcome per unit, no serial issued
twice, no event lost, no pack unaccounted for, the ledger agreeing with the line by printed code,
and `serialine batch reconcile` passing.

The same proof through the simulator, which starts `serialine agent run` itself: `serialine sim
--batch B` on a batch made with the CLI, vendor drivers, a camera drop and a SIGTERM + restart.

Also: a configuration the line file or the device refuses is one line a user can act on, the same
from `serialine agent check` (offline) and `serialine agent run`."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from serialine.host import linefile
from serialine.host.sim import parts, scenario as scenario_mod
from serialine.host.sim import ledger as sim_ledger
from serialine.host.sim import report as sim_report
from serialine.host.sim.emulators import emulator
from serialine.host.sim.faults import FaultyRelay

from rigs import LoggedProc, ledger_rows

try:
    from serialine.host.sim.line import LineModel
except ImportError:  # before the simulator's rename
    from serialine.host.sim.line import Line as LineModel

SERIALINE = str(Path(sys.executable).with_name("serialine"))
GTIN = "09506000134352"
OPERATOR = "op-otto"
MAX_TICK_US = 15_000  # the longest the belt moves between two scans (9 counts here; the gate's half window is 60)
WALL_FACTOR = 5  # World.wait: a line this many times slower than the wall clock is a stuck one

SCENARIO = """\
name = "agent-e2e"
units = 48
ppm = 90
seed = 11

[line]
gate_window_mm = 30

[defects]
misprint = 0.05
skip = 0.03
smear = 0.05

[camera]
latency_ms = 4
latency_jitter_ms = 1
no_read = 0.02
"""


def serialine(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([SERIALINE, *args], capture_output=True, text=True, timeout=timeout)


def ok(*args: str) -> str:
    r = serialine(*args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def make_batch(db: Path, batch: str, units: int) -> None:
    """QA's part, with the real CLI: ledger, product, site, serial pool, batch, started."""
    who = ["--db", str(db), "--user", "qa-anna"]
    ok("init", "--db", str(db))
    ok("batch", "product", GTIN, "Aspirin 100 mg", "--market", "EU_FMD", "--prefix-len", "7", *who)
    ok("batch", "serials", GTIN, "--generate", str(units * 3 + 1500), *who)  # above the pool's low-water mark
    ok("batch", "create", batch, GTIN, "L-E2E-1", "2031-01-31", "--planned", str(units), "--case-size", "10",
       "--pallet-size", "10", *who)
    ok("batch", "start", batch, *who)


class ServiceProc(LoggedProc):
    """`serialine agent run` as systemd would run it: its own process, stderr is its log."""

    what = "the agent"

    def __init__(self, config: Path, batch: str | None):
        super().__init__([SERIALINE, "agent", "run", "--config", str(config)] + (["--batch", batch] if batch else []))

    @property
    def control(self) -> str:
        return self.wait_log(r"control interface on http://(\S+)")[1]

    def status(self) -> dict:
        r = serialine("line", "status", "--control", self.control, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def wait_status(self, cond, timeout: float = 30.0) -> dict:
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"the agent exited {self.proc.returncode}:\n{self.log}"
            last = self.status()
            if cond(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"status never matched; last {json.dumps(last)}\n{self.log}")

    def operator(self, command: str, reason: str) -> None:
        r = serialine("line", command, "--control", self.control, "--user", OPERATOR, "--reason", reason)
        assert (r.returncode, r.stderr) == (0, ""), (r.stderr, self.log)

    def sigterm(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc


class World(threading.Thread):
    """The physical line on the wall clock: belt, packs, photo-eye, coder and camera triggers, gate,
    confirm sensor; the device scanned in lockstep with it (its clock is the line's). The belt moves
    only once the device has run (the drive's permissive), then follows the device's stop output."""

    def __init__(self, s, workdir: Path, coder, camera):
        super().__init__(daemon=True)
        from serialine.host.sim.run import Ticks

        self.s, self.coder, self.camera = s, coder, camera
        self.relay = FaultyRelay(seed=s.seed).start()  # no faults: a plain pty pair with a tap
        self.line = LineModel(s, coder=coder, camera=camera)
        self.device = parts.SimDevice(self.relay.device_path, self.line, s, realtime=True, workdir=workdir)
        self.device.start()
        self.ticks = Ticks(s, None)
        self.detected = 0
        self.ran = False
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self._quit = threading.Event()

    def run(self):
        line, device = self.line, self.device
        last = time.monotonic()
        try:
            while not self._quit.is_set():
                with self.lock:
                    if not self.ran:
                        if device.running:
                            self.ran, line.line_stop = True, False
                        else:
                            line.line_stop, line.run_factor = True, 0.0
                    # the line's clock follows the wall clock, but a tick this machine was late
                    # with pauses the line rather than jump the belt past the gate unscanned
                    now = time.monotonic()
                    t = line.t + max(1, min(MAX_TICK_US, int((now - last) * 1e6)))
                    last = now
                    t_was, belt_was = line.t, line.belt
                    edges = line.advance(t)
                    self.ticks.tick(line.t - t_was, line.belt - belt_was, line)
                    for e in edges:
                        if e.name == "photo_eye" and e.level:
                            line.packs[self.detected].unit_key = (0, self.detected)
                            self.detected += 1
                    for name, level, te in device.step(line.t, line.encoder, edges):
                        line.output(name, level, te)
                    self.camera.deliver(line.t)
                time.sleep(0.0003)
        except BaseException as exc:  # the test sees it
            self.error = exc

    def wait(self, cond, line_s: float, what: str, agent: ServiceProc | None = None):
        """Until `cond()`, for at most `line_s` s of the line's own clock: on a loaded machine the line
        runs slower than the wall clock (a late tick pauses it, MAX_TICK_US) and so does all it feeds;
        the wall clock bounds only a world that stopped ticking (WALL_FACTOR times as long)."""
        t_end = self.line.t + line_s * 1e6
        wall_end = time.monotonic() + line_s * WALL_FACTOR
        while self.line.t < t_end and time.monotonic() < wall_end:
            if self.error is not None:
                raise self.error
            if cond():
                return
            time.sleep(0.05)
        if cond():
            return
        raise AssertionError(f"{what}: not within {line_s} s of the line's clock (detected {self.detected}, "
                             f"device state {self.device.state}, line at {self.line.t / 1e6:.1f} s)\n"
                             f"{agent.log if agent else ''}")

    def close(self):
        self._quit.set()
        if self.is_alive():
            self.join(5)
        self.device.close()
        self.relay.close()


CODER_DRIVER, READER_DRIVER = "videojet", "dataman"  # a real coder family and the Cognex reader


def line_file(path: Path, s, world: World, coder_driver: str, db: Path, **geometry) -> linefile.LineConfig:
    cfg = linefile.from_scenario(s, port=world.relay.host_path, coder_addr=world.coder.address,
                                 camera_addr=world.camera.address, ledger=db, control="127.0.0.1:0")
    cfg = dataclasses.replace(
        cfg, coder=dataclasses.replace(cfg.coder, driver=coder_driver),
        camera=dataclasses.replace(cfg.camera, driver=READER_DRIVER),
        geometry=dataclasses.replace(cfg.geometry, **geometry))
    path.write_text(linefile.to_toml(cfg))
    return linefile.load(path)


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(text: str = SCENARIO):
        s = scenario_mod.parse(text, "agent-e2e scenario")
        coder = emulator("coder", CODER_DRIVER)(misprint=s.defects.misprint, skip=s.defects.skip,
                                                smear=s.defects.smear, seed=s.seed * 7 + 1).start()
        camera = emulator("reader", READER_DRIVER)(latency_ms=s.camera.latency_ms, jitter_ms=s.camera.latency_jitter_ms,
                                                   no_read=s.camera.no_read, seed=s.seed * 7 + 2).start()
        world = World(s, tmp_path / "device", coder, camera)
        made.append(world)
        return s, world, CODER_DRIVER

    yield make
    for world in made:
        world.close()
        world.coder.close()
        world.camera.close()


def alarm_count(db: Path, kind: str) -> int:
    return ledger_rows(db, "SELECT COUNT(*) FROM alarm_log WHERE alarm = ?", kind)[0][0]


def assert_journal_lines(agent: ServiceProc):
    assert "Traceback" not in agent.log, agent.log
    for line in agent.lines:
        assert line.startswith("serialine-agent: "), line


def test_agent_run_end_to_end_camera_drop_sigterm_restart(tmp_path, rig):
    s, world, coder_driver = rig()
    db, batch = tmp_path / "serialine.db", "B-E2E-1"
    make_batch(db, batch, s.units)
    config = tmp_path / "line.toml"
    line_file(config, s, world, coder_driver, db)
    check = ok("agent", "check", "--config", str(config))
    assert "decision budget" in check, check
    world.start()
    agents: list[ServiceProc] = []
    try:
        # 1. the service configures and starts the device; packs run
        agent = ServiceProc(config, batch)
        agents.append(agent)
        st = agent.wait_status(lambda st: st["ready"], 60)
        assert st["batch"] == batch and st["camera"] == "connected" and st["coder"] == "connected"
        assert st["device"]["board"] == "sim" and st["device"]["fingerprint"].startswith("0x")
        world.wait(lambda: world.detected >= 12, 60, "12 packs", agent)

        # 2. the camera's connection drops mid-batch: line stop + alarm, reconnect, re-pair, clear
        world.camera.drop()
        agent.wait_log(r"alarm camera CAMERA_LOST: ", 20)
        world.wait(lambda: world.line.line_stop, 10, "the line stopped while the camera was gone", agent)
        agent.wait_log(r"alarm camera CAMERA_BACK: ", 40)
        agent.wait_log(r"alarm agent RESUMED: camera pairing restarted", 40)
        agent.operator("clear", "camera reconnected, pairing restarted")
        n = world.detected
        world.wait(lambda: world.detected >= n + 8, 60, "8 packs after the camera came back", agent)

        # 3. SIGTERM mid-batch: exit 0 in order; a new service resumes the device's boot
        assert agent.sigterm() == 0, agent.log
        assert re.search(r"stopping: line stop sent", agent.log), agent.log
        # the line model stops the belt on the device's stop output: the packs between the photo-eye
        # and the gate wait on it, their events on the device, for the next start to resume them
        assert re.search(r"stopped: every unit in flight has its outcome|stopping: \d+ unit\(s\) of boot \d+ still "
                         r"without an outcome after [\d.]+ s; the device keeps their events", agent.log), agent.log
        assert_journal_lines(agent)
        boot = st["device"]["boot_id"]
        resumed_before = alarm_count(db, "RESUMED")
        agent = ServiceProc(config, batch)
        agents.append(agent)
        st = agent.wait_status(lambda st: st["ready"], 60)
        assert st["device"]["boot_id"] == boot, st  # the same boot of the device: resumed, not reconfigured
        world.wait(lambda: alarm_count(db, "RESUMED") > resumed_before, 40, "RESUMED after the restart", agent)
        agent.operator("clear", "agent restarted after maintenance")
        n = world.detected
        world.wait(lambda: world.detected >= n + 4, 60, "4 packs after the restart", agent)
        agent.operator("stop", "pallet change at the packer")
        world.wait(lambda: world.line.line_stop, 10, "the line stopped by the operator", agent)
        time.sleep(1.0)
        agent.operator("clear", "pallet changed")

        # 4. the rest of the batch; then everything in the ledger, SIGTERM again
        world.wait(lambda: world.line.done, 120, "every pack past the gate", agent)
        want = world.detected
        world.wait(lambda: ledger_rows(db, "SELECT COUNT(*) FROM unit WHERE batch_id=? AND outcome IS NOT NULL",
                                batch)[0][0] >= want, 30, "an outcome for every detected pack", agent)
        assert agent.sigterm() == 0, agent.log
        assert_journal_lines(agent)
    finally:
        for a in agents:
            a.kill()
        world.close()
    world.line.unprinted()

    # QA closes the batch (partial case and pallet closed, reconciled, refused on any problem); then
    # the reconciliation of the closed batch passes
    close = serialine("batch", "close", batch, "--db", str(db), "--user", "qa-anna")
    reconcile = serialine("batch", "reconcile", batch, "--db", str(db), "--user", "qa-anna")
    printed = [p.printed for p in world.line.packs if p.printed]
    view = sim_ledger.read(db, batch, printed_codes=printed, epcis_dir=tmp_path / "no-epcis",
                           reconciliation_ok=reconcile.returncode == 0,
                           unit_keys=[p.unit_key for p in world.line.packs], device_id=world.device.device_id,
                           boot_ids=world.device.boot_ids)
    report = sim_report.build(s, world.line, view, mode="realtime", virtual_s=world.line.t / 1e6, wall_s=0.0,
                              extra={"ticks": world.ticks.summary(), "invalid": world.ticks.invalid()})
    summary = {k: report[k] for k in ("units_detected", "units_bad", "bad_rejected", "good_rejected",
                                      "good_rejected_reasons", "unaccounted", "left_unaccounted_packs",
                                      "ledger_mismatches", "events_lost_detail", "serials_issued_twice",
                                      "defects", "alarms", "ticks")}
    assert report["invalid"] is None, summary  # the rig kept up with the belt: the gate's physics are the line's
    inv = report["invariants"]
    for name in ("every_bad_pack_rejected", "every_unit_one_outcome", "no_serial_issued_twice", "no_event_lost",
                 "no_pack_left_unaccounted", "ledger_matches_line", "all_packs_detected"):
        assert inv[name], (name, summary)
    assert report["units_bad"] >= 2, summary  # the proof had bad packs to reject
    assert "unrecorded" not in report["good_rejected_reasons"], summary  # a good pack rejected says why
    assert close.returncode == 0, (close.stdout, close.stderr)
    assert reconcile.returncode == 0, (reconcile.stdout, reconcile.stderr)
    assert "PROBLEM" not in reconcile.stdout, reconcile.stdout
    assert inv["reconciliation_ok"]
    assert ledger_rows(db, "SELECT COUNT(*) FROM unit WHERE batch_id=? AND outcome IS NULL", batch) == [(0,)]
    assert ledger_rows(db, "SELECT COUNT(*) FROM unit WHERE batch_id=? AND outcome = 'UNKNOWN'", batch) == [(0,)]
    # the operator's commands, with user and reason, in the audit log; and the chain verifies
    trail = [(u, a, json.loads(d)["reason"]) for u, a, d in
             ledger_rows(db, "SELECT user, action, detail FROM audit WHERE action IN"
                         " ('line.start', 'line.stop', 'line.clear') ORDER BY seq")]
    assert trail == [(OPERATOR, "line.clear", "camera reconnected, pairing restarted"),
                     (OPERATOR, "line.clear", "agent restarted after maintenance"),
                     (OPERATOR, "line.stop", "pallet change at the packer"),
                     (OPERATOR, "line.clear", "pallet changed")], trail
    ok("audit", "verify", "--db", str(db))


# --- a refused configuration: the one line a user sees ----------------------------------------------

def test_a_line_file_with_the_gate_before_the_camera_is_refused_in_one_line(tmp_path):
    text = (Path(__file__).resolve().parents[2] / "examples" / "line-sim.toml").read_text()
    cfg = linefile.parse(text, "line-sim.toml")
    camera_at = cfg.geometry.camera_at_mm
    bad = tmp_path / "line.toml"
    bad.write_text(re.sub(r"(?m)^gate_at_mm = .*$", f"gate_at_mm = {camera_at - 100:g}", text))
    assert bad.read_text() != text
    check = serialine("agent", "check", "--config", str(bad))
    run = serialine("agent", "run", "--config", str(bad))
    assert check.returncode != 0 and run.returncode == 1, (check, run)
    said = check.stdout + check.stderr
    assert said.strip().count("\n") == 0 and "Traceback" not in said, said
    assert f"{bad}" in said and "gate_at_mm" in said and "camera_at_mm" in said, said
    (line,) = run.stderr.splitlines()
    assert line.startswith("serialine-agent: ERROR ") and "gate_at_mm" in line and "camera_at_mm" in line, line
    assert run.stdout == ""


def test_a_configuration_the_device_refuses_is_its_field_in_mm_and_ms(tmp_path, rig):
    """A line file that parses, but whose geometry the firmware's own check refuses: `agent check`
    says so offline, and `agent run` against the real firmware stops with the device's CONFIG_REPORT
    explained in the line file's keys and units — not 'did not start within 20 s'."""
    s, world, coder_driver = rig()
    db, batch = tmp_path / "serialine.db", "B-E2E-REFUSED"
    make_batch(db, batch, s.units)
    config = tmp_path / "line.toml"
    line_file(config, s, world, coder_driver, db, min_host_budget_ms=5000.0)
    check = serialine("agent", "check", "--config", str(config))
    assert check.returncode != 0, check.stdout
    said = (check.stdout + check.stderr).strip().splitlines()
    refusal = [x for x in said if "refuse" in x]
    assert len(refusal) == 1 and "min_host_budget_ms = 5000 ms" in refusal[0], said
    world.start()
    agent = ServiceProc(config, batch)
    assert agent.exit_code(60) == 1, agent.log
    errors = agent.errors()
    assert len(errors) == 1, agent.log
    assert errors[0].startswith("serialine-agent: ERROR device refused the configuration: "), errors[0]
    assert "min_host_budget_ms = 5000 ms" in errors[0], errors[0]
    assert "Traceback" not in agent.log and "did not start" not in agent.log
    assert not world.ran and world.detected == 0  # the line never ran


# --- the same proof through the simulator, which now runs `serialine agent run` itself ---------------

SIM_SCENARIO = """\
name = "agent-e2e-sim"
units = 150
ppm = 600
seed = 3

[defects]
misprint = 0.03
smear = 0.02

[coder]
driver = "videojet"

[camera]
driver = "dataman"
no_read = 0.01

[faults]
camera_drop_at = [50]
host_term_at = [100]
"""


def test_serialine_sim_runs_a_cli_batch_through_agent_run_with_a_camera_drop_and_a_sigterm(tmp_path):
    db, batch = tmp_path / "serialine.db", "B-E2E-SIM"
    make_batch(db, batch, 150)
    scenario = tmp_path / "e2e.toml"
    scenario.write_text(SIM_SCENARIO)
    out = tmp_path / "out"
    r = serialine("sim", "--scenario", str(scenario), "--batch", batch, "--db", str(db), "--out", str(out), "--quiet",
                  timeout=300)
    report_file = out / "report-agent-e2e-sim.json"
    assert report_file.exists(), (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    report = json.loads(report_file.read_text())
    summary = {k: report.get(k) for k in ("invariants", "run", "alarms", "good_rejected_reasons", "invalid")}
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:], summary)
    assert all(report["invariants"].values()) and report["invalid"] is None, summary
    assert report["run"]["camera_drops"] == 1 and report["run"]["host_terms"] == 1, summary
    assert report["alarms"].get("camera_lost") == 1 and report["alarms"].get("camera_back") == 1, summary
    assert report["batch"] == batch
    agent_log = (out / "serialine.agent.log").read_text()
    assert "Traceback" not in agent_log and "driver dataman" in agent_log and "driver videojet" in agent_log
    reconcile = serialine("batch", "reconcile", batch, "--db", str(db), "--user", "qa-anna")
    assert reconcile.returncode == 0 and "PROBLEM" not in reconcile.stdout, reconcile.stdout
