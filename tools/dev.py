#!/usr/bin/env python3
"""Bootstrap for a fresh machine: one command installs everything and runs a job.

    python3.11 tools/dev.py sim [ARGS...]    # a simulated line, end to end (the main job)
    python3.11 tools/dev.py test [ARGS...]   # the whole test suite (what CI runs)

It makes `.venv` beside the repository, installs the project with its test extras (only when
pyproject.toml changed since the last install), installs the Debian packages the tests need
(mosquitto, socat, chromium, poppler-utils) when it runs as root and they are missing, then runs the job inside the venv.
Only the standard library is used here: this runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
# Debian's chromium is the browser Playwright drives in tests/console/ (Playwright's own download is not
# reachable); poppler-utils' pdftotext reads the console's PDF batch record back
APT_PACKAGES = {"mosquitto": "/usr/sbin/mosquitto", "socat": "/usr/bin/socat", "chromium": "/usr/bin/chromium",
                "poppler-utils": "/usr/bin/pdftotext"}


def say(msg: str) -> None:
    print(f"[dev] {msg}", flush=True)


def run(cmd: list[str], **kw) -> None:
    subprocess.run(cmd, check=True, **kw)


def ensure_venv() -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"[dev] Python 3.11 is required, this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        say(f"creating {VENV}")
        run([sys.executable, "-m", "venv", str(VENV)])
    stamp = VENV / ".serialine-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return
    say("installing serialine and its dependencies into .venv (first run takes a minute)")
    quiet = ["-q"] if os.environ.get("CI") is None else []
    run([str(BIN / "python"), "-m", "pip", "install", *quiet, "--upgrade", "pip"])
    run([str(BIN / "python"), "-m", "pip", "install", *quiet, "-e", f"{ROOT}[test]"])
    stamp.write_text(want)


def ensure_system_packages() -> None:
    missing = [p for p, path in APT_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"[dev] the tests need Debian packages {' '.join(missing)}: "
                 f"run 'sudo apt-get install {' '.join(missing)}' first")
    say(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
        stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("sim", "test", "install"):
        print(__doc__)
        return 2
    job, rest = argv[0], argv[1:]
    ensure_venv()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if job == "install":
        return 0
    if job == "sim":
        return subprocess.call([str(BIN / "serialine"), "sim", *rest], cwd=ROOT, env=env)
    ensure_system_packages()
    pytest = [str(BIN / "python"), "-m", "pytest"]
    if rest:
        code = subprocess.call([*pytest, *rest], cwd=ROOT, env=env)
    else:
        # the suite mostly waits (subprocesses, sockets): one worker more than the cores, a file per
        # worker (a file's tests share fixtures); then the wall-clock runs alone, on a quiet machine
        workers = str((os.cpu_count() or 1) + 1)
        code = subprocess.call([*pytest, "-n", workers, "--dist", "loadfile", "-m", "not alone"], cwd=ROOT, env=env)
        if code in (0, 5):
            rt = subprocess.call([*pytest, "-m", "alone"], cwd=ROOT, env=env)
            code = rt if code == 0 else (1 if rt not in (0, 5) else 5)
    if code == 5:
        say("pytest collected no tests: that is a failure")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
