"""render() computes the camera's map of the print raster once per symbol size and geometry, and boxes
only the sampled pixels: its images are byte for byte those of the former whole-raster render (kept
here as the reference) over a corpus of every defect, footprint sizes 1..3 cells and both encodings."""

import math

import numpy as np
import pytest

from serialine.host import gs1
from serialine.host.verify.render import (_K, INK, NOZZLES_PER_MODULE, SUBSTRATE, Defects, _blur, _camera_map,
                                          _dilate, apply_print, clogged, encode, render)

CODES = [gs1.element_string(gs1.pack_pairs("09506000134352", f"SN{i:010d}", "LOT2612", gs1.parse_expiry("2027-06-30")))
         for i in range(3)]


def _render_reference(code: str, defects: Defects = Defects(), *, width: int = 640, height: int = 480,
           module_px: float = 6.0, seed: int = 0, gs1_mode: bool = True,
           matrix: np.ndarray | None = None) -> np.ndarray:
    """render() as it was before its camera map was cached: the whole raster boxed, then sampled."""
    d = defects
    m = apply_print(encode(code, gs1_mode=gs1_mode) if matrix is None else matrix, d, seed)
    n_rows, n_cols = m.shape
    pad = 4  # quiet zone in modules (ISO/IEC 16022 asks ≥ 1)
    grid = np.zeros((n_rows + 2 * pad, n_cols + 2 * pad), dtype=bool)
    grid[pad:pad + n_rows, pad:pad + n_cols] = m
    if d.quiet_zone > 0:  # a foreign mark in the quiet zone beside the L's upright, from the bottom up
        h = int(round(d.quiet_zone * n_rows))
        grid[pad + n_rows - h:pad + n_rows, pad - 1] = True
    ink = np.kron(grid, np.ones((_K, _K), dtype=np.uint8)).astype(bool)
    line = _K // NOZZLES_PER_MODULE
    for z in clogged(n_rows, seed)[:d.missing_dots]:  # before the spread: neighbours' ink bleeds in
        top = (pad * NOZZLES_PER_MODULE + z) * line
        ink[top:top + line, pad * _K:(pad + n_cols) * _K] = False
    gain = int(round(d.dot_gain * _K))
    if gain > 0:
        ink = _dilate(ink, gain)
    elif gain < 0:
        ink = ~_dilate(~ink, -gain)

    # camera pixel → print raster: inverse of rotation · shear · scale about the symbol's centre
    th, sk = math.radians(d.rotation_deg), math.tan(math.radians(d.skew_deg))
    fwd = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]]) @ np.array([[1.0, sk], [0.0, 1.0]])
    inv = np.linalg.inv(fwd * module_px)
    gh, gw = grid.shape
    centre = np.array([gw / 2, gh / 2])
    corners = (np.array([[0, 0], [gw, 0], [0, gh], [gw, gh]]) - centre) @ (fwd * module_px).T
    x0, y0 = np.floor(corners.min(0) + [width / 2, height / 2]).astype(int)
    x1, y1 = np.ceil(corners.max(0) + [width / 2, height / 2]).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    margin = 2 + int(math.ceil(d.smear * module_px))  # the blurs reach this far past the print
    x0, y0 = max(x0 - margin, 0), max(y0 - margin, 0)
    x1, y1 = min(x1 + margin, width), min(y1 + margin, height)
    # each camera pixel sees the raster's mean over its footprint: a box of b × b cells, then one sample
    b = max(1, int(round(_K / module_px)))
    inkf = ink.astype(np.float32)
    if b > 1:
        padded = np.pad(inkf, ((b // 2, b - 1 - b // 2), (b // 2, b - 1 - b // 2)))
        h, w = inkf.shape
        acc = np.zeros_like(inkf)
        for i in range(b):
            for j in range(b):
                acc += padded[i:i + h, j:j + w]
        inkf = acc * np.float32(1.0 / (b * b))
    inkf = np.pad(inkf, 1)  # a bare border: points off the raster clip onto it
    h_ink, w_ink = inkf.shape
    xs = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - width / 2)
    ys = np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - height / 2)
    inv_k = (inv * _K).astype(np.float32)
    ck = (centre * _K + 1).astype(np.float32)
    iu = np.clip(inv_k[0, 0] * xs[None, :] + inv_k[0, 1] * ys[:, None] + ck[0], 0, w_ink - 1).astype(np.intp)
    iv = np.clip(inv_k[1, 0] * xs[None, :] + inv_k[1, 1] * ys[:, None] + ck[1], 0, h_ink - 1).astype(np.intp)
    cov = inkf.ravel().take(iv * w_ink + iu)

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



def _corpus():
    rng = np.random.default_rng(7)
    yield Defects(), 6.0
    yield Defects(dot_gain=0.5, quiet_zone=1.0, contrast=0.3), 4.0  # footprint 3 × 3
    yield Defects(dot_gain=-0.3, smear=4.0, missing_dots=40, noise=0.2), 12.0  # footprint 1
    yield Defects(rotation_deg=90.0, skew_deg=-30.0, flipped=25), 5.0
    for _ in range(12):
        yield Defects(dot_gain=float(rng.uniform(-0.2, 0.6)), smear=float(rng.uniform(0, 3)),
                      contrast=float(rng.uniform(0.2, 1.0)), skew_deg=float(rng.uniform(-20, 20)),
                      rotation_deg=float(rng.uniform(-360, 360)), noise=float(rng.uniform(0, 0.3)),
                      missing_dots=int(rng.integers(0, 60)), quiet_zone=float(rng.uniform(0, 1))), \
            float(rng.choice([3.0, 4.0, 5.5, 6.0, 8.0, 12.0]))


@pytest.mark.parametrize("k", range(16))
def test_render_is_byte_identical_to_the_whole_raster_render(k):
    d, px = list(_corpus())[k]
    for i, code in enumerate(CODES):
        for w, h in ((640, 480), (200, 150)):  # the small frame cuts the symbol: off-raster clipping
            assert np.array_equal(render(code, d, width=w, height=h, module_px=px, seed=k + i),
                                  _render_reference(code, d, width=w, height=h, module_px=px, seed=k + i))
    plain = render("not gs1", d, module_px=px, seed=3, gs1_mode=False)
    assert np.array_equal(plain, _render_reference("not gs1", d, module_px=px, seed=3, gs1_mode=False))


def test_the_camera_map_is_computed_once_per_geometry_and_cannot_be_changed():
    _camera_map.cache_clear()
    d = Defects(rotation_deg=4.0, skew_deg=0.5, noise=0.02)
    for i in range(5):
        render(CODES[i % 3], d, seed=i)
    info = _camera_map.cache_info()
    assert info.misses == 1 and info.hits == 4
    base = _camera_map(30, 30, 640, 480, 6.0, 4.0, 0.5, 0.0)[4]
    with pytest.raises(ValueError):
        base[0, 0] = 0
