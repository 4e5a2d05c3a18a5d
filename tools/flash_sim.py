"""The sim board: the MicroPython unix port as a board you flash (`serialine device sim-board`).

    serialine device sim-board --dir DIR

DIR is the board's filesystem (the process runs in it, with nothing else on its module path).
Two ptys stand in for the board's ports and are printed at start:
- `port`: the REPL (a board's USB serial). mpremote and `serialine device flash --board sim
  --port PORT` drive it.
- `link`: the firmware's link (a board's UART), where the host agent connects.
The process boots like a board: `micropython -i main.py` when DIR has a main.py (its REPL after
Ctrl-C), the bare REPL otherwise; whenever it ends or prints the reset line (the sim's
machine.reset()) it is started again — a reboot. Ctrl-C / SIGTERM stop the board.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path

from serialine.host.sim import unixport

from .flash import LINK_ENV, RESET_LINE


def _pty(raw: bool) -> tuple[int, int, str]:
    m, s = os.openpty()
    if raw:
        tty.setraw(s)
    os.set_blocking(m, False)
    return m, s, os.ttyname(s)


class SimBoard:
    """Ports, the relay between them and the unix port process, and its reboots."""

    def __init__(self, directory: str | os.PathLike, log=lambda s: None) -> None:
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        # host ends (paths printed); the slaves stay open here so a client closing them does not
        # end the pty
        self.repl_m, self._repl_s, self.port = _pty(raw=True)
        self.link_m, self._link_s, self.link = _pty(raw=True)
        # the board's side of its link: the firmware opens this path (link.open_tty)
        self.dlink_m, self._dlink_s, self.dlink = _pty(raw=True)
        self.proc: subprocess.Popen | None = None
        self.con_m = -1
        self.boots = 0
        self._tail = b""
        self.stopping = False
        self.raw_repl = False  # the board last showed its raw REPL prompt (not ">>> ")
        self.ctrl_d_at = 0.0  # when the client last sent Ctrl-D (soft reset)
        self.enter_raw = False  # after a soft reset in the raw REPL: back into it, as a board does

    def _spawn(self, run_main: bool = True) -> None:
        m, s = os.openpty()
        a = termios.tcgetattr(s)
        a[1] &= ~termios.OPOST  # the REPL writes its own \r\n
        a[3] &= ~(termios.ECHO | termios.ICANON)  # ISIG stays: Ctrl-C interrupts main.py
        termios.tcsetattr(s, termios.TCSANOW, a)
        os.set_blocking(m, False)
        args = ["-i", "main.py"] if run_main and (self.dir / "main.py").exists() else []
        env = {**unixport.flash_env(), LINK_ENV: self.link, "SERIALINE_LINK": self.dlink}
        self.proc = subprocess.Popen([unixport.binary(), *args], cwd=self.dir, env=env,
                                     stdin=s, stdout=s, stderr=s, close_fds=True,
                                     preexec_fn=lambda: os.login_tty(0))
        os.close(s)
        if self.con_m >= 0:
            os.close(self.con_m)
        self.con_m = m
        self._tail = b""
        self.boots += 1
        self.log(f"boot {self.boots}: micropython {' '.join(args) or '(REPL)'} in {self.dir}")

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    @staticmethod
    def _move(src: int, dst: int) -> bytes:
        try:
            data = os.read(src, 4096)
        except OSError as exc:  # EIO: the other side is gone (a process that ended)
            if exc.errno in (errno.EIO, errno.EAGAIN):
                return b""
            raise
        if data:
            try:
                os.write(dst, data)
            except BlockingIOError:
                pass  # nobody reading that port: a UART drops bytes too
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
        return data

    def run(self, ready=lambda: None) -> None:
        """Relay until stop(); `ready()` once the first boot has shown its REPL prompt (input
        sent before the unix port sets up its terminal is flushed) or has run 3 s."""
        self._spawn()
        first, t0 = b"", time.monotonic()
        while not self.stopping:
            if ready is not None and (b">>> " in first or time.monotonic() - t0 > 3):
                ready()
                ready = None
            fds = [self.repl_m, self.link_m, self.dlink_m, self.con_m]
            try:
                readable, _, _ = select.select(fds, [], [], 0.1)
            except InterruptedError:
                continue
            reset = False
            for fd in readable:
                if fd == self.con_m:
                    data = self._move(self.con_m, self.repl_m)
                    if ready is not None:
                        first += data
                    seen = self._tail + data
                    raw_at, friendly_at = seen.rfind(b"raw REPL; CTRL-B"), seen.rfind(b">>> ")
                    if raw_at != friendly_at:
                        self.raw_repl = raw_at > friendly_at
                    if self.enter_raw and friendly_at >= 0:
                        os.write(self.con_m, b"\x01")
                        self.enter_raw = False
                    reset = RESET_LINE.encode() in seen
                    self._tail = seen[-max(len(RESET_LINE), 20):]
                elif fd == self.repl_m:
                    if b"\x04" in self._move(self.repl_m, self.con_m):
                        self.ctrl_d_at = time.monotonic()
                elif fd == self.link_m:
                    self._move(self.link_m, self.dlink_m)
                elif fd == self.dlink_m:
                    self._move(self.dlink_m, self.link_m)
            status = self.proc.poll() if self.proc is not None else None
            if reset or status is not None:
                self.log("reset" if reset else f"the process ended (status {status}): reboot")
                self._kill()
                termios.tcflush(self._dlink_s, termios.TCIOFLUSH)  # what the old boot left unread
                time.sleep(0.05)
                # Ctrl-D ends the unix port; a board soft-resets: back to the raw REPL if it was
                # there (main.py skipped, as MicroPython does), else a boot with main.py
                soft = not reset and time.monotonic() - self.ctrl_d_at < 1.0
                if not self.stopping:
                    self._spawn(run_main=not (soft and self.raw_repl))
                    if soft:
                        os.write(self.repl_m, b"MPY: soft reboot\r\n")
                        self.enter_raw = self.raw_repl
        self._kill()

    def stop(self, *_a) -> None:
        self.stopping = True


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="serialine device sim-board",
                                 description="the MicroPython unix port as a board behind a pty")
    ap.add_argument("--dir", required=True, help="the board's filesystem (made if missing)")
    ap.add_argument("--quiet", action="store_true", help="no boot/reset lines on stderr")
    args = ap.parse_args(argv)
    try:
        unixport.binary()
    except unixport.UnixPortMissing as exc:
        print(f"serialine device sim-board: {exc}", file=sys.stderr)
        return 2
    try:
        board = SimBoard(args.dir, log=(lambda s: None) if args.quiet else
                         (lambda s: print(f"sim-board: {s}", file=sys.stderr, flush=True)))
    except OSError as exc:
        print(f"serialine device sim-board: {args.dir}: {exc.strerror}", file=sys.stderr)
        return 2
    def ready():
        print(f"port {board.port}", flush=True)
        print(f"link {board.link}", flush=True)
        print(f"flash it: serialine device flash --board sim --port {board.port}", flush=True)

    signal.signal(signal.SIGTERM, board.stop)
    signal.signal(signal.SIGINT, board.stop)
    board.run(ready)
    return 0
