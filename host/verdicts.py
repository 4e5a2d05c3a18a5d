"""The judge: may this pack leave the line? PASS only when every check holds, else FAIL with the
first reason that failed (checks run from "nothing usable" to "subtly wrong")."""

from __future__ import annotations

from typing import Callable

from serialine.protocol.schema import Reason, Verdict

from . import gs1

# ISO/IEC 15415 overall grade: letter -> lowest numeric value of that letter.
GRADE_VALUES = {"A": 3.5, "B": 2.5, "C": 1.5, "D": 0.5, "F": 0.0}
DEFAULT_MIN_GRADE = 1.5  # C
_PASS, _OK = Verdict.PASS, Reason.OK  # a member through its class is a metaclass lookup (0.2 µs), every pass


def grade_value(grade: str) -> float:
    """'A'..'F' or a number 0.0..4.0 → numeric grade; ValueError on anything else."""
    if type(grade) is str and grade in GRADE_VALUES:  # a camera's letter as it is: every read
        return GRADE_VALUES[grade]
    g = str(grade).strip().upper()
    if g in GRADE_VALUES:
        return GRADE_VALUES[g]
    value = float(g)
    if not 0.0 <= value <= 4.0:
        raise ValueError(f"grade {grade!r} outside 0.0..4.0")
    return value


class Judge:
    """Decides one unit. `serial_batch(serial)` returns the batch a serial (of this GTIN) is
    allocated to, or None if unknown; `seen` holds serials already read on some unit."""

    def __init__(self, batch_id: str, gtin: str, lot: str, serial_batch: Callable[[str], str | None],
                 seen: set[str] | None = None, min_grade: float = DEFAULT_MIN_GRADE):
        self.batch_id, self.gtin, self.lot = batch_id, gtin, lot
        self.serial_batch = serial_batch
        self.seen = set() if seen is None else seen
        self.min_grade = grade_value(min_grade)
        # element strings this agent built (validated against the Syntax Dictionary before they
        # went to the coder) → their AIs: a read identical to one needs no parse on the hot path
        self.known: dict[str, dict[str, str]] = {}

    def expect(self, code: str, ais: dict[str, str]) -> None:
        """`code` was sent to a coder, its AIs `ais` (kept as given: the caller hands it over)."""
        self.known[code] = ais

    def decide(self, read: str | None, grade: str | None, expected: str | None
               ) -> tuple[Verdict, Reason, str | None]:
        """→ (verdict, reason, serial read or None). `expected` is the element string sent to the
        coder for this unit (None when the unit got no code)."""
        if read is None:
            return Verdict.FAIL, Reason.NO_READ, None
        if not read.startswith(gs1.SYMBOLOGY_DATAMATRIX):
            return Verdict.FAIL, Reason.NOT_GS1, None
        data = read[3:]
        ais = self.known.get(data)
        built_here = ais is not None  # a code this agent built for this batch from its own serials
        if ais is None:
            try:
                ais = gs1.parse_read(read).ais  # biip
            except gs1.GS1Error:
                return Verdict.FAIL, Reason.NOT_GS1, None
        serial = ais.get("21")
        try:
            low = grade is None or grade_value(grade) < self.min_grade
        except ValueError:
            low = True
        if low:
            return Verdict.FAIL, Reason.LOW_GRADE, serial
        if ais.get("01") != self.gtin or ais.get("10") != self.lot or serial is None:
            return Verdict.FAIL, Reason.WRONG_BATCH, serial
        owner = self.batch_id if built_here else self.serial_batch(serial)
        if owner is None:
            return Verdict.FAIL, Reason.UNKNOWN_SERIAL, serial
        if owner != self.batch_id:
            return Verdict.FAIL, Reason.WRONG_BATCH, serial
        if serial in self.seen:
            return Verdict.FAIL, Reason.DUPLICATE, serial
        self.seen.add(serial)
        self.known.pop(data, None)
        if expected is None or data != expected:
            return Verdict.FAIL, Reason.CODE_MISMATCH, serial
        return _PASS, _OK, serial
