"""Which camera result belongs to which unit: by order and by time window.

The camera answers every trigger once, in trigger order, numbering them n = 1, 2, ...; the device
reports each trigger as UNIT_INSPECTED. So results and inspected units pair off in order, as long
as (a) the numbers run on without a gap and (b) each pair arrived within `window_s` of each other.
Anything else is a correlation fault: the unit concerned FAILs with CORRELATION and an alarm is
raised; a result nobody can own is discarded (also an alarm). Pairing is never what makes a pack
pass: the read must still equal the code sent for that very unit."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from .devices.camera import CameraResult


@dataclass
class Pairing:
    unit: tuple | None  # the unit key, None for an orphan result
    result: CameraResult | None  # None: the unit FAILs with CORRELATION
    why: str = ""


class Correlator:
    def __init__(self, window_s: float = 0.5):
        self.window_s = window_s
        self.units: collections.deque = collections.deque()  # (unit_key, arrival t)
        self.results: collections.deque = collections.deque()
        self.next_n: int | None = None

    def inspected(self, unit_key, t: float) -> None:
        self.units.append((unit_key, t))

    def result(self, r: CameraResult) -> None:
        self.results.append(r)

    def pairs(self, now: float) -> list[Pairing]:
        out: list[Pairing] = []
        while self.units or self.results:
            if self.results:
                r = self.results[0]
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
                (key, tu), r = self.units[0], self.results[0]
                if abs(r.t - tu) <= self.window_s:
                    self.units.popleft(), self.results.popleft()
                    self.next_n = r.n + 1
                    out.append(Pairing(key, r))
                elif tu < r.t:
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
            if self.results and not self.units and now - self.results[0].t > self.window_s:
                r = self.results.popleft()
                self.next_n = r.n + 1
                out.append(Pairing(None, r, f"camera result {r.n} with no inspected unit"))
                continue
            break
        return out
