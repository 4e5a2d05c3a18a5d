"""Adapters from the orchestrator to the other parts of the project: the firmware in the MicroPython
unix port (host/simboard.py, boards/sim) and the host agent (host/agent.py) in its own process.
Everything the simulator needs from them goes through here, so a change of their API is one edit.

`device_config()` turns a scenario into the device's ConfigFields (line geometry in counts)."""

from __future__ import annotations

import importlib

from serialine.protocol.schema import DwellUnit


def _need(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        from .run import RunError

        raise RunError(f"{what} is not available in this build ({module}: {exc})") from None


def device_config(scenario, line, config_id: int = 1) -> dict:
    """The device configuration for the simulated line (ConfigFields, counts and µs)."""
    L, c = scenario.line, scenario.line.counts_per_mm
    full = line.profile.full_cps
    pitch_min = L.pitch_mm * (1 - L.pitch_spread) * c
    margin = round(max(8, 0.002 * full))  # decide 2 ms of travel before the gate fires
    budget_counts = line.gate_at - line.camera_at - margin - L.gate_lead_ms / 1000 * full * 1.25
    return dict(
        config_id=config_id,
        coder_at=line.coder_at,
        camera_at=line.camera_at,
        gate_at=line.gate_at,
        confirm_from=line.gate_at,
        confirm_to=round(line.gate_at + L.confirm_window_mm * c),
        counts_per_mm_milli=round(c * 1000),
        gate_lead_us=line.lead_us,
        dwell=round(L.gate_dwell_mm * c),
        dwell_unit=int(DwellUnit.COUNTS),
        debounce_us=200,
        min_pitch=round(pitch_min * 0.5),
        deadline_margin=margin,
        max_speed_cps=round(full * 1.25),
        min_host_budget_us=max(1, min(20_000, int(budget_counts / (full * 1.25) * 1e6 * 0.8))),
        reject_streak_limit=0,
        link_timeout_ms=1000,
        link_stop_ms=0,
        purge_counts=round(line.gate_at + L.gate_window_mm * c),
        virtual_speed_cps=0,
        stall_ms=0,
        policy=0,
    )


class Device:
    """The firmware, unchanged, in the MicroPython unix port with boards/sim, on the device pty."""

    def __init__(self, tty_path: str, line, scenario, *, realtime: bool):
        self.mod = _need("serialine.host.simboard", "the simulated board (host/simboard.py)")
        self.tty_path, self.line, self.scenario, self.realtime = tty_path, line, scenario, realtime
        self.config = device_config(scenario, line)
        self.board = None

    def start(self):
        self.board = self.mod.SimBoard(self.tty_path, realtime=self.realtime)
        self.board.start()

    def step(self, t_us: int, encoder: int, edges) -> list[tuple[str, int, int]]:
        for e in edges:
            self.board.set_input(e.name, e.level, e.t_us)
        return self.board.advance(t_us, encoder)

    def next_wakeup_us(self, now: int) -> int:
        nxt = getattr(self.board, "next_wakeup_us", None)
        return nxt() if nxt else now + 1_000_000

    def reboot(self):
        self.board.reboot()

    def close(self):
        if self.board is not None:
            self.board.close()


class HostAgent:
    """The host agent in its own process (so it can be killed with SIGKILL and restarted)."""

    def __init__(self, out, tty_path, coder_addr, camera_addr, scenario):
        self.mod = _need("serialine.host.agent", "the host agent (host/agent.py)")
        self.out, self.tty_path = out, tty_path
        self.coder_addr, self.camera_addr, self.scenario = coder_addr, camera_addr, scenario
        self.proc = None
        self.present = False

    def start(self):
        raise NotImplementedError("host agent process adapter: waiting for host/agent.py's API")

    def wait_ready(self, device):
        pass

    def check(self):
        pass

    def kill_and_restart(self):
        pass

    def finish(self, device):
        pass

    def ledger(self):
        pass

    def close(self):
        pass
