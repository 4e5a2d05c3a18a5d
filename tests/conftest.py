"""Shared fixtures. Each area keeps its own tests in its folder (protocol/, firmware/, host/,
epcis/, sim/) with its own conftest.py for what only it needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from serialine.host.sim import unixport

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def run_mp():
    """Run a MicroPython script with firmware/ and boards/sim/ on its path; returns stdout.
    A traceback (MicroPython prints it to stdout) fails the test with the output shown."""
    unixport.binary()  # missing: one clear error before any test runs it

    def run(code: str, *, timeout: float = 120, extra_path: tuple[str, ...] = ()) -> str:
        proc = unixport.run(["-X", "heapsize=4m", "-c", code], cwd=ROOT, extra=extra_path,
                            timeout=timeout)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0 or "Traceback" in out:
            raise AssertionError(f"micropython failed (exit {proc.returncode}):\n{out}")
        return proc.stdout

    return run
