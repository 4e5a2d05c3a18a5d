"""`serialine device flash` for real: mpremote's transport into the MicroPython unix port behind
the sim board's pty, SHA-256 checked on the device, HELLO after the reset."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import serial

from serialine.host.link import HostLink
from serialine.protocol import schema
from serialine.tools import device
from serialine.tools import flash as F


def hello(link_port: str) -> dict:
    link = HostLink(link_port)
    try:
        return link.connect(timeout=10)
    finally:
        link.close()


def test_flash_verifies_on_the_device_boots_and_hello_matches(sim_board, capsys):
    rc = device.main(["flash", "--board", "sim", "--port", sim_board.port, "--device-id", "line-a"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    manifest = json.loads((sim_board.dir / F.MANIFEST).read_text())
    for name, sha in manifest["files"].items():
        if name != F.MANIFEST:
            assert hashlib.sha256((sim_board.dir / name).read_bytes()).hexdigest() == sha, name
        assert f"{name}" in out and "sha256 ok on the device" in out
    assert manifest["fingerprint"] == f"0x{schema.FINGERPRINT:08x}"
    assert "HELLO on" in out and "device_id line-a" in out
    assert not (sim_board.dir / F.STAGE).exists()
    h = hello(sim_board.link)  # the booted firmware, asked again
    assert (h["device_id"], h["fw_version"], h["board"]) == ("line-a", F.fw_version(), "sim")
    assert h["fingerprint"] == schema.FINGERPRINT
    # flashing again interrupts the running firmware (Ctrl-C to its REPL) and reboots it
    assert device.main(["flash", "--board", "sim", "--port", sim_board.port, "--device-id", "line-b"]) == 0
    assert hello(sim_board.link)["device_id"] == "line-b"
    assert "boot 3" in sim_board.stop()


def test_a_corrupted_file_is_named_and_the_old_firmware_still_boots(sim_board):
    F.flash(sim_board.port, "sim", F.Settings("old-fw"))
    old_main = (sim_board.dir / "main.py").read_bytes()
    old_boot = hello(sim_board.link)["boot_id"]

    def corrupt():  # a flash write gone wrong, after the copy, before the verification
        p = sim_board.dir / F.STAGE / "core.mpy"
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x40
        p.write_bytes(bytes(data))

    with pytest.raises(F.FlashError) as e:
        F.flash(sim_board.port, "sim", F.Settings("new-fw"), on_staged=corrupt)
    msg = str(e.value)
    assert msg.startswith("hash mismatch: core.mpy") and "\n" not in msg
    assert "old firmware was restarted" in msg
    assert (sim_board.dir / "main.py").read_bytes() == old_main
    assert not (sim_board.dir / F.STAGE).exists()
    h = hello(sim_board.link)
    assert h["device_id"] == "old-fw" and h["boot_id"] != old_boot


def one_line_error(capsys, argv) -> str:
    assert device.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_no_such_port(tmp_path, capsys):
    err = one_line_error(capsys, ["flash", "--board", "sim", "--port", str(tmp_path / "nope")])
    assert f"no such port: {tmp_path / 'nope'}" in err


def test_port_busy_changes_nothing(sim_board, capsys):
    with serial.Serial(sim_board.port, exclusive=True):
        err = one_line_error(capsys, ["flash", "--board", "sim", "--port", sim_board.port])
    assert "port busy" in err
    assert not list(sim_board.dir.iterdir())


def test_nothing_answering_and_wrong_board(sim_board, capsys):
    master, slave = os.openpty()  # a tty with no MicroPython behind it
    try:
        err = one_line_error(capsys, ["flash", "--board", "sim", "--port", os.ttyname(slave)])
        assert "no MicroPython answering" in err
    finally:
        os.close(master)
        os.close(slave)
    F.flash(sim_board.port, "sim", F.Settings("right-1"))
    before = sorted(p.name for p in sim_board.dir.iterdir())
    err = one_line_error(capsys, ["flash", "--board", "rpi_pico", "--port", sim_board.port,
                                  "--link", sim_board.link])
    assert "wrong board: --board rpi_pico, but the board on" in err and "is sim" in err
    assert "old firmware was restarted" in err
    assert sorted(p.name for p in sim_board.dir.iterdir()) == before
    assert hello(sim_board.link)["device_id"] == "right-1"  # running again after the refusal


def test_settings_are_written_into_the_board_adapter():
    b = F.build("rpi_pico", F.Settings("pico-7", link="usb", pins={"PE": 7}))
    text = F.render_board("rpi_pico", F.Settings("pico-7", link="usb", pins={"PE": 7})).decode()
    assert 'DEVICE_ID = "pico-7"' in text and 'LINK = "usb"' in text and "PIN_PE = const(7)" in text
    assert b.manifest["pins"]["PE"] == 7 and b.manifest["mpy"].endswith("armv6m")
    assert [n for n, _ in b.files][-1] == "main.py"
    for bad, what in ((F.Settings("x", pins={"NOPE": 1}), "has no pin NOPE"),
                      (F.Settings("x", pins={"PE": 10}), "both GPIO 10"),
                      (F.Settings("x" * 17), "device id")):
        with pytest.raises(F.FlashError, match=what):
            F.build("rpi_pico", bad)


def test_flash_takes_board_and_device_id_from_the_line_file(sim_board, tmp_path, capsys):
    from serialine.host.resources import firmware_dir

    example = firmware_dir().parent / "examples" / "line-sim.toml"
    if not example.exists():
        pytest.skip("examples/ not in this install")
    line = tmp_path / "line.toml"
    line.write_text(example.read_text().replace('device_id = "sim-line-1"', 'device_id = "cfg-dev-1"'))
    rc = device.main(["flash", "--config", str(line), "--port", sim_board.port])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "device_id cfg-dev-1" in out
    assert json.loads((sim_board.dir / F.MANIFEST).read_text())["device_id"] == "cfg-dev-1"
    err = one_line_error(capsys, ["flash", "--config", str(line), "--board", "esp32", "--port", sim_board.port])
    assert "[device] board = 'sim', but --board esp32" in err
    err = one_line_error(capsys, ["flash", "--config", str(tmp_path / "none.toml"), "--port", sim_board.port])
    assert "no such file" in err


def test_the_mpremote_command_works_on_the_sim_board(sim_board):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    F.flash(sim_board.port, "sim", F.Settings("mp-1"))
    mpremote = shutil.which("mpremote") or str(Path(sys.executable).parent / "mpremote")
    for args in (["fs", "ls"], ["resume", "fs", "ls"]):  # a soft reset (Ctrl-D) and none
        proc = subprocess.run([mpremote, "connect", sim_board.port, *args], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0 and "main.py" in proc.stdout and "wire.mpy" in proc.stdout, proc
    F.flash(sim_board.port, "sim", F.Settings("mp-2"))  # and flash again after it
    assert hello(sim_board.link)["device_id"] == "mp-2"
