"""Fail-safe wiring (docs/wiring.md "Fail-safe wiring"): every board file (boards/* except sim) is
run under the MicroPython unix port on an emulated MCU (tests/firmware/mcu_emu.py: machine/rp2/esp32
that record each pin's mode, pull and level; a broken wire reads the pin's pull level) and held to
the rules:
- no pin the MCU reserves or that changes its boot (ESP32 strapping pins 0 2 5 12 15, flash pins,
  pins that toggle at reset; the Pico's board-internal pins);
- every sensor input (photo-eye, confirm, bin full, encoder) has the internal pull-up (an NPN /
  open-collector sensor needs it) on a pin that has one, and a broken wire reads inactive;
- the gate diverts to reject at level 0 (de-energised), the stop is level 0 (high = run): no power,
  a reset or a broken wire rejects and stops; after boot the stop is on until the core starts the line.
The core's side (boards/sim): the run permissive is raised when the line starts and dropped by every
line stop."""

from __future__ import annotations

import ast
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
SENSORS = ("PE", "CONFIRM", "BIN_FULL")


@pytest.fixture(scope="module")
def probed(mp):
    """What each board file does on the emulated MCU (mcu_emu.probe), by board."""
    return {b: ast.literal_eval(mp(f"import mcu_emu\nmcu_emu.probe({b!r})")[-1]) for b in BOARDS}


def test_every_board_names_its_mcu():
    assert BOARDS and set(BOARDS) <= set(MCU), f"add the MCU of {sorted(set(BOARDS) - set(MCU))} to MCU and FORBIDDEN"


@pytest.mark.parametrize("board", BOARDS)
def test_no_signal_on_a_pin_that_changes_the_boot(probed, board):
    got = probed[board]
    bad = FORBIDDEN[MCU[board]]
    for name, n in got["pins"].items():
        assert n not in bad, f"boards/{board}: PIN_{name} = {n} is {bad[n]}"
    used = set(got["made"]) & set(bad)
    assert not used, f"boards/{board}: pin {min(used, default=0)} is used, it is {bad[min(used, default=0)]}"


@pytest.mark.parametrize("board", BOARDS)
def test_sensor_inputs_have_pull_ups_and_a_broken_wire_reads_inactive(probed, board):
    got = probed[board]
    for name in (*SENSORS, "ENC_A", "ENC_B"):
        n = got["pins"][name]
        if n not in got["made"] and name == "ENC_B":
            continue  # phase B not wired (the Pico counts phase A)
        mode, pull, _ = got["made"].get(n, (None, None, None))
        assert mode == "in", f"boards/{board}: PIN_{name} is not an input"
        assert pull == "up", f"boards/{board}: PIN_{name} has no pull-up (an NPN sensor's wire would float)"
        assert n not in NO_PULL[MCU[board]], f"boards/{board}: PIN_{name} = {n} has no internal pull-up"
    assert got["broken"] == (0, 0, 0), f"boards/{board}: a broken wire must read inactive"
    assert got["sensor_on"] == dict.fromkeys(SENSORS, 1), f"boards/{board}: a sensor on is not read active"


@pytest.mark.parametrize("board", BOARDS)
def test_no_power_rejects_and_stops(probed, board):
    """Level 0 is what an output has without power, while the board resets (a pull-down on the driver
    stage) or with a broken wire: it must be the gate's reject path and the line's stop."""
    got = probed[board]
    gate, stop = (got["made"][got["pins"][k]] for k in ("GATE", "STOP"))
    assert gate[0] == stop[0] == "out"
    assert stop[2] == 0, f"boards/{board}: after boot the line stays stopped until the core starts it"
    assert gate[2] == 1, f"boards/{board}: at rest (as the core starts) the gate is energised: the pass path"
    assert got["levels"] == [(True, 0, 0), (False, 1, 1)], f"boards/{board}: divert/stop must drive 0, pass/run 1"
    assert got["active"]["GATE"] == got["active"]["STOP"] == got["ACTIVE_LOW"]


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
