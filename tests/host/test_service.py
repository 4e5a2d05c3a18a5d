"""`serialine agent run` as a process, against the firmware in the MicroPython unix port on a pty,
the simulated coder and camera as TCP servers, a batch made with the real `serialine batch` CLI.

The rig (below) is the physical line, in wall-clock time: a belt at constant speed, packs fed at a
fixed pitch while the device runs (the stop output holds the infeed; packs on the belt ride on to
their outcome), the coder printing on its trigger, the camera reading on its, the gate pushing a
pack off into the chute where the confirm sensor sees it."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

import rigs

from serialine.host import cli
from serialine.host.sim.camera import SimCamera
from serialine.host.sim.coder import SimCoder

try:
    from serialine.host.sim.unixboard import UnixBoard as Board
except ImportError:  # before the simulator's move
    from serialine.host.simboard import SimBoard as Board


GTIN = "09506000134352"
MAX_STEP = 20  # belt counts per scan at most: a starved rig thread slows the belt, never jumps a station
CONFIRM_SCANS = 3  # the confirm sensor stays high this many scans: the device sees it however late it runs
SERIALINE = str(Path(sys.executable).parent / "serialine")
CPM = 4  # counts per mm in the line files below


class PtyLink:
    """Two ptys joined by a relay thread: the device opens one end, the service the other."""

    def __init__(self):
        self.ends = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            tty.setraw(master)
            self.ends.append((master, slave, os.ttyname(slave)))
        self.device_path, self.host_path = self.ends[0][2], self.ends[1][2]
        self._stop = False
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self):
        a, b = self.ends[0][0], self.ends[1][0]
        while not self._stop:
            r, _, _ = select.select([a, b], [], [], 0.05)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                try:
                    os.write(b if fd == a else a, data)
                except OSError:
                    pass

    def close(self):
        self._stop = True
        self._thread.join(1)
        for master, slave, _ in self.ends:
            for fd in (master, slave):
                try:
                    os.close(fd)
                except OSError:
                    pass


class Pack:
    def __init__(self, index, at):
        self.index, self.at = index, at  # belt position when its leading edge meets the photo-eye
        self.printed = None
        self.rejected = False
        self.confirmed = False


class Rig:
    """The line around the device (see the module's docstring), stepped by its own thread."""

    def __init__(self, workdir: Path, fields: dict, *, cps: float = 800.0, pitch: int = 400,
                 length: int = 240, units: int = 10**9):
        self.f, self.cps, self.pitch, self.length, self.units = fields, cps, pitch, length, units
        self.workdir = workdir
        self.link = PtyLink()
        self.coder = SimCoder().start()
        self.camera = SimCamera(latency_ms=2, jitter_ms=0).start()
        self.board = None
        self.packs: list[Pack] = []
        self.state = 0
        self.stop_out = False
        self.gate_out = False
        self.stops = 0  # stop_on edges seen
        self.feeding = True
        self.belt_halts = False  # True: the stop output halts the belt too (not only the infeed)
        self.t0 = time.monotonic()
        self.belt = 0.0
        self.run_from = None  # belt position when the device last went RUNNING (the purge runs from it)
        self.confirm_scans = 0
        self.confirm_until = 0.0  # a subclass's own confirm level (tests/host/test_calibrate.py)
        self._reboot = threading.Event()
        self._quit = False
        self.error = None
        self._boot()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _boot(self):
        self.board = Board(self.link.device_path, cfg_path=self.workdir / "serialine.cfg", device_id="line-1",
                           cwd=self.workdir)

    @property
    def address(self):
        return {"coder": "%s:%d" % tuple(self.coder.address), "camera": "%s:%d" % tuple(self.camera.address)}

    def _now_us(self):
        return int((time.monotonic() - self.t0) * 1e6)

    def _run(self):
        last = self._now_us()
        try:
            while not self._quit:
                if self._reboot.is_set():
                    self.board.proc.kill()
                    self.board.close()
                    self._boot()
                    self.state, self.stop_out, self.gate_out, self.run_from = 0, False, False, None
                    self._reboot.clear()
                t = self._now_us()
                if self._moving():
                    self.belt += min(MAX_STEP, self.cps * (t - last) / 1e6)
                last = t
                self._feed()
                pe = int(any(p.at <= self.belt < p.at + self.length for p in self.packs[-3:]))
                confirm = int(self.confirm_scans > 0 or time.monotonic() < self.confirm_until)
                self.confirm_scans = max(0, self.confirm_scans - 1)
                edges, st = self.board.step(t, int(self.belt), pe, confirm, 0)
                self.state = st.state
                if st.state == 2 and self.run_from is None:
                    self.run_from = self.belt
                elif st.state != 2:
                    self.run_from = None
                for e in edges:
                    self._output(e.name, t)
                self._confirms()
                self.camera.deliver(t)
                time.sleep(0.0005)
        except Exception as exc:  # the test sees it
            self.error = exc

    def _moving(self) -> bool:
        """The drive runs while the device runs; a line stop holds the infeed at once and the belt
        runs on until no pack is short of its confirm point (the line clears), then stands."""
        if self.state == 2 and not self.stop_out:
            return True
        if not self.stop_out or not self.f or self.belt_halts:
            return False
        clear = self.f["confirm_to"] + 40
        return any(self.belt - p.at < clear for p in self.packs[-40:])

    def _feed(self):
        f = self.f
        if (not self.feeding or self.state != 2 or self.stop_out or self.run_from is None
                or len(self.packs) >= self.units or self.belt < self.run_from + f["purge_counts"]):
            return
        nxt = self.packs[-1].at + self.pitch if self.packs else self.belt
        if self.belt >= nxt:
            self.packs.append(Pack(len(self.packs), self.belt))

    def _near(self, at, tol):
        best = None
        for p in self.packs[-40:]:
            if abs(self.belt - p.at - at) <= tol and not p.rejected:
                best = p
        return best

    def _output(self, name, t):
        f = self.f
        if name == "coder":
            job = self.coder.trigger(t)
            p = self._near(f["coder_at"], self.pitch / 2)
            if p is not None and job is not None:
                p.printed = job[0]
        elif name == "camera":
            p = self._near(f["camera_at"], self.pitch / 2)
            self.camera.trigger(t, p.printed if p else None, False)
        elif name in ("gate_open", "gate_close"):
            self.gate_out = name == "gate_open"
        elif name == "stop_on":
            self.stop_out, self.stops = True, self.stops + 1
        elif name == "stop_off":
            self.stop_out = False

    def _confirms(self):
        f = self.f
        for p in self.packs[-40:]:
            if self.gate_out and abs(self.belt - p.at - f["gate_at"]) <= 60:
                p.rejected = True  # the paddle is out while the pack is in front of it
            if p.rejected and not p.confirmed and self.belt - p.at >= f["gate_at"] + 80:
                p.confirmed = True
                self.confirm_scans = CONFIRM_SCANS

    def reboot(self):
        self._reboot.set()
        while self._reboot.is_set():
            time.sleep(0.01)

    def close(self):
        self._quit = True
        self.thread.join(5)
        if self.board is not None:
            self.board.close()
        self.coder.close()
        self.camera.close()
        self.link.close()


# --- the ledger and the line file -------------------------------------------------------------

def make_batch(db: Path, batch="B1", planned=500) -> str:
    def ok(*argv):
        assert cli.main([*argv, "--db", str(db), "--user", "qa-anna"]) == 0, argv
    ok("batch", "product", GTIN, "Aspirin", "--market", "EU_FMD", "--prefix-len", "7")
    ok("batch", "serials", GTIN, "--generate", str(planned * 2 + 300))
    ok("batch", "create", batch, GTIN, "L1", "2031-01-31", "--planned", str(planned), "--case-size", "10",
       "--pallet-size", "10")
    ok("batch", "start", batch)
    return batch


LINE_FILE = """\
[identity]
line_id = "line-1"
name = "test line"

[device]
port = "{port}"
board = "sim"

[line]
counts_per_mm = {cpm}
coder_at_mm = 100.0
camera_at_mm = 200.0
gate_at_mm = {gate_at}
gate_window_mm = 15.0
gate_lead_ms = 8.0
gate_dwell_mm = 20.0
confirm_window_mm = 80.0
max_speed_mm_s = 300.0

[coder]
driver = "serialine"
address = "{coder}"

[camera]
driver = "serialine"
address = "{camera}"

[agent]
start_on_boot = true

[ledger]
path = "{db}"

[control]
address = "127.0.0.1:0"
{upstream}"""


def line_file(path: Path, rig_or_addr, db: Path, *, gate_at=400.0, upstream="") -> Path:
    addr = rig_or_addr.address
    port = rig_or_addr.link.host_path
    path.write_text(LINE_FILE.format(port=port, cpm=CPM, coder=addr["coder"], camera=addr["camera"], db=db,
                                     gate_at=gate_at, upstream=upstream))
    return path


def fields_of(path: Path) -> dict:
    from serialine.host import linefile
    return linefile.device_fields(linefile.load(path))


# --- the service process ----------------------------------------------------------------------

class Agent(rigs.LoggedProc):
    """`serialine agent run --config CONFIG [--batch B]` (rigs.LoggedProc: its log, wait_log)."""

    what = "the agent"

    def __init__(self, config: Path, batch: str | None, env: dict | None = None):
        super().__init__([SERIALINE, "agent", "run", "--config", str(config)] + (["--batch", batch] if batch else []),
                         env=env, stdin=None)

    @property
    def control(self):
        from serialine.host.control import Client
        m = self.wait_log(r"control interface on http://(\S+)")
        return Client(m[1])

    def wait_status(self, cond, timeout: float = 20.0) -> dict:
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                last = self.control.status()
            except Exception:  # not up yet
                last = None
            if last is not None and cond(last):
                return last
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log}")
            time.sleep(0.1)
        raise AssertionError(f"status never matched; last {json.dumps(last)}\n{self.log}")

    def stop(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._reader.join(2)
        if os.environ.get("SERIALINE_TEST_SHOW_LOG"):
            print(self.log)
        return rc


@pytest.fixture
def line(tmp_path):
    made = []

    def make(**kw):
        db = tmp_path / "serialine.db"
        batch = make_batch(db)
        rig = Rig(tmp_path, {})  # its geometry comes from the line file the service reads
        cfg = line_file(tmp_path / "line.toml", rig, db, **kw)
        rig.f = fields_of(cfg)
        made.append(rig)
        return rig, cfg, db, batch

    yield make
    for rig in made:
        rig.close()


ledger_rows = rigs.ledger_rows


def wait_for(cond, timeout: float, what: str, rig=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if rig is not None and rig.error is not None:
            raise rig.error
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    where = f" (device state {rig.state}, stop output {rig.stop_out}, {len(rig.packs)} packs)" if rig else ""
    raise AssertionError(f"{what}: not within {timeout} s{where}")


# --- the tests --------------------------------------------------------------------------------

def test_ready_runs_packs_and_sigterm_leaves_every_unit_with_an_outcome(line):
    rig, cfg, db, batch = line()
    agent = Agent(cfg, batch)
    try:
        st = agent.wait_status(lambda s: s["ready"])
        assert st["batch"] == batch and st["device"]["device_id"] == "line-1"
        assert st["coder"] == "connected" and st["camera"] == "connected"
        assert re.search(r"configuration 1 applied on boot \d+ \(firmware \S+, board sim, schema fingerprint 0x[0-9a-f]{8}\)",
                         agent.log), agent.log
        wait_for(lambda: len(rig.packs) >= 8, 30, "8 packs on the line", rig)
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    rows = ledger_rows(db, "SELECT outcome, COUNT(*) FROM unit WHERE batch_id=? GROUP BY 1", batch)
    by = dict(rows)
    assert None not in by, (by, agent.log)
    assert by.get("PASSED", 0) >= 5, by
    assert "Traceback" not in agent.log
    assert re.search(r"stopped: every unit in flight has its outcome", agent.log), agent.log


def passed_since(db: Path, boot: int, unit: int) -> int:
    return ledger_rows(db, "SELECT COUNT(*) FROM unit WHERE boot_id=? AND unit_seq>=? AND outcome='PASSED'",
                       boot, unit)[0][0]


def last_outcomes(db: Path, batch: str, n: int = 2) -> list:
    """The outcomes of the last n decided units (of a run on one boot: boot ids are random)."""
    return [o for (o,) in ledger_rows(db, "SELECT outcome FROM unit WHERE batch_id=? AND outcome IS NOT NULL"
                                          " ORDER BY boot_id DESC,"
                                          " unit_seq DESC LIMIT ?", batch, n)]


def outcomes(db: Path, batch: str) -> dict:
    return dict(ledger_rows(db, "SELECT outcome, COUNT(*) FROM unit WHERE batch_id=? GROUP BY 1", batch))


def alarms(db: Path) -> list[tuple[str, str, str]]:
    return ledger_rows(db, "SELECT source, alarm, detail FROM alarm_log ORDER BY alarm_id")


def test_a_device_reboot_is_followed_configured_and_started_again(line):
    rig, cfg, db, batch = line()
    agent = Agent(cfg, batch)
    try:
        first = agent.wait_status(lambda s: s["ready"])["device"]["boot_id"]
        wait_for(lambda: len(rig.packs) >= 3, 30, "3 packs", rig)
        rig.reboot()
        st = agent.wait_status(lambda s: s["ready"] and s["device"]["boot_id"] not in (None, first), 30)
        second = st["device"]["boot_id"]
        assert re.search(rf"device line-1 boot {second}: firmware", agent.log), agent.log
        # applied, or kept when a pack at the photo-eye made the rebooted device busy
        assert re.search(rf"configuration \d+ (applied|kept) on boot {second} ", agent.log), agent.log
        n = len(rig.packs)
        wait_for(lambda: len(rig.packs) >= n + 3, 30, "3 packs after the reboot", rig)
        wait_for(lambda: passed_since(db, second, 0) >= 2, 30, "2 passed on the new boot", rig)
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    boots = {b for (b,) in ledger_rows(db, "SELECT DISTINCT boot_id FROM unit WHERE batch_id=?", batch)}
    assert boots == {first, second}
    passed_after = ledger_rows(db, "SELECT COUNT(*) FROM unit WHERE boot_id=? AND outcome='PASSED'", second)[0][0]
    assert passed_after >= 2, outcomes(db, batch)
    assert "Traceback" not in agent.log


def test_camera_lost_stops_the_line_until_back_and_cleared(line):
    from serialine.host.control import ControlError

    rig, cfg, db, batch = line()
    agent = Agent(cfg, batch)
    try:
        agent.wait_status(lambda s: s["ready"])
        client = agent.control
        wait_for(lambda: len(rig.packs) >= 4, 30, "4 packs", rig)
        host, port = rig.camera.address
        rig.camera.close()
        agent.wait_log(rf"alarm camera CAMERA_LOST: camera at {host}:{port}: connection lost")
        wait_for(lambda: rig.stop_out, 10, "the line stopped", rig)
        assert client.status()["camera"] == "lost"
        with pytest.raises(ControlError, match="while the camera is lost"):
            client.command("line.clear", "op-otto", "try to restart")
        fed = len(rig.packs)
        time.sleep(1.5)
        assert len(rig.packs) == fed and rig.stop_out  # stopped meanwhile
        rig.camera = SimCamera(latency_ms=2, jitter_ms=0, port=port).start()
        agent.wait_log(r"alarm camera CAMERA_BACK", 40)
        agent.wait_log(r"alarm agent RESUMED: camera pairing restarted", 20)
        assert agent.control.status()["camera"] == "connected"
        client.command("line.clear", "op-otto", "camera cable reseated")
        wait_for(lambda: len(rig.packs) >= fed + 4, 30, "4 packs after the clear", rig)
        # judged on fresh camera results / bound to what the coder printed again
        wait_for(lambda: last_outcomes(db, batch) == ["PASSED", "PASSED"], 30, "the last two passed", rig)
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    kinds = [k for _, k, _ in alarms(db)]
    assert kinds.index("CAMERA_LOST") < kinds.index("CAMERA_BACK") < kinds.index("RESUMED")
    by = outcomes(db, batch)
    assert None not in by and by.get("PASSED", 0) >= 5, by
    trail = ledger_rows(db, "SELECT user, action, detail FROM audit"
                             " WHERE action IN ('line.start', 'line.stop', 'line.clear')")
    assert [(u, a, json.loads(d)["reason"]) for u, a, d in trail] == [("op-otto", "line.clear", "camera cable reseated")]
    assert "Traceback" not in agent.log


def test_a_refused_configuration_is_one_line_in_the_line_files_units_and_exit_1(tmp_path, line):
    rig, cfg, db, batch = line()
    cfg.write_text(cfg.read_text().replace("max_speed_mm_s = 300.0", "max_speed_mm_s = 300.0\nmin_host_budget_ms = 5000"))
    agent = Agent(cfg, batch)
    rc = agent.exit_code(30)
    assert rc == 1, agent.log
    errors = agent.errors()
    assert len(errors) == 1, agent.log
    assert re.fullmatch(r"serialine-agent: ERROR device refused the configuration: the host's decision budget at max"
                        r" speed \(\[line\] max_speed_mm_s = 300 mm/s\) is [\d.]+ ms .* below \[line\]"
                        r" min_host_budget_ms = 5000 ms", errors[0]), errors[0]
    assert "Traceback" not in agent.log and "did not start" not in agent.log
    assert rig.state != 2 and not rig.packs  # the line never ran


def test_batch_from_the_control_interface_and_background_forwarding(tmp_path, line):
    from serialine.host.control import ControlError

    out = tmp_path / "epcis"
    out.mkdir()
    rig, cfg, db, batch = line(upstream=f'\n[[upstream]]\nkind = "dir"\nwhere = "{out}"\n')
    agent = Agent(cfg, None)
    try:
        st = agent.wait_status(lambda s: "batch" in s and s["batch"] is None and s["coder"] == "connected")
        assert not st["ready"]
        client = agent.control
        with pytest.raises(ControlError, match="NOPE"):
            client.command("batch.select", "qa-anna", "start of shift", batch="NOPE")
        client.command("batch.select", "qa-anna", "start of shift", batch=batch)
        agent.wait_status(lambda s: s["ready"] and s["batch"] == batch)
        wait_for(lambda: len(rig.packs) >= 5, 30, "5 packs", rig)
        # delivered while the agent runs: nobody typed serialine outbox --forward
        docs = wait_for(lambda: sorted(out.glob("*.jsonld")), 20, "an EPCIS document in the directory target", rig)
        assert docs
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    assert re.search(r"forwarding the outbox to directory:", agent.log), agent.log
    trail = ledger_rows(db, "SELECT user, action, detail FROM audit WHERE action = 'batch.select'")
    assert len(trail) == 1 and trail[0][0] == "qa-anna" and json.loads(trail[0][2])["reason"] == "start of shift"
    assert "Traceback" not in agent.log


def test_coder_lost_stops_the_line_and_its_queue_is_reset_once_back(line):
    rig, cfg, db, batch = line()
    agent = Agent(cfg, batch)
    try:
        agent.wait_status(lambda s: s["ready"])
        client = agent.control
        wait_for(lambda: len(rig.packs) >= 4, 30, "4 packs", rig)
        host, port = rig.coder.address
        rig.coder.close()
        agent.wait_log(rf"alarm coder CODER_LOST: coder at {host}:{port}: connection lost")
        wait_for(lambda: rig.stop_out, 10, "the line stopped", rig)
        assert client.status()["coder"] == "lost"
        fed = len(rig.packs)
        rig.coder = SimCoder(port=port).start()  # a coder restarted: its buffer is empty
        agent.wait_log(r"alarm coder CODER_BACK", 40)
        agent.wait_log(r"alarm agent RESUMED: coder cleared, \d+ queued job\(s\) dropped", 20)
        client.command("line.clear", "op-otto", "coder restarted")
        wait_for(lambda: len(rig.packs) >= fed + 4, 30, "4 packs after the clear", rig)
        # judged on fresh camera results / bound to what the coder printed again
        wait_for(lambda: last_outcomes(db, batch) == ["PASSED", "PASSED"], 30, "the last two passed", rig)
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    by = outcomes(db, batch)
    assert None not in by, by
    assert "Traceback" not in agent.log


def test_a_second_sigterm_exits_at_once_and_the_next_start_resumes(line):
    rig, cfg, db, batch = line()
    agent = Agent(cfg, batch)
    try:
        boot = agent.wait_status(lambda s: s["ready"])["device"]["boot_id"]
        wait_for(lambda: len(rig.packs) >= 3, 30, "3 packs", rig)
        agent.proc.send_signal(signal.SIGTERM)
        agent.wait_log(r"stopping: line stop sent")
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(5) == 1
    finally:
        agent.kill()
    again = Agent(cfg, batch)
    try:
        again.wait_log(rf"device line-1 boot {boot}: .* \(resumed: line stop latched until its events are in\)")
        again.wait_status(lambda s: s["ready"] and not s["resuming"])
        again.control.command("line.clear", "op-otto", "agent restarted")
        fed = len(rig.packs)
        wait_for(lambda: len(rig.packs) >= fed + 3, 30, "3 packs after the restart", rig)
        assert again.stop() == 0, again.log
    finally:
        again.kill()
    assert None not in outcomes(db, batch)
    assert "Traceback" not in agent.log + again.log


def run_cli(*argv, timeout=30):
    p = subprocess.run([SERIALINE, *argv], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def test_usage_and_a_bad_line_file_are_one_line(tmp_path):
    rc, out, err = run_cli("agent")
    assert rc == 2 and "usage: serialine agent run" in out
    rc, _, err = run_cli("agent", "run", "--config", str(tmp_path / "nope.toml"))
    assert rc == 1 and err.strip() == f"serialine-agent: ERROR {tmp_path / 'nope.toml'}: no such file", err
    rc, _, err = run_cli("agent", "fly")
    assert rc == 2 and "unknown subcommand 'fly'" in err


def test_check_dispatches_and_a_batch_not_running_is_refused_in_one_line(line):
    rig, cfg, db, batch = line()
    rc, out, err = run_cli("agent", "check", "--config", str(cfg))
    assert rc == 0 and "OK: the device will accept this configuration" in out, out + err
    rc, _, err = run_cli("agent", "run", "--config", str(cfg), "--batch", "NOPE")
    errors = [ln for ln in err.splitlines() if " ERROR " in ln]
    assert rc == 1 and len(errors) == 1 and "NOPE" in errors[0] and "Traceback" not in err, err
    assert not rig.packs and rig.state != 2


def test_a_device_of_another_schema_on_a_socket_url_is_waited_for_then_refused_in_one_line(tmp_path):
    """The port is a pyserial URL (a device behind a serial-to-TCP server): the service waits for it
    to come up, talks to it, and refuses a device built from another schema, in one line."""
    import socket

    from serialine.protocol.fastcodec import encode
    from serialine.protocol.schema import BY_NAME, PROTOCOL_VERSION, HelloStatus

    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there yet
    heard = []

    def device(server):
        conn, _ = server.accept()
        conn.settimeout(10)
        reply = encode(BY_NAME["HELLO_REPLY"].msg_type, 0, 0, dict(
            fingerprint=0x12345678, proto_version=PROTOCOL_VERSION, status=int(HelloStatus.FINGERPRINT_MISMATCH),
            fw_version="9.9.9", board="sim", device_id="line-1", boot_id=7, uptime_ms=1, reset_cause=1,
            next_unit_seq=0, state=0))
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                heard.append(data)
                conn.sendall(reply)
        except OSError:
            return

    db = tmp_path / "serialine.db"
    batch = make_batch(db)
    with SimCoder() as coder, SimCamera() as camera:
        cfg = tmp_path / "line.toml"
        cfg.write_text(LINE_FILE.format(port=f"socket://127.0.0.1:{port}", cpm=CPM, coder="%s:%d" % coder.address,
                                        camera="%s:%d" % camera.address, db=db, gate_at=400.0, upstream=""))
        agent = Agent(cfg, batch)
        try:
            agent.wait_log(rf"WARNING device port socket://127.0.0.1:{port}: cannot open it .*; retrying every 1..30 s")
            server = socket.create_server(("127.0.0.1", port))
            threading.Thread(target=device, args=(server,), daemon=True).start()
            rc = agent.exit_code(20)
        finally:
            agent.kill()
    server.close()
    errors = agent.errors()
    assert rc == 1 and heard and "Traceback" not in agent.log, agent.log
    assert len(errors) == 1 and "device schema fingerprint 0x12345678" in errors[0] and "refusing" in errors[0], agent.log


class Rfc2217Bridge:
    """A serial-to-TCP server speaking RFC 2217 (pyserial's PortManager) in front of a tty."""

    def __init__(self, tty_path: str):
        import socket

        import serial
        import serial.rfc2217

        class Pty(serial.Serial):  # a pty has no modem lines to report or set
            cts = dsr = ri = cd = False

            def _update_rts_state(self):
                pass

            def _update_dtr_state(self):
                pass

        self.port = Pty(tty_path, timeout=0)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = self.server.getsockname()[:2]
        self._rfc = serial.rfc2217
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self._one(conn)
            conn.close()

    def _one(self, conn):
        class Writer:  # what PortManager writes its telnet negotiation to
            def write(self, data):
                conn.sendall(data)

        pm = self._rfc.PortManager(self.port, Writer())
        conn.setblocking(False)
        while not self._stop:
            r, _, _ = select.select([conn, self.port.fileno()], [], [], 0.05)
            try:
                if conn in r:
                    data = conn.recv(4096)
                    if not data:
                        return
                    self.port.write(b"".join(pm.filter(data)))
                if self.port.fileno() in r:
                    data = self.port.read(4096)
                    if data:
                        conn.sendall(b"".join(pm.escape(data)))
            except (OSError, BlockingIOError):
                continue

    def close(self):
        self._stop = True
        self.server.close()
        self.port.close()


def test_the_device_behind_an_rfc2217_serial_server(line):
    rig, cfg, db, batch = line()
    bridge = Rfc2217Bridge(rig.link.host_path)
    cfg.write_text(cfg.read_text().replace(f'port = "{rig.link.host_path}"',
                                           'port = "rfc2217://%s:%d"' % tuple(bridge.address)))
    agent = Agent(cfg, batch)
    try:
        st = agent.wait_status(lambda s: s["ready"], 30)
        assert st["device"]["port"].startswith("rfc2217://")
        wait_for(lambda: len(rig.packs) >= 4, 30, "4 packs", rig)
        wait_for(lambda: last_outcomes(db, batch) == ["PASSED", "PASSED"], 30, "two passed", rig)
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
        bridge.close()
    assert None not in outcomes(db, batch)


def test_without_start_on_boot_the_operator_starts_the_line(line):
    from serialine.host.control import ControlError

    rig, cfg, db, batch = line()
    cfg.write_text(cfg.read_text().replace("start_on_boot = true", "start_on_boot = false"))
    agent = Agent(cfg, batch)
    try:
        st = agent.wait_status(lambda s: s["ready"])
        assert st["device"]["configured"] and "line started" not in agent.log
        time.sleep(0.5)
        assert rig.state != 2 and not rig.packs  # configured, waiting for the operator
        with pytest.raises(ControlError, match="reason is required"):
            agent.control.command("line.start", "op-otto", "go")
        agent.control.command("line.start", "op-otto", "shift start")
        wait_for(lambda: len(rig.packs) >= 3, 30, "3 packs", rig)
        agent.control.command("line.stop", "op-otto", "end of shift")
        agent.wait_status(lambda s: s["device"]["state"] == "STOPPED", 10)
        with pytest.raises(ControlError, match="latched a line stop; clear it"):
            agent.control.command("line.start", "op-otto", "start again")
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    trail = ledger_rows(db, "SELECT user, action, json_extract(detail, '$.reason') FROM audit"
                            " WHERE action IN ('line.start', 'line.stop', 'line.clear') ORDER BY seq")
    assert trail == [("op-otto", "line.start", "shift start"), ("op-otto", "line.stop", "end of shift")]
