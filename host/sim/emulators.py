"""The simulator's coder and reader emulators by the agent's driver name (host/devices/registry.py):
a scenario's `[coder] driver` / `[camera] driver` picks the emulator the line model drives and the
driver the agent service uses against it. Each emulator is a drop-in for SimCoder / SimCamera (the
same constructor arguments, the same methods the line model calls)."""

from __future__ import annotations

import importlib

# kind → driver name → "module:Class" under serialine.host.sim (imported only when used)
EMULATORS = {
    "coder": {"serialine": "coder:SimCoder", "videojet": "videojet_emu:VideojetEmu"},
    "reader": {"serialine": "camera:SimCamera", "dataman": "dataman_emu:DataManEmu",
               "keyence-sr": "keyence_emu:KeyenceEmu"},
}
NAMES = {kind: tuple(names) for kind, names in EMULATORS.items()}


def emulator(kind: str, driver: str):
    """The emulator class for the driver `driver` of `kind` ("coder" or "reader")."""
    module, _, name = EMULATORS[kind][driver].partition(":")
    return getattr(importlib.import_module(f"serialine.host.sim.{module}"), name)
