"""Which camera result belongs to which unit: by order, within a window of the agent's step clock.

The camera answers every trigger once, in trigger order, numbering them n = 1, 2, ...; the device
reports each trigger as UNIT_INSPECTED. So results and inspected units pair off in order, as long
as (a) the numbers run on without a gap and (b) each pair was taken within `window_s` of each other.
Anything else is a correlation fault: the unit concerned FAILs with CORRELATION and an alarm is
raised; a result nobody can own is discarded (also an alarm). Pairing is never what makes a pack
pass: the read must still equal the code sent for that very unit.

Both sides are stamped when the agent takes them (units when stored, results when taken from the
driver), on a `StepClock`: it advances by the time each step took, but by at most `cap_s` per step.
So a host stall (GC, a slow disk, a starved machine) of any length counts as one short step: what
piled up meanwhile on both sides is taken in the next step with the same stamp and pairs in order,
and nothing is given up before the camera was drained over several steps after its unit came."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from .devices.camera import CameraResult


class StepClock:
    """Seconds of the agent's attention: each `tick()` (one per step) adds the wall time since the
    previous tick, at most `cap_s`. Monotonic; never jumps with a stall."""

    def __init__(self, cap_s: float):
        self.cap_s = cap_s
        self.now = 0.0
        self._wall = time.monotonic()

    def tick(self) -> float:
        wall = time.monotonic()
        self.now += min(max(0.0, wall - self._wall), self.cap_s)
        self._wall = wall
        return self.now


@dataclass
class Pairing:
    unit: tuple | None  # the unit key, None for an orphan result
    result: CameraResult | None  # None: the unit FAILs with CORRELATION
    why: str = ""


class Correlator:
    def __init__(self, window_s: float = 0.5):
        self.window_s = window_s
        self.units: collections.deque = collections.deque()  # (unit_key, t taken)
        self.results: collections.deque = collections.deque()  # (CameraResult, t taken)
        self.next_n: int | None = None

    def inspected(self, unit_key, t: float) -> None:
        self.units.append((unit_key, t))

    def result(self, r: CameraResult, t: float | None = None) -> None:
        """A result taken at `t` (default: the driver's arrival stamp r.t)."""
        self.results.append((r, r.t if t is None else t))

    def pairs(self, now: float) -> list[Pairing]:
        out: list[Pairing] = []
        while self.units or self.results:
            if self.results:
                r = self.results[0][0]
                if self.next_n is not None and r.n < self.next_n:  # late or repeated result
                    self.results.popleft()
                    out.append(Pairing(None, r, f"camera result {r.n} came after its unit was decided"))
                    continue
                if self.next_n is not None and r.n > self.next_n and self.units:
                    key, _ = self.units.popleft()  # the camera lost a result: that unit is unaccounted
                    self.next_n += 1
                    out.append(Pairing(key, None, f"camera result {self.next_n - 1} missing"))
                    continue
            if self.units and self.results:
                (key, tu), (r, tr) = self.units[0], self.results[0]
                if abs(tr - tu) <= self.window_s:
                    self.units.popleft(), self.results.popleft()
                    self.next_n = r.n + 1
                    out.append(Pairing(key, r))
                elif tu < tr:
                    self.units.popleft()
                    self.next_n = r.n  # skip: this result is not this unit's
                    out.append(Pairing(key, None, "no camera result within the window"))
                else:
                    self.results.popleft()
                    out.append(Pairing(None, r, f"camera result {r.n} with no inspected unit in the window"))
                continue
            if self.units and now - self.units[0][1] > self.window_s:
                key, _ = self.units.popleft()
                # did the camera trigger and lose the result, or never trigger? Unknown: re-align
                # on the next result by time (a wrong pairing still fails: the code must match)
                self.next_n = None
                out.append(Pairing(key, None, "no camera result within the window"))
                continue
            if self.results and not self.units and now - self.results[0][1] > self.window_s:
                r = self.results.popleft()[0]
                self.next_n = r.n + 1
                out.append(Pairing(None, r, f"camera result {r.n} with no inspected unit"))
                continue
            break
        return out
