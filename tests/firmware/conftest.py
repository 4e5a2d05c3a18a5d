"""Firmware tests: MicroPython scripts with tests/firmware (the line model) on the path too."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def mp(run_mp):
    """Run MicroPython code with the line model importable; returns the printed lines."""

    def run(code: str, timeout: float = 300) -> list[str]:
        return run_mp(code, timeout=timeout, extra_path=(str(HERE),)).strip().splitlines()

    return run
