"""The simulated camera (code reader): each trigger from the line reads what is printed on the pack
in front of it and reports the result over TCP after its processing latency, sometimes wrongly.

Line protocol (ASCII, unsolicited from the camera, one result per trigger, in trigger order):
  camera< READ <n> <grade> <data>   n counts triggers from 1 since the camera started;
                                    grade is ISO/IEC 15415 A..F (the host's minimum decides);
                                    data is the symbology identifier ]d2 (GS1 DataMatrix) and
                                    the code, GS as the 4 characters \x1d
  camera< NOREAD <n>
  host>   PING                      camera< PONG

Fault injection beyond misreads: `garbage` (per trigger) sends one line the host must alarm on and
ignore before the result (unknown word, malformed READ, over-long line), from its own random stream
so the other faults of a seed stay as they were.

Latency runs on the simulator's clock: `deliver(now_us)` sends every result that is due, so virtual
time and real time use the same code.

A vendor reader's emulator (dataman_emu, keyence_emu) is this camera with another wire format:
it overrides `_result_line`, `_no_read_line`, `_garbage` and `handle` only, so the line model, the
faults and the random streams are the same whichever driver the scenario picks.

With `images` (host/verify/imager.Imager, scenario `[print] images = true`) each trigger decodes and
grades an image of the print instead; the reader faults above still apply to a good read."""

from __future__ import annotations

import collections
import heapq
import random
import threading
import time

from ..devices.lineclient import escape_code as escape
from . import rtsched
from .line import mutate
from .tcpline import LineServer

SYMBOLOGY = "]d2"  # ISO/IEC 15424 identifier of GS1 DataMatrix


def imager_for(scenario, seed: int, priority: int | None = None):
    """The scenario's image model (`[print] images = true`) or None: the camera then reads strings.
    `priority`: its worker's SCHED_FIFO priority (a real-time run, host/sim/rtsched.py)."""
    if not scenario.print.images:
        return None
    from serialine.host.linefile import CameraSettings
    from serialine.host.verify.imager import Imager

    imager = Imager(scenario.print, scenario.units, seed=seed, min_grade=CameraSettings().min_grade)
    with rtsched.spawning():  # its worker starts on the default scheduler; raised below
        imager.start()
    for pid in imager.worker_pids() if priority is not None else ():
        rtsched.fifo(pid, priority)
    return imager


class SimCamera(LineServer):
    def __init__(self, latency_ms=6.0, jitter_ms=2.0, no_read=0.0, misread=0.0, low_grade=0.0,
                 missed_trigger=0.0, garbage=0.0, seed=0, images=None, **kw):
        super().__init__(**kw)
        self.images = images  # host/verify/imager.Imager: decode and grade an image of the print
        self.latency_us, self.jitter_us = latency_ms * 1000, jitter_ms * 1000
        self.rates = (("no_read", no_read), ("misread", misread), ("low_grade", low_grade))
        self.missed_trigger = missed_trigger
        self.garbage, self._garbage_rng = garbage, random.Random(f"garbage-{seed}")
        self.rng = random.Random(seed)
        self.triggers = 0
        self._due: list[tuple[int, int, str]] = []  # (due t_us, n, line)
        self._lock2 = threading.Lock()
        self.delivered: list[tuple[int, int]] = []  # (n, t_us delivered)
        self.delivered_wall: dict[int, float] = {}  # n -> monotonic s when sent
        self.lost = 0  # results nobody was connected to receive
        self.faults = collections.Counter()

    def handle(self, line: str) -> str | None:
        """One command line from the host → the reply line (None: no reply)."""
        return "PONG" if line == "PING" else "ERR unknown command"

    def _result_line(self, n: int, grade: str, data: str) -> str:
        """The wire line of a read: `data` is the code as printed (GS as 0x1D), grade A..F."""
        return f"READ {n} {grade} {SYMBOLOGY}{escape(data)}"

    def _no_read_line(self, n: int) -> str:
        return f"NOREAD {n}"

    def _garbage(self, n: int, rng: random.Random) -> str:
        """A line the host must alarm on and ignore: unknown word, malformed result, over-long."""
        return rng.choice(["STATUS ok", f"READ {n} Q ]d2X", "READ " + "9" * 600])

    def trigger(self, t_us: int, printed: str | None, smeared: bool) -> tuple[str | None, str]:
        """Read the pack in front: returns (what was read or None, camera fault on a good print).
        A missed trigger ("missed_trigger") makes no result and does not count: the trigger numbers
        run on without a gap, so the host cannot see it by numbering."""
        if self.missed_trigger and self.rng.random() < self.missed_trigger:
            self.faults["missed_trigger"] += 1
            return None, "missed_trigger"
        self.triggers += 1
        n, fault, good = self.triggers, "", False
        if self.images is not None:  # what the decoder and the grader found on the image
            read, grade, fault = self.images.look(printed, smeared, n)
            good = printed is not None and read is not None and not fault
        elif printed is None:
            read, grade = None, ""
        elif smeared:
            read, grade = (printed, "D") if self.rng.random() < 0.5 else (None, "")
        else:
            read, grade, good = printed, "A", True
        if good:  # the reader's own faults on a good read
            x = self.rng.random()
            for name, rate in self.rates:
                if x < rate:
                    fault = name
                    break
                x -= rate
            if fault == "no_read":
                read = None
            elif fault == "misread":
                read = mutate(printed, self.rng)
            elif fault == "low_grade":
                grade = "D"
        self.faults[fault or "ok"] += 1
        line = self._no_read_line(n) if read is None else self._result_line(n, grade, read)
        due = t_us + max(0, round(self.latency_us + self.rng.uniform(-1, 1) * self.jitter_us))
        with self._lock2:
            if self.garbage and self._garbage_rng.random() < self.garbage:
                self.faults["garbage"] += 1
                junk = self._garbage(n, self._garbage_rng)
                heapq.heappush(self._due, (due, 0, junk))  # n 0 sorts before the result due with it
            heapq.heappush(self._due, (due, n, line))
        return read, fault

    def next_due(self, after: int | None = None) -> int | None:
        """When the next result not yet sent is due (the first due after `after`, if given)."""
        with self._lock2:
            if after is None:
                return self._due[0][0] if self._due else None
            return min((due for due, _, _ in self._due if due > after), default=None)

    def deliver(self, now_us: int) -> list[int]:
        """Send every result due by now_us; returns their trigger numbers."""
        out = []
        while True:
            with self._lock2:
                if not self._due or self._due[0][0] > now_us:
                    return out
                due, n, line = heapq.heappop(self._due)
            if n == 0:  # injected garbage: no result, owes no verdict
                self.send(line)
                continue
            if self.send(line):
                self.delivered.append((n, due))
                self.delivered_wall[n] = time.monotonic()
            else:
                self.lost += 1
            out.append(n)

