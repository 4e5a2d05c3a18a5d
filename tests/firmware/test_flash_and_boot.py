"""`serialine device flash` refuses an unknown board; the sim board's watchdog; a new boot id every
boot. Flashing for real (mpremote into the unix port behind a pty): tests/tools/test_flash.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

from serialine.host.sim import unixport
from serialine.tools import device

ROOT = Path(__file__).resolve().parents[2]
MP = unixport.binary()


def test_flash_refuses_an_unknown_board(capsys):
    try:
        device.main(["flash", "--port", "/dev/null", "--board", "nope"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("accepted an unknown board")
    assert "invalid choice" in capsys.readouterr().err


def test_sim_watchdog_ends_a_hung_process(run_mp):
    code = """
import board, time, sys
w = board.SimBoard().wdt(50)
for i in range(3):
    time.sleep_ms(20); w.feed(); w.check()
print("fed ok")
time.sleep_ms(80)
w.check()
print("still alive")
"""
    proc = unixport.run(["-c", code], cwd=None, timeout=30)
    assert proc.returncode == 3
    assert "fed ok" in proc.stdout and "WATCHDOG RESET" in proc.stdout
    assert "still alive" not in proc.stdout


def test_each_boot_has_a_new_boot_id_below_2_30(run_mp):
    code = """
import board, device
class Port:
    def readinto(self, b): return 0
    def write(self, b, n): pass
print(device.Device(board.SimBoard(), Port(), cfg_path='/nonexistent/x').boot_id)
"""
    ids = {int(run_mp(code).split()[-1]) for _ in range(4)}
    assert len(ids) == 4 and all(0 <= i < 2**30 for i in ids)
