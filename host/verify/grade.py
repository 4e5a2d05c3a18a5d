"""Print-quality grade of a DataMatrix image after ISO/IEC 15415 (2D matrix symbols) with ISO/IEC 16022's
Data Matrix specifics: decode, symbol contrast, modulation, reflectance margin, fixed pattern damage,
axial and grid non-uniformity, unused error correction; each 4..0 (A..F) with its value, the overall
grade the lowest. Grey levels are taken as reflectance without calibration (docs/verify.md says what
that means and where else this departs from the standard); every result says so."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import zxingcpp

from .decode import NO_READ, Decoded, decode
from .render import writer_hri

LETTERS = "FDCBA"  # grade 0..4 → letter
UNCALIBRATED = ("reflectance = grey level / 255 (no calibrated optics, aperture or illumination); "
                "one image, not the standard's scan average")

# square ECC 200: size → (data region side, data codewords, error-correction codewords, RS blocks)
SIZES = {10: (8, 3, 5, 1), 12: (10, 5, 7, 1), 14: (12, 8, 10, 1), 16: (14, 12, 12, 1), 18: (16, 18, 14, 1),
         20: (18, 22, 18, 1), 22: (20, 30, 20, 1), 24: (22, 36, 24, 1), 26: (24, 44, 28, 1),
         32: (14, 62, 36, 1), 36: (16, 86, 42, 1), 40: (18, 114, 48, 1), 44: (20, 144, 56, 1),
         48: (22, 174, 68, 1), 52: (24, 204, 84, 2), 64: (14, 280, 112, 2), 72: (16, 368, 144, 4),
         80: (18, 456, 192, 4), 88: (20, 576, 224, 4), 96: (22, 696, 272, 4), 104: (24, 816, 336, 6),
         120: (18, 1050, 408, 6), 132: (20, 1304, 496, 8), 144: (22, 1558, 620, 10)}

# ISO/IEC 15415 grade thresholds: grade g needs value ≥ (or ≤) the g-th entry (grades 4, 3, 2, 1)
_SC = (70.0, 55.0, 40.0, 20.0)  # symbol contrast, % reflectance
_MOD = (0.50, 0.40, 0.30, 0.20)  # module modulation / margin, 2|R − GT| / SC
_UEC = (0.62, 0.50, 0.37, 0.25)
_AN = (0.06, 0.08, 0.10, 0.12)  # lower is better
_GN = (0.38, 0.50, 0.63, 0.75)  # lower is better, in modules
_FPD = (0.0, 0.09, 0.13, 0.17)  # share of a fixed-pattern segment's modules damaged, lower is better

NAMES = ("decode", "symbol_contrast", "modulation", "reflectance_margin", "fixed_pattern_damage",
         "axial_nonuniformity", "grid_nonuniformity", "unused_error_correction")


def _at_least(value: float, thresholds) -> int:
    return next((4 - i for i, t in enumerate(thresholds) if value >= t), 0)


def _at_most(value: float, thresholds) -> int:
    return next((4 - i for i, t in enumerate(thresholds) if value <= t + 1e-12), 0)


@dataclass
class Parameter:
    value: float | str | None
    grade: int  # 4..0

    @property
    def letter(self) -> str:
        return LETTERS[self.grade]


@dataclass
class Result:
    decoded: Decoded
    parameters: dict[str, Parameter] = field(default_factory=dict)
    overall: int = 0
    detail: dict = field(default_factory=dict)  # per-segment damage, our own UEC, the nominal's source
    note: str = UNCALIBRATED

    @property
    def overall_grade(self) -> str:
        return LETTERS[self.overall]

    @property
    def error(self) -> str | None:
        return self.decoded.error

    @property
    def read_text(self) -> str | None:
        """What a camera reports (CameraResult.data): symbology identifier + data; None for a no-read."""
        d = self.decoded
        return None if d.symbology is None else d.symbology + (d.data or "")

    def to_json(self) -> dict:
        d = self.decoded
        return {"symbology": d.symbology, "data": d.data, "ais": d.ais, "version": d.version,
                "parameters": {k: {"value": p.value, "grade": p.letter, "grade_num": p.grade}
                               for k, p in self.parameters.items()},
                "overall_grade": self.overall_grade, "error": d.error, "error_detail": d.detail,
                "calibrated": False, "note": self.note}


# --- the symbol's layout (ISO/IEC 16022 ECC 200) ---


@dataclass(frozen=True)
class Layout:
    n: int
    dark_fixed: np.ndarray  # n × n bool: the fixed pattern's dark modules
    fixed: np.ndarray  # n × n bool: module belongs to the fixed pattern
    codeword: np.ndarray  # n × n int: codeword index of a data module, −1 elsewhere
    bit: np.ndarray  # n × n int: the module's bit in its codeword (0 the most significant), −1 elsewhere
    block: np.ndarray  # codeword index → RS block
    ec_per_block: int
    segments: dict  # name → (rows, cols) index arrays in the (n + 2) × (n + 2) grid with the quiet-zone ring
    clock_top: np.ndarray  # columns of the top clock track's dark modules
    clock_right: np.ndarray  # rows of the right clock track's dark modules
    cw_modules: np.ndarray  # codeword × 8: flat indexes of its modules in the (n + 2)² grid
    block_onehot: np.ndarray  # codeword × block: 1 where the codeword belongs to the block
    seg_names: tuple  # fixed-pattern segments, in the order of seg_id
    seg_all: np.ndarray  # their modules' flat indexes in the (n + 2)² grid, one segment after another
    seg_id: np.ndarray  # the segment of each of those
    seg_size: np.ndarray
    rs_order: np.ndarray  # block × position: codeword index in RS order (data then checks), −1 = leading pad
    rs_power: np.ndarray  # position → its power of x in the block's polynomial
    fixed_ring: np.ndarray  # (n + 2)² flat bool: fixed pattern or quiet-zone ring
    dark_ring: np.ndarray  # (n + 2)² flat bool: dark there
    rs_exps: np.ndarray  # root × position: the power of α each position is raised to in a syndrome
    clock_window: np.ndarray  # dark clock module (top track, then right) × window: position along its track
    clock_u: np.ndarray  # dark clock module × window × across: the points sampled around it
    clock_v: np.ndarray
    fit_design: np.ndarray  # clock module × (a_u, b_u, a_v, b_v): the regular grid's positions
    fit_solve: np.ndarray  # its least-squares solution operator: (a_u, b_u, a_v, b_v) = fit_solve @ centres


def placement(nrow: int, ncol: int) -> np.ndarray:
    """ISO/IEC 16022 Annex F: the codeword (and bit: index·8 + bit, bit 0 the MSB) of each module
    of the mapping matrix; −2 for the unused corner that stays a fixed checker."""
    a = np.full((nrow, ncol), -1, dtype=np.int64)

    def mod(r, c, ch, bit):
        if r < 0:
            r += nrow
            c += 4 - ((nrow + 4) % 8)
        if c < 0:
            c += ncol
            r += 4 - ((ncol + 4) % 8)
        a[r, c] = ch * 8 + bit

    def utah(r, c, ch):
        for bit, (dr, dc) in enumerate(((-2, -2), (-2, -1), (-1, -2), (-1, -1), (-1, 0), (0, -2), (0, -1), (0, 0))):
            mod(r + dr, c + dc, ch, bit)

    def corner(ch, cells):
        for bit, (r, c) in enumerate(cells):
            mod(r, c, ch, bit)

    ch, row, col = 0, 4, 0
    while True:
        if row == nrow and col == 0:
            corner(ch, ((nrow - 1, 0), (nrow - 1, 1), (nrow - 1, 2), (0, ncol - 2), (0, ncol - 1),
                        (1, ncol - 1), (2, ncol - 1), (3, ncol - 1)))
            ch += 1
        if row == nrow - 2 and col == 0 and ncol % 4:
            corner(ch, ((nrow - 3, 0), (nrow - 2, 0), (nrow - 1, 0), (0, ncol - 4), (0, ncol - 3),
                        (0, ncol - 2), (0, ncol - 1), (1, ncol - 1)))
            ch += 1
        if row == nrow - 2 and col == 0 and ncol % 8 == 4:
            corner(ch, ((nrow - 3, 0), (nrow - 2, 0), (nrow - 1, 0), (0, ncol - 2), (0, ncol - 1),
                        (1, ncol - 1), (2, ncol - 1), (3, ncol - 1)))
            ch += 1
        if row == nrow + 4 and col == 2 and not ncol % 8:
            corner(ch, ((nrow - 1, 0), (nrow - 1, ncol - 1), (0, ncol - 3), (0, ncol - 2), (0, ncol - 1),
                        (1, ncol - 3), (1, ncol - 2), (1, ncol - 1)))
            ch += 1
        while True:  # up and to the right
            if row < nrow and col >= 0 and a[row, col] == -1:
                utah(row, col, ch)
                ch += 1
            row -= 2
            col += 2
            if not (row >= 0 and col < ncol):
                break
        row += 1
        col += 3
        while True:  # down and to the left
            if row >= 0 and col < ncol and a[row, col] == -1:
                utah(row, col, ch)
                ch += 1
            row += 2
            col -= 2
            if not (row < nrow and col >= 0):
                break
        row += 3
        col += 1
        if not (row < nrow or col < ncol):
            break
    if a[nrow - 1, ncol - 1] == -1:
        a[nrow - 1, ncol - 1] = a[nrow - 2, ncol - 2] = -3  # dark
        a[nrow - 1, ncol - 2] = a[nrow - 2, ncol - 1] = -2  # light
    return a


@lru_cache(maxsize=32)
def layout(n: int) -> Layout:
    region, data_cw, ec_cw, blocks = SIZES[n]
    per = n // (region + 2)  # data regions per side
    fixed = np.zeros((n, n), dtype=bool)
    dark = np.zeros((n, n), dtype=bool)
    for k in range(per):
        top, bottom = k * (region + 2), k * (region + 2) + region + 1
        fixed[top, :] = fixed[bottom, :] = fixed[:, top] = fixed[:, bottom] = True
        dark[bottom, :] = True  # the L's foot of each region
        dark[:, top] = True  # the L's upright of each region
        dark[top, ::2] = True  # clock track along the top
        dark[1::2, bottom] = True  # clock track along the right
        dark[top, 1::2] = False
    dark &= fixed
    m = placement(per * region, per * region)
    sym = np.full((n, n), -1, dtype=np.int64)
    rows = np.array([(i // region) * (region + 2) + 1 + i % region for i in range(per * region)])
    sym[np.ix_(rows, rows)] = m
    clock = fixed.copy()  # the frame's clock tracks and the inner solid patterns (not the L, not the corner)
    clock[:, 0] = False
    clock[n - 1, :] = False
    corner_dark = sym == -3
    dark |= corner_dark
    fixed |= corner_dark | (sym == -2)
    codeword = np.where(sym >= 0, sym // 8, -1)
    bit = np.where(sym >= 0, sym % 8, -1)
    assert codeword.max() + 1 == data_cw + ec_cw, (n, codeword.max())
    idx = np.arange(data_cw + ec_cw)
    block = np.where(idx < data_cw, idx % blocks, (idx - data_cw) % blocks)
    g = n + 2  # with the quiet-zone ring, index 0 and n + 1
    r_all = np.arange(1, n + 1)
    segments = {
        "L1": (r_all, np.ones(n, dtype=int)),  # the upright (left column)
        "L2": (np.full(n, n), r_all),  # the foot (bottom row)
        "QZL1": (r_all, np.zeros(n, dtype=int)),
        "QZL2": (np.full(n, g - 1), r_all),
    }
    cr, cc = np.nonzero(clock)
    segments["clock_and_solid"] = (cr + 1, cc + 1)
    top_dark = np.array([c for c in range(n) if dark[0, c] and (c == 0 or not dark[0, c - 1])
                         and (c == n - 1 or not dark[0, c + 1])])
    right_dark = np.array([r for r in range(n) if dark[r, n - 1] and (r == 0 or not dark[r - 1, n - 1])
                           and (r == n - 1 or not dark[r + 1, n - 1])])
    total = data_cw + ec_cw
    cw_modules = np.zeros((total, 8), dtype=np.intp)
    rr, cc = np.nonzero(codeword >= 0)
    cw_modules[codeword[rr, cc], bit[rr, cc]] = (rr + 1) * g + (cc + 1)
    onehot = np.zeros((total, blocks))
    onehot[np.arange(total), block] = 1.0
    flat = [r * g + c for r, c in segments.values()]
    members = [[i for i in range(data_cw) if i % blocks == b] + [data_cw + j for j in range(ec_cw) if j % blocks == b]
               for b in range(blocks)]
    width = max(map(len, members))
    rs_order = np.array([[-1] * (width - len(m)) + m for m in members])  # a leading zero changes no syndrome
    return Layout(n, dark, fixed, codeword, bit, block, ec_cw // blocks, segments, top_dark, right_dark,
                  cw_modules, onehot, tuple(segments), np.concatenate(flat),
                  np.concatenate([np.full(len(f), i) for i, f in enumerate(flat)]), np.array([len(f) for f in flat]),
                  rs_order, np.arange(width - 1, -1, -1), np.pad(fixed, 1, constant_values=True).ravel(),
                  np.pad(dark, 1).ravel(), np.arange(1, ec_cw // blocks + 1)[:, None] * np.arange(width - 1, -1, -1),
                  *_clock_points(n, top_dark, right_dark), *_grid_fit(top_dark, right_dark))


def _grid_fit(top: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k, m = len(top), len(right)
    design = np.zeros((k + m, 4))
    design[:k, 0], design[:k, 1] = 1.0, top + 0.5  # column centre = a_u + b_u · (c + ½)
    design[k:, 2], design[k:, 3] = 1.0, right + 0.5  # row centre = a_v + b_v · (r + ½)
    return design, np.linalg.pinv(design)


def _clock_points(n: int, top: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    along = np.concatenate([top, right])[:, None] + 0.5 + _WIN
    k = len(top)
    u = np.empty(along.shape + (len(_ACROSS),))
    v = np.empty_like(u)
    u[:k], v[:k] = along[:k, :, None], 0.5 + _ACROSS  # along the top track
    u[k:], v[k:] = n - 0.5 + _ACROSS, along[k:, :, None]  # down the right track
    return along, u, v


def _gf_tables() -> tuple[np.ndarray, np.ndarray]:
    exp, log = np.zeros(255, dtype=np.int64), np.zeros(256, dtype=np.int64)
    x = 1
    for i in range(255):
        exp[i], log[x] = x, i
        x <<= 1
        if x & 0x100:
            x ^= 0x12D  # GF(256) of ISO/IEC 16022
    return exp, log


_EXP, _LOG = _gf_tables()
_BITS = 1 << np.arange(7, -1, -1)


def rs_valid(dark_flat: np.ndarray, lay: Layout) -> bool:
    """Do the modules as sampled form a valid Reed–Solomon codeword in every block (all syndromes 0)?
    Then they are the nominal pattern: the only codeword within the correction radius of what was read."""
    values = dark_flat[lay.cw_modules] @ _BITS
    values = (np.append(values, 0) if lay.rs_order.min() < 0 else values)[lay.rs_order]  # block × position
    terms = _EXP[(_LOG[values][:, None, :] + lay.rs_exps) % 255]
    terms = np.where(values[:, None, :] != 0, terms, 0)
    return not np.bitwise_xor.reduce(terms, axis=2).any()


def nominal(dec: Decoded, n: int) -> np.ndarray | None:
    """The module pattern the decoded data gives when encoded again (None: another size came out)."""
    try:
        if dec.symbology == "]d2" and (dec.ais or dec.hri):
            content = writer_hri(list(dec.ais.items())) if dec.ais else dec.hri
            bc = zxingcpp.create_barcode(content, zxingcpp.BarcodeFormat.DataMatrix, gs1=True, force_square=True)
        else:
            bc = zxingcpp.create_barcode(dec.data, zxingcpp.BarcodeFormat.DataMatrix, force_square=True)
    except Exception:
        return None
    m = np.asarray(bc.to_image(scale=1, add_quiet_zones=False)) < 128
    return m if m.shape == (n, n) else None


# --- sampling the image ---

_AP = np.array([(0.0, 0.0), (-0.2, -0.2), (0.2, -0.2), (-0.2, 0.2), (0.2, 0.2)])  # inside the 0.8 X aperture
_WIN = np.linspace(-0.9, 0.9, 19)  # along a clock track
_ACROSS = np.array([-0.2, 0.0, 0.2])
_LEVELS = np.array([4, 3, 2, 1])
_MOD_UP = np.array(_MOD[::-1])  # ascending: the grade is how many thresholds a ratio reaches
_SCALE = 100.0 / 255.0  # grey level → % reflectance (uncalibrated)


class _Map:
    """Module coordinates (u across, v down, 0..n over the symbol) → image pixels: bilinear between
    the four corners zxing-cpp found."""

    def __init__(self, corners: np.ndarray, n: int):
        pts = corners.tolist()
        cx, cy = sum(p[0] for p in pts) / 4, sum(p[1] for p in pts) / 4
        # zxing-cpp reports the outermost pixels; their outer edges are half a pixel further out
        (ax, ay), (bx, by), (dx, dy), (ex, ey) = [
            (x + (0.5 if x > cx else -0.5) + 0.5, y + (0.5 if y > cy else -0.5) + 0.5) for x, y in pts]
        # tl = a, tr = b, br = d, bl = e: p(u, v) = a + (b − a)·u/n + (e − a)·v/n + (d − b − e + a)·uv/n²
        self.a = (ax, ay)
        self.b = ((bx - ax) / n, (by - ay) / n)
        self.c = ((ex - ax) / n, (ey - ay) / n)
        self.d = ((dx - bx - ex + ax) / (n * n), (dy - by - ey + ay) / (n * n))

    def __call__(self, u, v):
        uv = u * v
        return (self.a[0] + self.b[0] * u + self.c[0] * v + self.d[0] * uv,
                self.a[1] + self.b[1] * u + self.c[1] * v + self.d[1] * uv)

    def inside(self, n: int, w: int, h: int) -> bool:
        """Does every point the grader samples (≤ 2 modules outside the symbol) fall on the image?"""
        xs, ys = zip(*(self(u, v) for u in (-2.0, n + 2.0) for v in (-2.0, n + 2.0)))
        return min(xs) >= 0 and min(ys) >= 0 and max(xs) < w and max(ys) < h


def _sample(img: np.ndarray, x, y, inside: bool) -> np.ndarray:
    """The pixels under (x, y); off the image, its nearest edge pixel."""
    h, w = img.shape
    if inside:  # x, y ≥ 0: truncation is the floor
        return img.ravel().take(y.astype(np.intp) * w + x.astype(np.intp))
    xi = np.minimum(np.maximum(x, 0), w - 1).astype(np.intp)
    yi = np.minimum(np.maximum(y, 0), h - 1).astype(np.intp)
    return img.ravel().take(yi * w + xi)


_UEC_UP = np.array(_UEC[::-1])
_FPD_UP = np.array(_FPD)  # already ascending: lower is better


def _overlay(cw_grades: np.ndarray, cw_error: np.ndarray, lay: Layout) -> list[int]:
    """ISO/IEC 15415 grade overlay, for each row of `cw_grades` (parameter × codeword): at each grade
    level the codewords below it are erasures (one check each), codewords read wrong errors (two);
    notional UEC per RS block, the worst block; the grade is the best min(level, notional UEC grade)."""
    erased = (cw_grades[:, None, :] < _LEVELS[None, :, None]) & ~cw_error
    spent = (erased + 2.0 * cw_error) @ lay.block_onehot  # parameter × level × block
    uec = 1.0 - spent.max(axis=2) / lay.ec_per_block  # parameter × level
    got = np.minimum(_LEVELS, np.searchsorted(_UEC_UP, uec, side="right"))
    return got.max(axis=1).tolist()


def _segment_grades(module_grades: np.ndarray, lay: Layout) -> dict[str, tuple[int, float]]:
    """Each fixed-pattern segment: at each level its modules below it are damage, graded against the
    damage thresholds; the segment's grade is the best min(level, damage grade) (Annex M's overlay)."""
    nseg = len(lay.seg_names)
    counts = np.bincount(lay.seg_id * 5 + module_grades[lay.seg_all], minlength=nseg * 5).reshape(nseg, 5)
    damaged = np.cumsum(counts, axis=1)[:, 3::-1] / lay.seg_size[:, None]  # segment × level 4..1: share below
    got = np.minimum(_LEVELS, 4 - np.searchsorted(_FPD_UP, damaged - 1e-12, side="left"))
    best = got.argmax(axis=1)
    rows = np.arange(nseg)
    return dict(zip(lay.seg_names, zip(got[rows, best].tolist(), damaged[rows, best].tolist())))


def grade(image: np.ndarray, decoded: Decoded | None = None, *, inverted: bool = False) -> Result:
    """Decode (unless `decoded` is given) and grade one greyscale (or RGB) image; `inverted`: it is the
    negative of what was imaged."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    dec = decoded if decoded is not None else decode(img)
    res = Result(dec)
    if dec.error == NO_READ:
        res.parameters["decode"] = Parameter("fail", 0)
        return res
    n = int(dec.version.partition("x")[0]) if dec.version and dec.version.partition("x")[0].isdigit() else 0
    if n not in SIZES or dec.corners is None:
        res.parameters["decode"] = Parameter("pass", 4)
        res.detail["ungraded"] = f"symbol size {dec.version} is not a square ECC 200 size"
        return res
    lay = layout(n)
    at = _Map(dec.corners, n)
    inside = at.inside(n, img.shape[1], img.shape[0])
    idx = np.arange(-1, n + 1) + 0.5  # module centres with the quiet-zone ring

    # the clock tracks locate the columns (top track) and the rows (right track): the centroid of
    # darkness around each dark clock module, darkness against the tracks' own mid-level
    xc, yc = at(lay.clock_u, lay.clock_v)
    samples = _sample(img, xc, yc, inside).astype(np.float32)
    gt0 = (samples.max() + samples.min()) / 2
    w = np.maximum(gt0 - samples, 0).sum(axis=2)
    tot = w.sum(axis=1)
    centre = np.where(tot > 0, (w * lay.clock_window).sum(axis=1) / np.maximum(tot, 1e-9), lay.clock_window[:, 9])
    fit = lay.fit_solve @ centre
    au, bu, av, bv = fit.tolist()
    off = np.abs(centre - lay.fit_design @ fit)  # each clock module's distance from the regular grid
    ucol, vrow = au + bu * idx, av + bv * idx
    # module pitch in pixels along each axis at the clock tracks (the map is linear in u at a fixed v)
    xs = bu * float(np.hypot(at.b[0] + at.d[0] * 0.5, at.b[1] + at.d[1] * 0.5))
    ys = bv * float(np.hypot(at.c[0] + at.d[0] * (n - 0.5), at.c[1] + at.d[1] * (n - 0.5)))
    pitch = (xs + ys) / 2
    an = abs(xs - ys) / pitch
    k = len(lay.clock_top)
    gn = max(float(off[:k].max()) * xs / max(bu, 1e-9), float(off[k:].max()) * ys / max(bv, 1e-9)) / pitch

    # every module (and the quiet-zone ring) through the synthetic aperture
    x, y = at(ucol[None, :], vrow[:, None])
    ax = at.b[0] * _AP[:, 0] + at.c[0] * _AP[:, 1]  # the aperture's offsets: the grid is near affine
    ay = at.b[1] * _AP[:, 0] + at.c[1] * _AP[:, 1]
    r = _sample(img, x[:, :, None] + ax, y[:, :, None] + ay, inside).sum(axis=2) * (_SCALE / len(_AP))  # %
    rmax, rmin = float(r.max()), float(r.min())
    sc = rmax - rmin
    gt = (rmax + rmin) / 2
    ratio = np.abs(r - gt) * (2 / max(sc, 1e-9))
    mod_g = np.searchsorted(_MOD_UP, ratio, side="right")
    seen_dark = r < gt
    if not inverted and r[1:-1, 1].sum() > r[1:-1, 0].sum():
        # light on dark (zxing-cpp reads it inverted): the L's upright is lighter than its quiet zone;
        # grade the negative, which has the same contrast and modulation
        return grade(255 - img, dec, inverted=True)

    seen_flat = seen_dark.ravel()
    as_read = np.where(lay.fixed_ring, lay.dark_ring, seen_flat)  # the fixed patterns are always known
    nom, source = as_read, "read, RS-valid"
    if not rs_valid(seen_flat, lay):
        core, source = nominal(dec, n), "re-encoded"
        if core is not None:
            nom = np.zeros((n + 2, n + 2), dtype=bool)
            nom[1:-1, 1:-1] = core
            nom = nom.ravel()
            if ((nom != seen_flat)[lay.cw_modules].any(axis=1) @ lay.block_onehot >= lay.ec_per_block).any():
                core = None  # another encoder's encodation: this pattern is not what was printed
        if core is None:
            nom, source = as_read, "as sampled"  # codeword errors are then only what zxing-cpp's UEC says
    right_side = nom == seen_flat
    mod_flat = mod_g.ravel()
    rm_flat = np.where(right_side, mod_flat, 0)

    cwm = lay.cw_modules
    wrong_cw = ~right_side[cwm].all(axis=1)
    mod_grade, rm_grade = _overlay(np.stack([mod_flat[cwm].min(axis=1), rm_flat[cwm].min(axis=1)]), wrong_cw, lay)
    own_uec = float(max(0.0, 1 - 2 * (wrong_cw @ lay.block_onehot).max() / lay.ec_per_block))

    seg = _segment_grades(rm_flat, lay)
    fpd = min(g for g, _ in seg.values())
    fpd_share = max(sh for g, sh in seg.values() if g == fpd)

    uec = dec.uec if dec.uec is not None else own_uec
    data_ratio = ratio.ravel()[cwm]
    p = res.parameters
    p["decode"] = Parameter("pass", 4)
    p["symbol_contrast"] = Parameter(round(sc, 1), _at_least(sc, _SC))
    p["modulation"] = Parameter(round(float(data_ratio.min()), 3), mod_grade)
    p["reflectance_margin"] = Parameter(round(float(np.where(right_side[cwm], data_ratio, 0.0).min()), 3), rm_grade)
    p["fixed_pattern_damage"] = Parameter(round(fpd_share, 3), fpd)
    p["axial_nonuniformity"] = Parameter(round(float(an), 3), _at_most(an, _AN))
    p["grid_nonuniformity"] = Parameter(round(gn, 3), _at_most(gn, _GN))
    p["unused_error_correction"] = Parameter(round(float(uec), 3), _at_least(uec, _UEC))
    res.overall = 0 if dec.error else min(x.grade for x in p.values())
    res.detail = {"segments": {k: {"grade": LETTERS[g], "damaged": round(sh, 3)} for k, (g, sh) in seg.items()},
                  "own_uec": round(own_uec, 3), "nominal": source, "inverted": inverted, "rmax": round(rmax, 1), "rmin": round(rmin, 1),
                  "module_px": round(pitch, 2)}
    return res
