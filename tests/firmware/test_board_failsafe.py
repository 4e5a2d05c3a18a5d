"""Fail-safe wiring (docs/wiring.md "Fail-safe wiring"): every board file (boards/* except sim) is
run in CPython on an emulated MCU (machine/rp2/esp32 that record pins: pull, mode, level; a broken
wire reads the pin's pull level, an output without power reads 0) and held to the rules:
- no pin the MCU reserves or that changes its boot (ESP32 strapping pins 0 2 5 12 15, flash pins,
  pins that toggle at reset; the Pico's board-internal pins);
- every sensor input (photo-eye, confirm, bin full, encoder) has the internal pull-up (an NPN /
  open-collector sensor needs it) on a pin that has one, and a broken wire reads inactive;
- the gate diverts to reject at level 0 (de-energised), the stop is level 0 (high = run): no power,
  a reset or a broken wire rejects and stops; after boot the stop is on until the core starts the line.
The core's side (boards/sim under the MicroPython unix port): the run permissive is raised when the
line starts and dropped by every line stop."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOARDS = sorted(p.parent.name for p in (ROOT / "boards").glob("*/board.py") if p.parent.name != "sim")

# Per MCU: pins no line signal may use, and why; pins without an internal pull-up.
MCU = {"rpi_pico": "rp2040", "esp32": "esp32"}  # a new board names its MCU here
FORBIDDEN = {
    "esp32": {**dict.fromkeys((0, 2, 5, 12, 15), "a strapping pin (boot mode, flash voltage, boot log)"),
              **dict.fromkeys(range(6, 12), "the SPI flash"),
              **dict.fromkeys((1, 3), "UART0: the boot log toggles it"),
              14: "toggles at reset (PWM at boot)"},
    # the RP2040 has no strapping GPIO (BOOTSEL is the flash's chip select); a Pico wires these inside
    "rp2040": {23: "the Pico's SMPS mode", 24: "the Pico's VBUS sense", 25: "the Pico's LED",
               29: "the Pico's VSYS sense"},
}
NO_PULL = {"esp32": set(range(34, 40)), "rp2040": set()}
SENSORS = {"PE": "pe", "CONFIRM": "confirm", "BIN_FULL": "bin_full"}  # PIN_ name -> sample() attribute


class Pin:
    IN, OUT, PULL_UP, PULL_DOWN = "in", "out", "up", "down"
    made: list[Pin] = []

    def __init__(self, n, mode=None, pull=None, *, value=None):
        self.n, self.mode, self.pull, self.level = n, mode, pull, value
        self.wire = None  # what the sensor drives (None: a broken wire, the pull decides)
        Pin.made.append(self)

    def value(self, v=None):
        if v is None:
            if self.wire is not None:
                return self.wire
            return {Pin.PULL_UP: 1, Pin.PULL_DOWN: 0}.get(self.pull)  # None: floating
        self.level = v


class _Any:
    def __init__(self, *a, **kw):
        self.args, self.kw = a, kw

    def __getattr__(self, name):
        return lambda *a, **kw: 0


def _emulated_mcu() -> dict[str, types.ModuleType]:
    machine = types.ModuleType("machine")
    machine.Pin = Pin
    machine.UART = machine.WDT = machine.Encoder = _Any
    machine.reset_cause = lambda: 0
    machine.WDT_RESET, machine.PWRON_RESET = 3, 1
    machine.reset = lambda: None
    rp2 = types.ModuleType("rp2")
    rp2.asm_pio = lambda **kw: (lambda f: f)
    rp2.StateMachine = _Any
    rp2.PIO = types.SimpleNamespace(OUT_LOW=0)
    esp32 = types.ModuleType("esp32")
    esp32.RMT = _Any
    micropython = types.ModuleType("micropython")
    micropython.const = lambda x: x
    return {"machine": machine, "rp2": rp2, "esp32": esp32, "micropython": micropython}


@pytest.fixture
def board(request, monkeypatch):
    """boards/<name>/board.py loaded on the emulated MCU, its adapter made: (module, adapter, pins by number)."""
    for name, mod in _emulated_mcu().items():
        monkeypatch.setitem(sys.modules, name, mod)
    Pin.made = []
    path = ROOT / "boards" / request.param / "board.py"
    mod = types.ModuleType(f"board_{request.param}")
    mod.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), mod.__dict__)
    hw, _port, _wdt, _cause = mod.make()
    return mod, hw, {p.n: p for p in Pin.made}


def _pin_map(mod) -> dict[str, int]:
    return {k[4:]: v for k, v in vars(mod).items() if k.startswith("PIN_")}


def test_every_board_names_its_mcu():
    assert BOARDS and set(BOARDS) <= set(MCU), f"add the MCU of {sorted(set(BOARDS) - set(MCU))} to MCU and FORBIDDEN"


@pytest.mark.parametrize("board", BOARDS, indirect=True)
def test_no_signal_on_a_pin_that_changes_the_boot(board):
    mod, _hw, made = board
    bad = FORBIDDEN[MCU[mod.NAME]]
    for name, n in _pin_map(mod).items():
        assert n not in bad, f"boards/{mod.NAME}: PIN_{name} = {n} is {bad[n]}"
    assert not set(made) & set(bad), f"boards/{mod.NAME}: a pin is used that is {bad[min(set(made) & set(bad))]}"


@pytest.mark.parametrize("board", BOARDS, indirect=True)
def test_sensor_inputs_have_pull_ups_and_a_broken_wire_reads_inactive(board):
    mod, hw, made = board
    pins = _pin_map(mod)
    for name in (*SENSORS, "ENC_A", "ENC_B"):
        p = made.get(pins[name])
        if p is None and name == "ENC_B":
            continue  # phase B not wired (the Pico counts phase A)
        assert p is not None and p.mode == Pin.IN, f"boards/{mod.NAME}: PIN_{name} is not an input"
        assert p.pull == Pin.PULL_UP, f"boards/{mod.NAME}: PIN_{name} has no pull-up (an NPN sensor's wire floats)"
        assert p.n not in NO_PULL[MCU[mod.NAME]], f"boards/{mod.NAME}: PIN_{name} = {p.n} has no internal pull-up"
    hw.sample()  # every wire broken
    assert [getattr(hw, a) for a in SENSORS.values()] == [0, 0, 0], "a broken wire must read inactive"
    for name, attr in SENSORS.items():  # each sensor on: its NPN output pulls the pin to its active level
        made[pins[name]].wire = getattr(mod, f"{name}_ACTIVE")
        hw.sample()
        assert getattr(hw, attr) == 1, f"boards/{mod.NAME}: {attr} not read active"
        made[pins[name]].wire = None


@pytest.mark.parametrize("board", BOARDS, indirect=True)
def test_no_power_rejects_and_stops(board):
    """Level 0 is what an output has without power, while the board resets (a pull-down on the driver
    stage) or with a broken wire: it must be the gate's reject path and the line's stop."""
    mod, hw, made = board
    pins = _pin_map(mod)
    gate, stop = made[pins["GATE"]], made[pins["STOP"]]
    assert gate.mode == stop.mode == Pin.OUT
    assert stop.level == 0, "after boot the line stays stopped until the core starts it"
    assert gate.level == 1, "at rest (the core's start) the gate is energised: the pass path"
    for on, want in ((True, 0), (False, 1)):
        hw.out_gate(on, 0, 0)
        hw.out_stop(on, 0, 0)
        assert (gate.level, stop.level) == (want, want), f"boards/{mod.NAME}: divert/stop={on} drives {gate.level}/{stop.level}"
    assert mod.GATE_ACTIVE == mod.STOP_ACTIVE == mod.ACTIVE_LOW


def test_the_core_raises_the_run_permissive_at_start_and_drops_it_at_every_stop(mp):
    """boards/sim records the core's outputs: nothing before the start (the board's stop stays on),
    the stop off when the line starts, on at a line stop, off again when the host clears it."""
    code = """
import simline as mpline
L = mpline.VirtualLine(mpline.config(), npacks=2)
def edges():
    return [L.b.kind[i % L.b.cap] for i in range(L.b.n)]
before = [k for k in edges() if k in (5, 6)]
L.core.start()
started = [k for k in edges() if k in (5, 6)]
L.core.stop()
stopped = [k for k in edges() if k in (5, 6)]
L.core.clear_alarm()
print(repr((before, started, stopped, [k for k in edges() if k in (5, 6)])))
"""
    before, started, stopped, cleared = ast.literal_eval(mp(code)[-1])
    assert (before, started, stopped, cleared) == ([], [6], [6, 5], [6, 5, 6])  # 5 stop_on, 6 stop_off
