"""`serialine device`: put the firmware on a board with mpremote.

    serialine device flash --port /dev/ttyACM0 --board rpi_pico [--dry-run]
    serialine device flash --port /tmp/mpy-pty --board sim --resume   (unix port behind socat)
    serialine device files --board esp32

The unix port has no soft reset that keeps the process alive, so for it use --resume (mpremote
`resume`) on a pty made by `socat PTY,link=/tmp/mpy-pty,rawer EXEC:micropython,pty,rawer`."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from serialine.host.resources import board_dir, firmware_dir

FIRMWARE = ("wire.py", "link.py", "core.py", "config.py", "device.py", "main.py")
BOARDS = ("rpi_pico", "esp32", "sim")


def files(board: str) -> list[tuple[Path, str]]:
    """(source, name on the board) in copy order; main.py last so a half copy never boots."""
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}: one of {', '.join(BOARDS)}")
    fw = firmware_dir()
    out = [(fw / n, n) for n in FIRMWARE if n != "main.py"]
    out.append((board_dir(board) / "board.py", "board.py"))
    if board == "sim":
        out.append((board_dir("sim") / "simmain.py", "simmain.py"))
    else:
        out.append((fw / "main.py", "main.py"))
    return out


def flash_command(port: str, board: str, resume: bool) -> list[str]:
    cmd = [shutil.which("mpremote") or "mpremote", "connect", port]
    if resume:
        cmd.append("resume")
    for src, name in files(board):
        cmd += ["fs", "cp", str(src), ":" + name, "+"]
    return cmd[:-1]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine device")
    sub = ap.add_subparsers(dest="cmd", required=True)
    fl = sub.add_parser("flash", help="copy the firmware and the board adapter to a board")
    fl.add_argument("--port", required=True)
    fl.add_argument("--board", required=True, choices=BOARDS)
    fl.add_argument("--resume", action="store_true", help="no soft reset (unix port over socat)")
    fl.add_argument("--dry-run", action="store_true", help="print the mpremote command only")
    fs = sub.add_parser("files", help="list what flash copies")
    fs.add_argument("--board", required=True, choices=BOARDS)
    args = ap.parse_args(argv)
    if args.cmd == "files":
        for src, name in files(args.board):
            print(f"{src} -> :{name}")
        return 0
    missing = [str(s) for s, _ in files(args.board) if not s.exists()]
    if missing:
        print("serialine device: missing " + ", ".join(missing), file=sys.stderr)
        return 2
    cmd = flash_command(args.port, args.board, args.resume)
    print(" ".join(cmd))
    if args.dry_run:
        return 0
    beside = Path(sys.executable).parent / "mpremote"  # the venv's own, even when not on PATH
    if beside.exists():
        cmd[0] = str(beside)
    try:
        return subprocess.run(cmd).returncode
    except FileNotFoundError:
        print("serialine device: mpremote is not installed (pip install mpremote)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
