"""Where the project's non-Python parts are: the firmware, the boards and the scenarios.

They are package resources (serialine.firmware, serialine.boards, serialine.scenarios), so the
same code finds them in the checkout (editable install) and in a wheel installed anywhere; never
a path relative to the repository."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _dir(package: str) -> Path:
    path = Path(str(files(package)))
    if not path.is_dir():  # pragma: no cover - a zipped install: the micropython command needs files
        raise RuntimeError(f"{package} is not a folder on disk ({path}): install serialine unzipped")
    return path


def firmware_dir() -> Path:
    """firmware/: the MicroPython modules (wire.py, link.py, core.py, config.py, device.py, main.py)."""
    return _dir("serialine.firmware")


def board_dir(board: str) -> Path:
    """boards/BOARD/: board.py (and for sim, the unix-port driver simmain.py)."""
    path = _dir("serialine.boards") / board
    if not (path / "board.py").exists():
        raise ValueError(f"unknown board {board!r}")
    return path


def scenarios_dir() -> Path:
    """scenarios/: the shipped *.toml scenarios of `serialine sim`."""
    return _dir("serialine.scenarios")


def opcua_nodesets_dir() -> Path:
    """host/opcua/nodesets/: the OPC Foundation's NodeSets (OPEN-SCS, PackML) the OPC UA server imports."""
    return _dir("serialine.host.opcua") / "nodesets"  # a data folder: no __init__.py of its own
