"""Board code type-checks against each port's MicroPython stubs (mypy), one stubs dir per port
since both provide `machine`. The stubs are installed once into ~/.cache/serialine/stubs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SERIALINE_STUBS", Path.home() / ".cache" / "serialine" / "stubs"))
PORTS = {"rpi_pico": ("rp2", "micropython-rp2-rpi-pico-stubs==1.29.0.post1"),
         "esp32": ("esp32", "micropython-esp32-stubs==1.29.0.post1")}
OURS = ("board.py", "main.py", "device.py", "core.py", "config.py", "probe.py")


def stubs(port: str) -> Path:
    d = CACHE / port
    if not (d / "machine.pyi").exists():
        req = next(r for p, r in PORTS.values() if p == port)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(d), req],
                       check=True, capture_output=True)
    return d


def mypy_errors(board: str, tmp_path: Path, probe: str = "") -> list[str]:
    port = PORTS[board][0]
    work = tmp_path / board
    work.mkdir()
    shutil.copy(ROOT / "boards" / board / "board.py", work)
    for name in ("main.py", "device.py", "core.py", "config.py", "link.py", "wire.py"):
        shutil.copy(ROOT / "firmware" / name, work)
    (work / "probe.py").write_text(probe)
    env = dict(os.environ, MYPYPATH=str(stubs(port)))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-site-packages",
                           "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache"),
                           *OURS], cwd=work, env=env, capture_output=True, text=True)
    # the stubs have errors of their own; only errors in our files count
    return [ln for ln in proc.stdout.splitlines() if ln.split(":", 1)[0] in OURS]


@pytest.mark.parametrize("board", list(PORTS))
def test_board_and_firmware_type_check_against_the_port_stubs(board, tmp_path):
    assert mypy_errors(board, tmp_path) == []


def test_type_check_does_catch_a_wrong_call(tmp_path):
    errs = mypy_errors("rpi_pico", tmp_path, "import machine\nmachine.Pin(1).no_such_method()\n"
                                            "import rp2\nrp2.StateMachine(0).put('x', 'y')\n")
    assert len(errs) == 3 and all(e.startswith("probe.py") for e in errs), errs
