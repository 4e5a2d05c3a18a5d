"""Camera (code reader) driver: decode results arrive unsolicited, one per trigger, in order."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .lineclient import LineClient, unescape_code

_GRADE = re.compile(r"^(?:[ABCDF]|[0-4](?:\.\d{1,2})?)$")
MAX_DATA = 200


class CameraLineError(ValueError):
    pass


@dataclass(frozen=True)
class CameraResult:
    n: int  # trigger number, counted by the camera from 1
    grade: str | None  # ISO/IEC 15415 grade, None for a no-read
    data: str | None  # symbology identifier + data (GS as 0x1D), None for a no-read
    t: float = 0.0  # host monotonic arrival time, s


def parse_line(line: str, t: float = 0.0) -> CameraResult:
    """`READ <n> <grade> <data>` | `NOREAD <n>` → CameraResult; CameraLineError on anything else."""
    if not isinstance(line, str) or not line.isascii():
        raise CameraLineError(f"camera line is not ASCII: {line!r}")
    parts = line.rstrip("\r\n").split(" ", 3)
    kind = parts[0]
    if kind == "NOREAD" and len(parts) == 2:
        return CameraResult(_n(parts[1], line), None, None, t)
    if kind == "READ" and len(parts) == 4:
        n, grade, data = _n(parts[1], line), parts[2], unescape_code(parts[3])
        if not _GRADE.match(grade) or (grade[0].isdigit() and float(grade) > 4.0):
            raise CameraLineError(f"bad grade {grade!r} in {line!r}")
        if not data or len(data) > MAX_DATA or not all(c == "\x1d" or " " < c < "\x7f" for c in data):
            raise CameraLineError(f"bad data in {line!r}")
        return CameraResult(n, grade, data, t)
    raise CameraLineError(f"malformed camera line {line!r}")


def _n(text: str, line: str) -> int:
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise CameraLineError(f"bad trigger number {text!r} in {line!r}")
    return int(text)


class Camera(LineClient):
    UNSOLICITED = ("READ", "NOREAD")

    def results(self) -> tuple[list[CameraResult], list[str]]:
        """Everything received so far → (results, errors for malformed lines)."""
        out, errors = [], []
        for line, t in self.drain():
            try:
                out.append(parse_line(line, t))
            except CameraLineError as exc:
                errors.append(str(exc))
        return out, errors
