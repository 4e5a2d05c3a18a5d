"""Adapters from the orchestrator to the other parts of the project: the firmware in the MicroPython
unix port (host/sim/unixboard.py, boards/sim) and the host agent as the service a real line runs
(`serialine agent run`, host/service.py) in its own process.
Everything the simulator needs from them goes through here, so a change of their API is one edit.

`device_config()` turns a scenario into the device's ConfigFields (line geometry in counts)."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from serialine.host import linefile

from . import rtsched, unixboard
from .errors import RunError


def _need(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise RunError(f"{what} is not available in this build ({module}: {exc})") from None


def device_config(scenario, line=None, config_id: int = 1) -> dict:
    """The device configuration for the simulated line (ConfigFields, counts and µs): the line
    file's conversion (host/linefile.py) of the scenario's [line] at its speed."""
    return linefile.device_fields(linefile.scenario_geometry(scenario), config_id)


class SimDevice:
    """The firmware, unchanged (firmware/device.py through boards/sim/simmain.py), in the real
    MicroPython unix port on the device pty, driven scan by scan in lockstep with the line model
    through host/sim/unixboard.py. A reboot is a power cycle: the process is killed and started again
    (a new boot_id; the configuration the device stored survives in its working directory)."""

    def __init__(self, tty_path: str, line, scenario, *, realtime: bool, workdir: Path,
                 device_id: str = "sim-line-1", priority: int | None = None):
        self.tty_path, self.line, self.realtime = tty_path, line, realtime
        self.priority = priority  # SCHED_FIFO priority of the firmware's process (rtsched.py), None: as started
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for stale in self.workdir.glob("serialine.cfg*"):
            stale.unlink()  # a new run starts unconfigured; a reboot keeps what the device stored
        self.device_id = device_id
        self.levels = {"photo_eye": 0, "confirm": 0, "bin_full": 0}
        self.state = 0
        self.status = unixboard.StepStatus(0, 0, 0, 0)
        self.scanned = (0, 0)  # (virtual µs, encoder) of the last scan: where its next_due counts from
        self.board = None
        self.boot_ids: list[int] = []  # the boot_id of each boot, in order
        self.log = open(self.workdir / "device.log", "a")

    def start(self):
        try:
            # lockstep even in a real-time run: the orchestrator then takes t from the wall clock
            with rtsched.spawning():  # it starts on the default scheduler; raised below
                self.board = unixboard.UnixBoard(self.tty_path, cfg_path=self.workdir / "serialine.cfg",
                                                 device_id=self.device_id, cwd=self.workdir)
        except (RuntimeError, OSError) as exc:  # RuntimeError: no micropython command too
            raise RunError(f"the device (MicroPython) did not start: {exc}") from None
        rtsched.fifo(self.board.proc.pid, self.priority)
        self.log.write(self.board.boot_line)
        m = re.search(r"READY boot_id=(\d+)", self.board.boot_line)
        self.boot_ids.append(int(m.group(1)) if m else -1)

    def _scan(self, t_us: int, encoder: int, upto: int = -1) -> list[tuple[str, int, int]]:
        lv = self.levels
        try:
            edges, st = self.board.step(t_us, encoder, lv["photo_eye"], lv["confirm"], lv["bin_full"], upto)
        except (RuntimeError, OSError):
            raise self._died() from None
        self.state, self.status, self.scanned = st.state, st, (t_us, encoder)
        # edge times come back wrapped at 2**30: unwrap against this scan's (unwrapped) time
        return [(e.name, 1, t_us - ((t_us - e.t_us) & unixboard.MASK)) for e in edges]

    def _died(self):
        out = self.board.close() if self.board is not None else ""
        self.log.write(out)
        self.log.flush()
        tail = (self.workdir / "device.log").read_text(errors="replace")[-2000:]
        return RunError(f"the device (MicroPython) stopped:\n{tail}")

    def step(self, t_us: int, encoder: int, edges, upto: int = -1) -> list[tuple[str, int, int]]:
        """Scans at each input edge and at t_us; `upto`: host messages held (unixboard.step)."""
        outs = []
        for e in edges:  # scan at each input edge, so the firmware sees every pulse
            self.levels[e.name] = e.level
            outs += self._scan(e.t_us, self.pos_at(e.t_us, t_us, encoder), upto)
        if edges and t_us - edges[-1].t_us <= 1 and self.pos_at(edges[-1].t_us, t_us, encoder) == encoder:
            return outs  # that scan was this one, to a µs
        return outs + self._scan(t_us, encoder, upto)

    def pos_at(self, t_edge, t_now, encoder):
        # the encoder at an edge inside the step: back off by the travel since (speed ~ constant)
        return max(0, encoder - int(self.line.speed() * (t_now - t_edge) / 1e6))

    def idle(self, upto: int = -1) -> None:
        """Let the firmware run (its link, its timers) without moving the line. Its outputs still
        reach the line: a START's purge opens the gate in the very scan that applies it."""
        for name, level, te in self._scan(self.line.t, self.line.encoder, upto):
            self.line.output(name, level, te)

    def next_due_us(self) -> int:
        """When the firmware next needs a scan (its last scan's core.next_due): the next position
        that matters at the belt's present speed, or its next time deadline. Both count from that
        scan's time and encoder, not the line's now: virtual time may have moved on since without a
        scan (a camera result due, a held result's answer time), and counting from now would move
        every deadline on by as much (a gate fired late)."""
        st, line = self.status, self.line
        t_scan, enc_scan = self.scanned
        t = t_scan + st.due_us if st.due_us != unixboard.NO_DUE else line.t + 1_000_000
        if st.due_counts != unixboard.NO_DUE:
            t = min(t, line.t_at_encoder(enc_scan + st.due_counts))
        return max(t, line.t + 1)

    @property
    def running(self) -> bool:
        return self.state == 2  # DeviceState.RUNNING

    def reboot(self):
        """Power cycle: SIGKILL, start again; the stored configuration survives, nothing else."""
        self.board.proc.kill()
        self.log.write(self.board.close())
        self.start()
        self.state = 0

    def close(self):
        if self.board is not None:
            self.log.write(self.board.close())
            self.board = None
        self.log.close()


class HostAgent:
    """`serialine agent run` (host/service.py), the service a real line runs, in its own process on
    a line file made from the scenario (host/linefile.py from_scenario, written into the run's out
    dir): the sim board's pty, the simulated coder and camera, the run's ledger, a control interface
    on a free loopback port, START after each boot. The operator's commands go through that control
    interface; a scenario can SIGKILL it (or SIGTERM it) and start it again on the same ledger."""

    USER = "serialine-sim"  # the simulated operator, in the audit trail
    POLL_S = 0.02  # how often /status is asked while waiting for ready

    def __init__(self, scenario, out: Path, db_path, batch_id, tty_path, coder_addr, camera_addr, *,
                 coder_driver: str = "serialine", camera_driver: str = "serialine", opcua=None,
                 priority: int | None = None):
        _need("serialine.host.service", "the host agent service (host/service.py)")
        from serialine.host import control, linefile

        self.batch_id = batch_id
        self.priority = priority  # SCHED_FIFO priority of the service's process (rtsched.py), None: as started
        self.address = f"127.0.0.1:{_free_port()}"
        cfg = linefile.from_scenario(scenario, port=tty_path, coder_addr=coder_addr, camera_addr=camera_addr,
                                     ledger=Path(db_path).resolve(), control=self.address)
        cfg = dataclasses.replace(cfg, coder=dataclasses.replace(cfg.coder, driver=coder_driver),
                                  camera=dataclasses.replace(cfg.camera, driver=camera_driver))
        if opcua is not None:  # (endpoint, users file): the service serves PackML + OPEN-SCS (docs/opcua.md)
            cfg = dataclasses.replace(cfg, opcua=linefile.OpcuaSettings(endpoint=opcua[0], users=opcua[1]))
        self.line_file = Path(out) / "line-sim.toml"
        self.line_file.write_text(linefile.to_toml(cfg))
        self.client = control.Client(self.address)
        self._control_error = control.ControlError
        self.proc = None
        self.present = self.leaving = False
        self._asked_at = 0.0
        self.refusals: list[str] = []  # operator commands the service refused (it says why)
        self.log = open(Path(out) / "serialine.agent.log", "ab")

    def start(self):
        cmd = [sys.executable, "-m", "serialine.host.cli", "agent", "run", "--config", str(self.line_file),
               "--batch", self.batch_id]
        # its own session: a Ctrl-C at the terminal reaches the simulator, which stops it in order
        with rtsched.spawning():  # it starts on the default scheduler; raised below
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                         start_new_session=True)
        rtsched.fifo(self.proc.pid, self.priority)
        self.present, self.leaving, self._asked_at = False, False, 0.0

    def _ready(self) -> bool:
        try:
            return bool(self.client.status().get("ready"))
        except self._control_error:
            return False  # not listening yet

    def wait_ready(self, device, timeout: float = 60.0):
        """Step the device (so it can answer HELLO and take its configuration) until the service
        says ready (configured and started, or resumed, on the present boot)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.poll_ready():
                return
            device.idle()
            time.sleep(0.001)
        raise RunError(f"the host agent did not get ready within {timeout:g} s (log: {self.log.name})")

    def poll_ready(self) -> bool:
        """Non-blocking (asks at most every POLL_S): is the (re)started service ready?"""
        if self.proc.poll() is not None:
            raise self._died()
        now = time.monotonic()
        if now - self._asked_at < self.POLL_S:
            return False
        self._asked_at = now
        self.present = self._ready()
        return self.present

    def _died(self):
        self.log.flush()
        tail = Path(self.log.name).read_text(errors="replace")[-2000:]
        return RunError(f"the host agent exited with status {self.proc.returncode}:\n{tail}")

    def check(self):
        if self.present and self.proc.poll() is not None:
            if self.leaving:  # SIGTERMed: gone in order
                self.present = False
                return
            raise self._died()

    def operator(self, command: str, reason: str) -> bool:
        """The line operator's command through the control interface: CLEAR_ALARM (POST /line/clear)
        or STOP (/line/stop). A refusal (the line must stay stopped, the service not up) is kept in
        `refusals` and the log; the simulator's operator tries again later."""
        name = {"CLEAR_ALARM": "line.clear", "STOP": "line.stop", "START": "line.start"}[command]
        try:
            self.client.command(name, self.USER, reason)
            return True
        except self._control_error as exc:
            self.refusals.append(f"{name}: {exc}")
            return False

    def kill(self):
        """kill -9: no goodbye, no flush; whatever the ledger committed is what survives."""
        self.present = False
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self):
        """SIGTERM: the service stops the line and lets the units in flight reach their outcome."""
        if self.proc is not None and self.proc.poll() is None:
            self.leaving = True
            self.proc.send_signal(signal.SIGTERM)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, device=None, timeout: float = 15.0):
        """SIGTERM and wait for the service to leave, stepping the device meanwhile (it must answer
        the service's line stop and acknowledgements), then SIGKILL if it has not."""
        if not self.running:
            self.present = False
            return
        self.terminate()
        end = time.monotonic() + timeout
        while self.running and time.monotonic() < end:
            if device is not None:
                device.idle()
            time.sleep(0.002)
        if self.running:
            self.proc.kill()
        self.proc.wait()
        self.present = False

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _free_port() -> int:
    """A loopback port nothing listens on now (the service binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
