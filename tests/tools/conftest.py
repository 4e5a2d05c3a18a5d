"""A sim board (`serialine device sim-board`) started by the test, from another directory."""

from __future__ import annotations

import subprocess
import sys

import pytest


class SimBoardProc:
    def __init__(self, directory, cwd):
        self.dir = directory
        self.proc = subprocess.Popen([sys.executable, "-m", "serialine.host.cli", "device", "sim-board",
                                      "--dir", str(directory)], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        got = {}
        while len(got) < 2:
            line = self.proc.stdout.readline()
            assert line, self.proc.stderr.read()
            key, _, value = line.strip().partition(" ")
            got[key] = value
        self.port, self.link = got["port"], got["link"]

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.fixture
def sim_board(tmp_path):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    b = SimBoardProc(tmp_path / "board", elsewhere)
    yield b
    b.stop()
    assert not list(elsewhere.iterdir()), "files landed in the working directory"
