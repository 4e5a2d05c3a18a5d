"""Print-quality trend: moving statistics of the grades the reader reports, and an alarm before packs fail.

Per parameter (the overall grade when the reader reports only that, as the line protocols do) the
mean of the last `window` reads (host/verdicts.py grade values, A 3.5 … D 0.5, F 0; a no-read is no sample: it fails on its own).
An episode of drift starts when, with a full window, the mean has fallen `drop` grades or more below
the best full-window mean seen, or has come within `margin` of the line's minimum grade while still
passing — before the packs fail. It is alarmed once (PRINT_QUALITY_DRIFT) and ends when the mean is
back within `drop / 2` of the best and clear of the margin; `reset()` (a batch start, a cleaned
printhead) forgets the history."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from . import verdicts

ALARM = "PRINT_QUALITY_DRIFT"
ADVICE = "print quality drifting: clean the printhead"
def letter(value: float) -> str:
    """A mean grade (host/verdicts.py values: A 3.5 … F 0) as the letter of its band (3.4 → B)."""
    return next((k for k, v in verdicts.GRADE_VALUES.items() if value >= v - 1e-9), "F")


_EXACT = 1074  # every float is a whole multiple of 2**-1074: scaled by it, a sum of them is an exact integer


def _scaled(value: float) -> int:
    num, den = value.as_integer_ratio()  # den is a power of two
    return num << (_EXACT + 1 - den.bit_length())


@dataclass
class Series:
    values: collections.deque
    best: float | None = None  # best full-window mean
    drifting: bool = False
    total: int = 0  # the window's exact sum, scaled by 2**_EXACT: kept per read, not summed per read

    def push(self, value: float) -> None:
        if len(self.values) == self.values.maxlen:
            self.total -= _scaled(self.values[0])
        self.values.append(value)
        self.total += _scaled(value)

    @property
    def mean(self) -> float | None:
        # total / 2**_EXACT is math.fsum(values), both correctly rounded: the same mean as summing the window
        return self.total / (1 << _EXACT) / len(self.values) if self.values else None


class Trend:
    def __init__(self, window: int = 200, drop: float = 1.0, margin: float = 0.5, min_grade: str | float = 1.5):
        if window < 2 or drop <= 0 or margin < 0:
            raise ValueError("trend: window ≥ 2, drop > 0 and margin ≥ 0")
        self.window, self.drop, self.margin = window, drop, margin
        self.min_grade = verdicts.grade_value(min_grade)  # the line's minimum: "C" or 1.5
        self.series: dict[str, Series] = {}
        self.reads = 0

    def reset(self) -> None:
        self.series.clear()
        self.reads = 0

    def add(self, grades: dict) -> list[str]:
        """One read's grades (name → letter A–F or 0..4; the overall as "overall"); returns the alarm
        details of drift episodes this read started (usually none)."""
        self.reads += 1
        out = []
        for name, g in grades.items():
            if g is None or g == "":
                continue
            s = self.series.get(name)
            if s is None:
                s = self.series[name] = Series(collections.deque(maxlen=self.window))
            s.push(verdicts.grade_value(g))
            why = self._judge(name, s)
            if why:
                out.append(why)
        return out

    def _judge(self, name: str, s: Series) -> str | None:
        if len(s.values) < self.window:
            return None
        mean = s.mean
        s.best = mean if s.best is None else max(s.best, mean)
        fell = s.best - mean >= self.drop - 1e-9
        near = self.min_grade <= mean < self.min_grade + self.margin
        if s.drifting:
            if s.best - mean <= self.drop / 2 and not near:
                s.drifting = False
            return None
        if not (fell or near):
            return None
        s.drifting = True
        how = (f"fell from {letter(s.best)} ({s.best:.2f}) to {letter(mean)} ({mean:.2f})" if fell
               else f"is {letter(mean)} ({mean:.2f}), within {self.margin:g} of the minimum {letter(self.min_grade)}")
        return f"{ADVICE}: {name.replace('_', ' ')} mean of the last {self.window} reads {how}"

    def status(self) -> dict:
        """For the control status: per parameter mean, its letter, best, whether drifting."""
        return {"window": self.window, "reads": self.reads,
                "drifting": sorted(k for k, s in self.series.items() if s.drifting),
                "parameters": {k: {"mean": round(s.mean, 3), "grade": letter(s.mean), "n": len(s.values),
                                   "best": None if s.best is None else round(s.best, 3), "drifting": s.drifting}
                               for k, s in self.series.items()}}
