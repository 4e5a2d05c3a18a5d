"""Decode a camera image with zxing-cpp, DataMatrix only; a GS1 read needs symbology identifier `]d2`
and an element string that parses (host/gs1.py, with biip)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import zxingcpp

from .. import gs1

# error names (`error` in results and in `serialine verify --json`)
NO_READ = "no_read"  # no DataMatrix found or it did not decode
NOT_GS1 = "not_gs1"  # decoded, but not `]d2` (no leading FNC1) or its element string is not valid GS1
NOT_SQUARE = "not_square"  # a rectangle (ECC 200 or DMRE `]d8`), not the square the line prints


@dataclass
class Decoded:
    symbology: str | None = None  # e.g. "]d2"
    data: str | None = None  # the element string as read (GS separators), no symbology identifier
    ais: dict[str, str] = field(default_factory=dict)  # AI → value, in the order read
    error: str | None = None
    detail: str | None = None  # one line saying why, with error
    uec: float | None = None  # zxing-cpp's unused error correction, 0..1
    version: str | None = None  # "22x22"
    corners: np.ndarray | None = None  # 4 × 2 pixel coordinates: top-left, top-right, bottom-right, bottom-left
    hri: str | None = None  # the human-readable interpretation zxing-cpp gives


_FORMATS = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.DataMatrix)


def read(image: np.ndarray):
    """zxing-cpp's decode alone (what the benchmark times as the decoder's share)."""
    return zxingcpp.read_barcode(image, formats=_FORMATS)


def decode(image: np.ndarray) -> Decoded:
    bc = read(image)
    if bc is None or not bc.valid:
        return Decoded(error=NO_READ, detail="no DataMatrix decoded")
    pos = bc.position
    corners = np.array([[p.x, p.y] for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)],
                       dtype=np.float64)
    extra = bc.extra or {}
    symbology, data = bc.symbology_identifier, bc.bytes.decode("latin-1")
    out = Decoded(symbology=symbology, data=data, uec=extra.get("UEC"), version=extra.get("Version"),
                  corners=corners, hri=bc.text)
    rows, _, cols = (out.version or "").partition("x")
    if out.symbology == "]d8" or rows != cols:
        out.error, out.detail = NOT_SQUARE, f"{out.version} rectangle ({out.symbology}), not the square the line prints"
        return out
    if out.symbology != gs1.SYMBOLOGY_DATAMATRIX:
        out.error, out.detail = NOT_GS1, f"symbology {out.symbology}: no leading FNC1, not GS1"
        return out
    try:
        out.ais = dict(gs1.parse_read(symbology + data).ais)
    except gs1.GS1Error as exc:
        out.error, out.detail = NOT_GS1, str(exc)
    return out
