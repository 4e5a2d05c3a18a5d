"""`serialine device`: put the firmware on a board, and the unix port as a board.

    serialine device flash --port /dev/ttyACM0 --board rpi_pico [--link /dev/ttyUSB0]
                           [--device-id ID] [--pin NAME=GPIO ...] [--usb-link] [--config line.toml]
    serialine device flash --board sim --port PORT      (PORT from `serialine device sim-board`)
    serialine device flash --board esp32 --dry-run      (compile, print the manifest; no board)
    serialine device sim-board --dir DIR
    serialine device files --board esp32

What flash does and proves is in docs/flash.md (tools/flash.py)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from . import flash as F

BOARDS = F.BOARDS


def files(board: str) -> list[tuple[str, int]]:
    """(name on the board, size) in install order; main.py last so a half copy never boots."""
    b = F.build(board, F.default_settings(board))
    return [(n, len(d)) for n, d in b.files]


def _from_config(args) -> None:
    """--config line.toml: the board, its device id and (not on the sim board) the link port the
    agent will use, where HELLO is then checked. Flags given as well win."""
    from serialine.host import linefile

    try:
        dev = linefile.load(args.config).device
    except linefile.LineFileError as exc:
        raise F.FlashError(str(exc)) from None
    if args.board and dev.board != args.board:
        raise F.FlashError(f"{args.config}: [device] board = {dev.board!r}, but --board {args.board}")
    args.board = dev.board
    args.device_id = args.device_id or dev.device_id or None
    # a pin map and link kind, once the line file's [device] carries them; --pin entries win
    args.pin = [f"{k}={v}" for k, v in dict(getattr(dev, "pins", None) or {}).items()] + args.pin
    args.usb_link = args.usb_link or getattr(dev, "link", None) == "usb"
    if dev.board != "sim" and not args.link:
        args.link = dev.port
    if not args.port and dev.board != "sim" and args.usb_link:
        args.port = dev.port


def _settings(args) -> F.Settings:
    if args.config:
        _from_config(args)
    if not args.board:
        raise F.FlashError("--board is required (or --config line.toml naming it)")
    s = F.default_settings(args.board)
    if args.device_id:
        s = replace(s, device_id=args.device_id)
    if args.usb_link or (args.board != "sim" and args.link and args.link == args.port):
        s = replace(s, link="usb")  # the link on the REPL's own port
    pins = dict(s.pins)
    for p in args.pin:
        name, sep, value = p.partition("=")
        if not sep or not value.strip().isdigit():
            raise F.FlashError(f"--pin {p!r}: NAME=GPIO, e.g. --pin PE=4")
        pins[name.strip().upper().removeprefix("PIN_")] = int(value)
    return replace(s, pins=pins)


def main(argv: list[str]) -> int:
    if argv[:1] == ["config"]:  # the running device, through its agent (host/tune.py)
        from serialine.host import tune
        return tune.config_main(argv[1:])
    ap = argparse.ArgumentParser(prog="serialine device")
    sub = ap.add_subparsers(dest="cmd", required=True)
    fl = sub.add_parser("flash", help="compile, copy, verify on the device, swap, reset, check HELLO")
    fl.add_argument("--port", help="the board's REPL port (USB serial; the sim board's port)")
    fl.add_argument("--board", choices=BOARDS, help="required unless --config names it")
    fl.add_argument("--link", help="the firmware's link port when it is not --port (a UART adapter); "
                                   "the sim board names its own")
    fl.add_argument("--device-id", help="the id the device reports in HELLO")
    fl.add_argument("--pin", action="append", default=[], metavar="NAME=GPIO",
                    help="pin map entry of the board adapter, e.g. PE=4 (repeatable)")
    fl.add_argument("--usb-link", action="store_true", help="the link on the REPL's USB port")
    fl.add_argument("--config", help="line file: [device] board, device_id and port (the link) from it")
    fl.add_argument("--dry-run", action="store_true", help="compile and print the manifest only")
    fl.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # always so now
    fl.add_argument("--hello-timeout", type=float, default=15.0, help=argparse.SUPPRESS)
    sb = sub.add_parser("sim-board", help="the MicroPython unix port behind a pty, as a board to flash")
    sb.add_argument("--dir", required=True)
    sb.add_argument("--quiet", action="store_true")
    sub.add_parser("config", help="get|set the running device's configuration through the agent, in mm and ms",
                   add_help=False)
    fs = sub.add_parser("files", help="list what flash installs")
    fs.add_argument("--board", required=True, choices=BOARDS)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "sim-board":
            from . import flash_sim

            return flash_sim.main(argv[1:])
        if args.cmd == "files":
            for name, size in files(args.board):
                print(f":{name}  {size} B")
            return 0
        settings = _settings(args)
        if args.dry_run:
            print(json.dumps(F.build(args.board, settings).manifest, indent=1, sort_keys=True))
            return 0
        if not args.port:
            raise F.FlashError("--port is required (or --dry-run)")
        report = F.flash(args.port, args.board, settings, link_port=args.link,
                         hello_timeout=args.hello_timeout,
                         log=lambda s: print(s, file=sys.stderr, flush=True))
    except F.FlashError as exc:
        print(f"serialine device: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
