"""Drive the sim board: the real firmware in the MicroPython unix port, its line I/O over a
pipe pair of its own (the sim channel, boards/sim/README.md), its link on another tty.

    with UnixBoard(link_path, cfg_path=...) as sb:          # virtual time, lockstep
        edges, status = sb.step(t_us, pos, pe, confirm, bin_full)
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from dataclasses import dataclass

from serialine.host.resources import board_dir
from serialine.host.sim import unixport

OUT_NAMES = ("", "coder", "camera", "gate_open", "gate_close", "stop_on", "stop_off")
MASK = 0x3FFFFFFF  # the board's clock and encoder wrap at 2**30, as on a real board
NO_DUE = 0x3FFFFFFF  # StepStatus: nothing ahead (the firmware's NO_UNIT)


@dataclass(frozen=True)
class OutputEdge:
    name: str  # coder | camera | gate_open | gate_close | stop_on | stop_off
    t_us: int  # virtual (or wall-clock) ticks_us of the edge, wraps at 2**30
    pos: int  # encoder position at the edge, wraps at 2**30


@dataclass(frozen=True)
class StepStatus:
    state: int  # DeviceState
    in_flight: int
    alarms: int  # bit (1 << Alarm)
    queue_fill: int
    # firmware core.next_due (NO_DUE: nothing ahead): counts to the next position that matters, µs
    # to the next time deadline
    due_counts: int = 0x3FFFFFFF
    due_us: int = 0x3FFFFFFF
    verdicts_in: int = 0  # VERDICT messages the device has applied this boot
    event_mark: int = -1  # the link seq its next event gets (mod 256): a host ACK of it stored all before


class UnixBoard:
    """Starts `boards/sim/simmain.py` with the link on `link_path` (a tty the host side of the
    link does not open itself, e.g. FaultyRelay.device_path)."""

    def __init__(self, link_path: str, *, cfg_path: str | os.PathLike = "serialine.cfg",
                 realtime: bool = False, device_id: str = "sim-1", wdt_ms: int = 0,
                 reset_cause: int = 1, cwd: str | os.PathLike | None = None) -> None:
        self.realtime = realtime
        # the sim channel is a pipe pair, not a pty: a pty's data reaches its reader through a kernel
        # worker that a loaded machine delays by milliseconds (p99 5 ms, max 12 ms at load 11, against
        # 0.1 / 2.4 ms for a pipe), and a real-time step is one round trip
        dev_r, self._w = os.pipe()
        self._r, dev_w = os.pipe()
        os.set_blocking(dev_r, False)  # the firmware's scan loop must not wait for the simulator
        args = ["-X", "heapsize=2m", str(board_dir("sim") / "simmain.py"),
                link_path, f"fd:{dev_r},{dev_w}", "--cfg", str(cfg_path), "--device-id", device_id,
                "--wdt-ms", str(wdt_ms), "--reset-cause", str(reset_cause)]
        if realtime:
            args.append("--realtime")
        # its own session: a Ctrl-C at the terminal is the simulator's to handle, not the board's
        try:
            self.proc = unixport.spawn(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, start_new_session=True, pass_fds=(dev_r, dev_w))
        finally:
            os.close(dev_r)
            os.close(dev_w)
        self._rx = b""
        self.boot_line = self._stdout_until("READY")

    def _stdout_until(self, word: str, timeout: float = 10.0) -> str:
        assert self.proc.stdout is not None
        seen: list[str] = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("firmware exited:\n" + "".join(seen))
            seen.append(line)
            if line.startswith(word):
                return "".join(seen)
        raise RuntimeError("firmware did not start:\n" + "".join(seen))

    def _readline(self, timeout: float = 5.0) -> bytes:
        end = time.monotonic() + timeout
        while b"\n" not in self._rx:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"sim channel: no answer (firmware exit {self.proc.poll()})")
            if select.select([self._r], [], [], min(left, 0.1))[0]:
                self._rx += os.read(self._r, 4096)
        line, self._rx = self._rx.split(b"\n", 1)
        return line

    def step(self, t_us: int, pos: int, pe: int, confirm: int = 0,
             bin_full: int = 0, upto: int = -1) -> tuple[list[OutputEdge], StepStatus]:
        """Virtual time: set the clock, the encoder and the inputs, apply the host messages held
        until `upto` VERDICTs have been applied this boot (-1: all), run one scan; the output
        edges of that scan and the device's state after it."""
        os.write(self._w, b"S %d %d %d %d %d %d\n" % (t_us & MASK, pos & MASK,
                                                          pe, confirm, bin_full, upto))
        edges = []
        while True:
            w = self._readline().split()
            if w[0] == b"E":
                edges.append(OutputEdge(OUT_NAMES[int(w[1])], int(w[2]), int(w[3])))
            elif w[0] == b"K":
                return edges, StepStatus(*(int(x) for x in w[1:9]))

    def set_inputs(self, pe: int, confirm: int = 0, bin_full: int = 0,
                   pos: int | None = None) -> None:
        """Real time: set input levels (and the encoder position if given)."""
        tail = b"" if pos is None else b" %d" % (pos & MASK)
        os.write(self._w, b"I %d %d %d%s\n" % (pe, confirm, bin_full, tail))

    def read_edges(self, timeout: float = 0.0) -> list[OutputEdge]:
        """Real time: the output edges reported so far."""
        out = []
        end = time.monotonic() + timeout
        while True:
            if select.select([self._r], [], [], max(0.0, end - time.monotonic()))[0]:
                self._rx += os.read(self._r, 4096)
            while b"\n" in self._rx:
                line, self._rx = self._rx.split(b"\n", 1)
                w = line.split()
                if w and w[0] == b"E":
                    out.append(OutputEdge(OUT_NAMES[int(w[1])], int(w[2]), int(w[3])))
            if time.monotonic() >= end:
                return out

    def close(self) -> str:
        """Stop the firmware; returns what it printed."""
        if self.proc.poll() is None:
            try:
                os.write(self._w, b"Q\n")
                self.proc.wait(3)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        out = self.proc.stdout.read() if self.proc.stdout else ""
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        return out

    def __enter__(self) -> "UnixBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
