"""A GS1 DataMatrix as a camera sees it: the exact element string (leading FNC1) encoded by zxing-cpp
(square ECC 200: a DMRE rectangle reads back as `]d8`), printed with physical defects, imaged at a
camera resolution. Everything is numpy; a seed makes every image reproducible.

`render(code, defects, ...) -> image` is what the simulated coder + camera call; `grade(image)` in
grade.py is what the camera reports."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
import zxingcpp

from .. import gs1

SUBSTRATE = 0.85  # reflectance of a white carton
INK = 0.05  # reflectance of black ink at full contrast
_K = 12  # print raster: dots per module side (dot gain resolves to 1/_K of a module)
NOZZLES_PER_MODULE = 6  # printhead nozzles across one module row


class RenderError(ValueError):
    """A code that cannot be printed as a GS1 DataMatrix, or a defect out of its range."""


@dataclass(frozen=True)
class Defects:
    """Print and imaging defects; the zero value is a perfect print. Strengths grow with the value."""
    dot_gain: float = 0.0  # ink spread per side, in modules (negative: starved dots)
    missing_dots: int = 0  # clogged nozzles: each leaves a whole row of dots (1/6 module) unprinted
    smear: float = 0.0  # motion blur along the travel (image x), in modules
    contrast: float = 1.0  # print contrast: 1 black ink on white, 0 invisible
    skew_deg: float = 0.0  # shear of the module grid (printhead not square to the travel)
    rotation_deg: float = 0.0  # the pack turned under the camera (graded as nothing: ISO is rotation-free)
    quiet_zone: float = 0.0  # share of the quiet zone beside the L's upright covered by a foreign mark
    noise: float = 0.0  # camera noise, standard deviation as a share of full scale
    flipped: int = 0  # modules of the data region printed the wrong colour (test corpus for UEC)

    RANGES = {"dot_gain": (-0.45, 0.75), "missing_dots": (0, 400), "smear": (0.0, 10.0),
              "contrast": (0.0, 1.0), "skew_deg": (-45.0, 45.0), "rotation_deg": (-360.0, 360.0),
              "quiet_zone": (0.0, 1.0), "noise": (0.0, 1.0), "flipped": (0, 100000)}

    def __post_init__(self):
        for f in fields(self):
            lo, hi = self.RANGES[f.name]
            v = getattr(self, f.name)
            kinds = (int,) if isinstance(lo, int) else (int, float)
            if not isinstance(v, kinds) or isinstance(v, bool) or not lo <= v <= hi:  # nan fails the range
                whole = "a whole number " if kinds == (int,) else ""
                raise RenderError(f"defect {f.name} = {v!r}: want {whole}in {lo}..{hi}")

    @classmethod
    def from_mapping(cls, values: dict, where: str = "defects") -> Defects:
        """From a scenario's table: an unknown key or a bad value is one line naming it."""
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise RenderError(f"{where}: unknown defect {key!r} (known: {', '.join(known)})")
        try:
            return cls(**values)
        except RenderError as exc:
            raise RenderError(f"{where}: {exc}") from None


def _hri_of(code: str) -> str:
    """Element string (GS separators, optional `]d2`) → the bracketed form zxing-cpp encodes in GS1 mode."""
    try:
        read = gs1.parse_read(code if code.startswith("]") else gs1.SYMBOLOGY_DATAMATRIX + code)
    except gs1.GS1Error as exc:
        raise RenderError(f"cannot print {code!r} as GS1: {exc}") from None
    return writer_hri(list(read.ais.items()))


def writer_hri(pairs: list[tuple[str, str]]) -> str:
    """(AI)value… for zxing-cpp's GS1 writer: brackets inside a value (CSET 82 has them) escaped."""
    return "".join(f"({ai})" + v.replace("(", "\\(").replace(")", "\\)") for ai, v in pairs)


def encode(code: str, *, gs1_mode: bool = True) -> np.ndarray:
    """The module matrix (True = dark) of a square ECC 200 symbol, without quiet zone."""
    content = _hri_of(code) if gs1_mode else code
    try:
        bc = zxingcpp.create_barcode(content, zxingcpp.BarcodeFormat.DataMatrix, gs1=gs1_mode, force_square=True)
    except Exception as exc:  # zxing-cpp raises ValueError/RuntimeError with its own text
        raise RenderError(f"cannot encode {code!r}: {exc}") from None
    return np.asarray(bc.to_image(scale=1, add_quiet_zones=False)) < 128


def clogged(n_rows: int, seed: int) -> list[int]:
    """The printhead's nozzles over the symbol in a fixed random order: k clogged nozzles are the first
    k (nested, so the damage only grows with k)."""
    nozzles = np.arange(n_rows * NOZZLES_PER_MODULE)
    np.random.default_rng(seed).shuffle(nozzles)
    return [int(z) for z in nozzles]


def apply_print(m: np.ndarray, d: Defects, seed: int) -> np.ndarray:
    """Module-level defects: flipped data modules."""
    m = m.copy()
    n_rows, n_cols = m.shape
    if d.flipped:
        rng = np.random.default_rng(seed + 1)
        inner = [(r, c) for r in range(1, n_rows - 1) for c in range(1, n_cols - 1)]
        for i in rng.permutation(len(inner))[:d.flipped]:
            r, c = inner[i]
            m[r, c] = not m[r, c]
    return m


def _dilate(a: np.ndarray, r: int) -> np.ndarray:
    out = a.copy()
    for axis in (0, 1):
        src = out.copy()
        for s in range(1, r + 1):
            for sign in (1, -1):
                shifted = np.roll(src, sign * s, axis=axis)
                np.maximum(out, shifted, out=out)
    return out


def render(code: str, defects: Defects = Defects(), *, width: int = 640, height: int = 480,
           module_px: float = 6.0, seed: int = 0, gs1_mode: bool = True,
           matrix: np.ndarray | None = None) -> np.ndarray:
    """Greyscale camera image (uint8, height × width) of `code` printed with `defects`.
    `matrix` replaces the encoded module matrix (a test symbol); `gs1_mode=False` encodes plain text."""
    d = defects
    m = apply_print(encode(code, gs1_mode=gs1_mode) if matrix is None else matrix, d, seed)
    n_rows, n_cols = m.shape
    pad = 4  # quiet zone in modules (ISO/IEC 16022 asks ≥ 1)
    grid = np.zeros((n_rows + 2 * pad, n_cols + 2 * pad), dtype=bool)
    grid[pad:pad + n_rows, pad:pad + n_cols] = m
    if d.quiet_zone > 0:  # a foreign mark in the quiet zone beside the L's upright, from the bottom up
        h = int(round(d.quiet_zone * n_rows))
        grid[pad + n_rows - h:pad + n_rows, pad - 1] = True
    ink = np.repeat(np.repeat(grid, _K, axis=0), _K, axis=1)
    line = _K // NOZZLES_PER_MODULE
    for z in clogged(n_rows, seed)[:d.missing_dots] if d.missing_dots else ():  # before the spread: neighbours' ink bleeds in
        top = (pad * NOZZLES_PER_MODULE + z) * line
        ink[top:top + line, pad * _K:(pad + n_cols) * _K] = False
    gain = int(round(d.dot_gain * _K))
    if gain > 0:
        ink = _dilate(ink, gain)
    elif gain < 0:
        ink = ~_dilate(~ink, -gain)

    gh, gw = grid.shape
    x0, y0, x1, y1, base, border, b = _camera_map(gh, gw, width, height, float(module_px), float(d.rotation_deg),
                                                  float(d.skew_deg), float(d.smear))
    # each camera pixel sees the raster's mean over its footprint: a box of b × b cells at one sample;
    # summed at the samples only (the same float32 sums, in the same order, as boxing the whole raster)
    lo, hi = b // 2 + 1, b - 1 - b // 2 + 1
    flat = np.pad(ink, ((lo, hi), (lo, hi))).ravel()  # bool: a sample adds 0.0 or 1.0
    w_pr = gw * _K + b + 1
    cov = np.zeros(base.shape, dtype=np.float32)
    for i in range(b):
        for j in range(b):
            cov += flat.take(base + (i * w_pr + j))
    if b > 1:
        cov *= np.float32(1.0 / (b * b))
    cov[border] = 0.0  # off the raster

    cov = _blur(cov, np.array([0.25, 0.5, 0.25], dtype=np.float32), axis=(0, 1))  # the lens
    if d.smear > 0:
        n = max(1, int(round(d.smear * module_px)))
        cov = _blur(cov, np.full(n + 1, 1.0 / (n + 1), dtype=np.float32), axis=(1,))
    dark = SUBSTRATE - d.contrast * (SUBSTRATE - INK)
    refl = SUBSTRATE - cov * np.float32(SUBSTRATE - dark)
    if d.noise > 0:  # on the symbol's part of the frame; the rest stays plain substrate
        refl += np.random.default_rng(seed + 2).standard_normal(refl.shape, dtype=np.float32) * np.float32(d.noise)
    out = np.full((height, width), int(round(SUBSTRATE * 255)), dtype=np.uint8)
    out[y0:y1, x0:x1] = np.clip(np.rint(refl * 255.0), 0, 255).astype(np.uint8)
    return out


@lru_cache(maxsize=16)
def _camera_map(gh: int, gw: int, width: int, height: int, module_px: float, rotation_deg: float, skew_deg: float,
                smear: float):
    """Where each camera pixel of the symbol's region falls on the print raster — the same for every
    print of one size and geometry, so computed once: (x0, y0, x1, y1) the region, `base` the flat index
    of each pixel's footprint corner in the raster padded for the box, `border` the pixels off the raster,
    b the footprint's side in raster cells."""
    # camera pixel → print raster: inverse of rotation · shear · scale about the symbol's centre
    th, sk = math.radians(rotation_deg), math.tan(math.radians(skew_deg))
    fwd = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]]) @ np.array([[1.0, sk], [0.0, 1.0]])
    inv = np.linalg.inv(fwd * module_px)
    centre = np.array([gw / 2, gh / 2])
    corners = (np.array([[0, 0], [gw, 0], [0, gh], [gw, gh]]) - centre) @ (fwd * module_px).T
    x0, y0 = np.floor(corners.min(0) + [width / 2, height / 2]).astype(int)
    x1, y1 = np.ceil(corners.max(0) + [width / 2, height / 2]).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    margin = 2 + int(math.ceil(smear * module_px))  # the blurs reach this far past the print
    x0, y0 = max(x0 - margin, 0), max(y0 - margin, 0)
    x1, y1 = min(x1 + margin, width), min(y1 + margin, height)
    b = max(1, int(round(_K / module_px)))
    h_ink, w_ink = gh * _K + 2, gw * _K + 2  # the raster with a bare border: points off it clip onto it
    xs = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - width / 2)
    ys = np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - height / 2)
    inv_k = (inv * _K).astype(np.float32)
    ck = (centre * _K + 1).astype(np.float32)
    iu = np.clip(inv_k[0, 0] * xs[None, :] + inv_k[0, 1] * ys[:, None] + ck[0], 0, w_ink - 1).astype(np.intp)
    iv = np.clip(inv_k[1, 0] * xs[None, :] + inv_k[1, 1] * ys[:, None] + ck[1], 0, h_ink - 1).astype(np.intp)
    border = (iu == 0) | (iv == 0) | (iu == w_ink - 1) | (iv == h_ink - 1)
    base = iv * (gw * _K + b + 1) + iu  # row iv, column iu of the raster padded by b // 2 + 1 before
    base.flags.writeable = border.flags.writeable = False
    return int(x0), int(y0), int(x1), int(y1), base, border, b


def _blur(a: np.ndarray, kernel: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """Separable convolution with edge replication (the substrate continues past the frame)."""
    r = len(kernel) // 2
    for ax in axis:
        padded = np.pad(a, [(r, len(kernel) - 1 - r) if i == ax else (0, 0) for i in range(a.ndim)], mode="edge")
        out = np.zeros_like(a)
        for i, k in enumerate(kernel):
            sl = [slice(None)] * a.ndim
            sl[ax] = slice(i, i + a.shape[ax])
            out += k * padded[tuple(sl)]
        a = out
    return a
