"""What the simulated camera sees of a print and what it reports, when a scenario's `[print] images = true`:
the coder's print is `render(exact element string, defects)` and the camera's result is what zxing-cpp
decoded and `grade()` measured on that image — a no-read when it cannot decode, the grader's letter.

The print's defects are the scenario's `[print]` values, plus per print: `clogged` (a rate: that print
has `clogged_rows` more missing nozzle rows), `wear` (one defect growing linearly from its `[print]`
value at the first print to `wear_to` at the last unit: a printhead slowly drying up), and the
coder's `[defects]` mapped onto the image: a misprint is the wrong code rendered cleanly, a skip a blank
carton, a smear `smeared_by` modules of motion blur.

Rendering and grading take milliseconds, longer than the simulator may hold its clock at speed, so the
coder hands each print to `prepare()` when it prints it: the image is rendered and graded in a worker
process (no GIL shared with the simulator's clock) while the pack travels to the camera, and `look()`
at the camera's trigger takes the result. A print the line changed after the coder (a misprint) is
handed over by the line as it changes it (`misprinted()`), so nothing is rendered in the simulator's
own process; a blank carton is the same image every time, graded once at `start()`. `stats()` says
how often the camera had to wait for the worker (never, at speed, on a machine that has the CPU)."""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import random
import time
from dataclasses import fields, replace

import numpy as np

from .. import verdicts
from . import render as _render
from .grade import grade
from .render import Defects, RenderError, render

DEFECTS = tuple(f.name for f in fields(Defects) if f.name != "flipped")  # the scenario's [print] defect keys


class Imager:
    """`look(printed, smeared, n) -> (data or None, grade letter, fault)`: data without the symbology
    identifier (the camera adds `]d2`), fault "" or what a good print suffered at image level
    ("no_read", "low_grade" below `min_grade`, "misread")."""

    def __init__(self, settings, units: int, seed: int = 0, min_grade: str | float = "C"):
        self.s = settings
        self.base = Defects(**{k: getattr(settings, k) for k in DEFECTS})
        self.units = max(1, units)
        self.seed = seed
        self.min_grade = verdicts.grade_value(min_grade)
        self._clog_rng = random.Random(f"clogged-{seed}")
        self.blank = np.full((settings.height, settings.width), round(_render.SUBSTRATE * 255), np.uint8)
        self.grades: dict[str, int] = {}  # overall letter (or "no_read") → count, for the run report
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._ready: dict[tuple, collections.deque] = collections.defaultdict(collections.deque)
        self._blank_found = None  # what the camera finds on a blank carton (graded once)
        self.waits, self.wait_s, self.here = 0, 0.0, 0  # camera waits for the worker; prints measured here

    def prepare(self, code: str, fault: str, print_no: int) -> None:
        """The coder printed `code` (its fault "", "smear", "skip", …) as its print `print_no`: start
        the image now. A misprint is left to the camera (the line changes its code after the coder)."""
        if fault not in ("", "smear", "duplicate", "swap"):
            return
        self._submit(code, fault == "smear", print_no)

    def misprinted(self, printed: str, print_no: int) -> None:
        """The line turned the coder's print `print_no` into `printed` (a misprint: the wrong code,
        rendered cleanly): start its image now."""
        self._submit(printed, False, print_no)

    def _submit(self, code: str, smeared: bool, print_no: int) -> None:
        self.start()
        d = self.defects(print_no, smeared)
        job = self._pool.submit(_measure, code, d, self.s.width, self.s.height, self.s.module_px,
                                self.seed * 1_000_003 + print_no)
        self._ready[(code, smeared)].append(job)

    def start(self) -> None:
        """The worker process, started and warmed up (its imports take a second) before the line runs."""
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            warm = ("0109506000134352\x1d21WARMUP", self.base, self.s.width, self.s.height, self.s.module_px, 0)
            job = self._pool.submit(_measure, *warm)
            _measure(*warm)  # here too: a print nobody prepared is measured at the camera, the first one costs 80 ms
            self._blank_found = _found(grade(self.blank))
            job.result()

    def stats(self) -> dict:
        """For the run report: how often the camera waited for the worker and for how long, and how
        many prints were measured in the simulator's own process."""
        return {"camera_waits": self.waits, "camera_wait_ms": round(self.wait_s * 1000, 1), "measured_here": self.here}

    def worker_pids(self) -> list[int]:
        """The worker process(es), started (for a real-time run's scheduling, host/sim/rtsched.py)."""
        self.start()
        return [p.pid for p in multiprocessing.active_children() if p.pid is not None and p.name.startswith("SpawnProcess")]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def defects(self, n: int, smeared: bool = False) -> Defects:
        """The defects of print n (from 1)."""
        d, s = self.base, self.s
        if s.wear:
            start, share = getattr(d, s.wear), min(1.0, (n - 1) / max(1, self.units - 1))
            value = start + (s.wear_to - start) * share
            d = replace(d, **{s.wear: int(value) if isinstance(start, int) else value})
        if s.clogged and self._clog_rng.random() < s.clogged:
            d = replace(d, missing_dots=min(Defects.RANGES["missing_dots"][1], d.missing_dots + s.clogged_rows))
        if smeared:
            d = replace(d, smear=max(d.smear, s.smeared_by))
        return d

    def look(self, printed: str | None, smeared: bool, n: int) -> tuple[str | None, str, str]:
        waiting = self._ready.get((printed, smeared))
        if waiting:
            job = waiting.popleft()
            if not job.done():  # the worker is behind: the simulator's clock waits (counted)
                t0 = time.perf_counter()
                found = job.result()
                self.waits, self.wait_s = self.waits + 1, self.wait_s + time.perf_counter() - t0
            else:
                found = job.result()
        elif printed is None:
            if self._blank_found is None:
                self._blank_found = _found(grade(self.blank))
            found = self._blank_found
        else:  # a print nobody prepared (a caller without a coder): measured here
            self.here += 1
            found = _measure(printed, self.defects(n, smeared), self.s.width, self.s.height, self.s.module_px,
                             self.seed * 1_000_003 + n)
        if found is None:  # a misprint no GS1 encoder would take: the camera reads the wrong code
            self.grades["unrenderable"] = self.grades.get("unrenderable", 0) + 1
            return printed, "A", ""
        data, letter = found
        if data is None:
            self.grades["no_read"] = self.grades.get("no_read", 0) + 1
            return None, "", "" if printed is None else "no_read"
        self.grades[letter] = self.grades.get(letter, 0) + 1
        if printed is not None and data != printed:
            return data, letter, "misread"
        return data, letter, "low_grade" if verdicts.grade_value(letter) < self.min_grade else ""


def _found(r) -> tuple[str | None, str]:
    """(data read or None for a no-read, overall letter)."""
    if r.error is not None and r.read_text is None:
        return None, ""
    return r.decoded.data, r.overall_grade


def _measure(code: str, d: Defects, width: int, height: int, module_px: float, seed: int):
    """Render and grade one print (in the worker process or here); None if it cannot be printed."""
    try:
        image = render(code, d, width=width, height=height, module_px=module_px, seed=seed)
    except RenderError:
        return None
    return _found(grade(image))
