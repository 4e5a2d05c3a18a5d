"""What the simulated camera sees of a print and what it reports, when a scenario's `[print] images = true`:
the coder's print is `render(exact element string, defects)` and the camera's result is what zxing-cpp
decoded and `grade()` measured on that image — a no-read when it cannot decode, the grader's letter.

The print's defects are the scenario's `[print]` values, plus per print: `clogged` (a rate: that print
has `clogged_rows` more missing nozzle rows), `wear` (one defect growing linearly from its `[print]`
value at the first print to `wear_to` at the last unit: a printhead slowly drying up), and the
coder's `[defects]` mapped onto the image: a misprint is the wrong code rendered cleanly, a skip a blank
carton, a smear `smeared_by` modules of motion blur."""

from __future__ import annotations

import random
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
        d = self.defects(n, smeared)  # drawn for every trigger: the clogged stream does not depend on skips
        if printed is None:
            image = self.blank
        else:
            try:
                image = render(printed, d, width=self.s.width, height=self.s.height, module_px=self.s.module_px,
                               seed=self.seed * 1_000_003 + n)
            except RenderError:  # a misprint no GS1 encoder would take: the camera reads the wrong code
                self.grades["unrenderable"] = self.grades.get("unrenderable", 0) + 1
                return printed, "A", ""
        r = grade(image)
        if r.error is not None and r.read_text is None:
            self.grades["no_read"] = self.grades.get("no_read", 0) + 1
            return None, "", "" if printed is None else "no_read"
        letter = r.overall_grade
        self.grades[letter] = self.grades.get(letter, 0) + 1
        data = r.decoded.data
        if printed is not None and data != printed:
            return data, letter, "misread"
        return data, letter, "low_grade" if verdicts.grade_value(letter) < self.min_grade else ""
