"""examples/serialine-agent.service: what the service needs from systemd, checked against the code it
starts (and by systemd-analyze where it is installed)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "examples" / "serialine-agent.service"
SERIALINE = str(Path(sys.executable).with_name("serialine"))


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def test_unit_stops_the_service_gently_and_long_enough():
    from serialine.host import service
    s = settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Service.User"] == "serialine" and one["Service.Type"] == "simple"
    assert one["Service.KillSignal"] == "SIGTERM"
    assert one["Service.KillMode"] == "mixed"  # SIGTERM to the agent only, once
    assert int(one["Service.TimeoutStopSec"]) >= 3 * service.DRAIN_S
    assert one["Service.Restart"] == "on-failure" and one["Service.RestartPreventExitStatus"] == "2"
    assert one["Unit.StartLimitIntervalSec"] == "0"  # a line PC keeps trying until the port is back
    assert "ExecStop" not in one  # a second SIGTERM would be the crash path
    assert one["Service.EnvironmentFile"].startswith("-/etc/serialine/")
    assert one["Service.ProtectSystem"] == "strict" and one["Service.StateDirectory"] == "serialine"


def test_its_command_line_is_the_agents():
    argv = shlex.split(settings(UNIT.read_text())["Service.ExecStart"][-1])
    assert argv[0].endswith("/bin/serialine") and argv[1:3] == ["agent", "run"]
    args = argv[3:]
    config = args[args.index("--config") + 1]
    assert config == "/etc/serialine/line.toml"
    r = subprocess.run([SERIALINE, *argv[1:-1], "/nonexistent/line.toml"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path):
    unit = tmp_path / "serialine-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/serialine/.venv/bin/serialine", SERIALINE))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "serialine-agent.service" in line]
    assert r.returncode == 0 and problems == [], r.stdout + r.stderr
