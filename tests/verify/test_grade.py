"""The grader against a corpus the tests generate (seeded: every image is the same on every run)."""

from __future__ import annotations

import numpy as np
import pytest
import zxingcpp
from hypothesis import given, settings, strategies as st

from serialine.host import gs1
from serialine.host.verify import decode as dec_mod
from serialine.host.verify.grade import NAMES, SIZES, grade, layout
from serialine.host.verify.render import Defects, RenderError, encode, render

CODE = "0109506000134352" "17261231" "10L1" + gs1.GS + "21ABC123"
CODES = [CODE, "0109506000134352172612311025A\x1d21Q7", "010950600013435217270100" "10LOT-2026-11-30\x1d21SN000000000001",
         "0104012345123456" "17281130" "10B12\x1d21" + "9" * 20 + "\x1d7109" + "12345678",
         # 36 × 36: four data regions
         "0109506000134352" "17261231" "10" + "L" * 20 + "\x1d21" + "S" * 20 + "\x1d240" + "X" * 30]


def grades(res) -> dict[str, int]:
    return {name: (res.parameters[name].grade if name in res.parameters else 0) for name in NAMES}


# --- the symbol's structure (ISO/IEC 16022) agrees with zxing-cpp's encoder ---

_EXP, _LOG = [0] * 512, [0] * 256
_x = 1
for _i in range(255):
    _EXP[_i] = _x
    _LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x12D  # the Data Matrix field polynomial
for _i in range(255, 512):
    _EXP[_i] = _EXP[_i - 255]


def _syndromes(cws: list[int], d: int) -> list[int]:
    out = []
    for i in range(1, d + 1):
        s = 0
        for c in cws:
            s = (_EXP[_LOG[s] + i] if s else 0) ^ c
        out.append(s)
    return out


def _symbol_of_size(n: int) -> np.ndarray:
    for length in range(1, 3200):
        m = np.asarray(zxingcpp.create_barcode("7" * length, zxingcpp.BarcodeFormat.DataMatrix,
                                               force_square=True).to_image(scale=1, add_quiet_zones=False)) < 128
        if m.shape[0] >= n:
            assert m.shape == (n, n)
            return m
    raise AssertionError(n)


@pytest.mark.parametrize("n", [10, 12, 18, 22, 26, 32, 52, 64, 104, 144])
def test_layout_reads_zxing_symbols_as_valid_reed_solomon_codewords(n):
    """Placement (Annex F), data regions, interleaving: every block's syndromes are zero, and the
    fixed pattern is where the layout says."""
    m = _symbol_of_size(n)
    lay = layout(n)
    assert (m[lay.fixed] == lay.dark_fixed[lay.fixed]).all()
    total = lay.block.size
    cws = [0] * total
    for (r, c), k in np.ndenumerate(lay.codeword):
        if k >= 0 and m[r, c]:
            cws[k] |= 0x80 >> lay.bit[r, c]
    _, data_cw, ec_cw, blocks = SIZES[n]
    for b in range(blocks):
        block = [cws[i] for i in range(data_cw) if i % blocks == b] + \
                [cws[data_cw + j] for j in range(ec_cw) if j % blocks == b]
        assert _syndromes(block, ec_cw // blocks) == [0] * (ec_cw // blocks)


# --- clean symbols ---


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("rotation", [0.0, 90.0, 33.0, 180.0, 271.0])
def test_clean_symbol_grades_A_on_every_parameter(code, rotation):
    res = grade(render(code, Defects(rotation_deg=rotation), seed=3))
    assert res.error is None
    assert grades(res) == {name: 4 for name in NAMES}, {k: (p.value, p.letter) for k, p in res.parameters.items()}
    assert res.overall_grade == "A"
    assert res.read_text == "]d2" + code  # what the simulated camera will report


def test_light_on_dark_symbol_is_graded_as_its_negative():
    res = grade(255 - render(CODE, Defects(rotation_deg=40), seed=2))
    assert res.detail["inverted"] is True and res.decoded.data == CODE
    assert grades(res) == {name: 4 for name in NAMES}
    assert grade(render(CODE)).detail["inverted"] is False


def test_render_is_deterministic():
    d = Defects(noise=0.05, missing_dots=3, flipped=2)
    assert np.array_equal(render(CODE, d, seed=7), render(CODE, d, seed=7))
    assert not np.array_equal(render(CODE, d, seed=7), render(CODE, d, seed=8))


# --- each defect lowers its parameter, monotonically with its strength ---

LADDERS = [
    ("dot_gain", [0.0, 0.1, 0.15, 0.2, 0.3], "modulation"),
    ("dot_gain", [0.0, -0.1, -0.2, -0.3], "modulation"),
    ("missing_dots", [0, 2, 4, 8, 16], "unused_error_correction"),
    ("smear", [0.0, 0.5, 1.0, 1.5, 2.5], "modulation"),
    ("contrast", [1.0, 0.8, 0.6, 0.45, 0.3, 0.15], "symbol_contrast"),
    ("skew_deg", [0.0, 10.0, 20.0, 25.0, 30.0], "axial_nonuniformity"),
    ("quiet_zone", [0.0, 0.05, 0.1, 0.2, 0.4], "fixed_pattern_damage"),
    ("noise", [0.0, 0.1, 0.2, 0.3], "modulation"),
    ("flipped", [0, 2, 4, 6, 8, 12], "unused_error_correction"),
]


@pytest.mark.parametrize("defect,strengths,param", LADDERS, ids=[f"{d}{s[-1]}" for d, s, _ in LADDERS])
def test_defect_lowers_its_parameter_and_the_overall_grade_monotonically(defect, strengths, param):
    seen_param, seen_overall = [], []
    for s in strengths:
        res = grade(render(CODE, Defects(**{defect: s}), seed=5))
        seen_param.append(grades(res)[param])
        seen_overall.append(res.overall)
    assert seen_param[0] == 4 and seen_overall[0] == 4
    assert seen_param == sorted(seen_param, reverse=True), seen_param
    assert seen_overall == sorted(seen_overall, reverse=True), seen_overall
    assert seen_param[-1] < 4 and seen_overall[-1] < 4
    assert any(0 < g < 4 for g in seen_param), f"{param} never graded between A and F: {seen_param}"


def test_rotation_is_not_a_defect():
    for angle in (0.0, 10.0, 45.0, 135.0, 222.0, 300.0):
        assert grade(render(CODE, Defects(rotation_deg=angle), seed=1)).overall_grade == "A", angle


def test_uec_falls_as_modules_are_flipped_and_agrees_with_zxing():
    uecs = []
    for k in range(0, 11):
        res = grade(render(CODE, Defects(flipped=k), seed=11))
        assert res.error is None, k
        # our codeword count = zxing's (zxing-cpp gives UEC floored to 2 decimals)
        assert res.detail["own_uec"] == pytest.approx(res.decoded.uec, abs=0.0101), k
        uecs.append(res.parameters["unused_error_correction"].value)
    assert uecs == sorted(uecs, reverse=True) and uecs[0] == 1.0 and uecs[-1] < 0.25, uecs
    assert grade(render(CODE, Defects(flipped=40), seed=11)).error == dec_mod.NO_READ


# --- refusals ---


@pytest.mark.parametrize("defects", [Defects(dot_gain=0.6), Defects(smear=5.0), Defects(contrast=0.0),
                                     Defects(missing_dots=60), Defects(noise=0.6)])
def test_symbol_past_the_decoders_limit_is_no_read(defects):
    res = grade(render(CODE, defects, seed=2))
    assert res.error == "no_read" and res.overall_grade == "F"
    assert list(res.parameters) == ["decode"] and res.parameters["decode"].letter == "F"
    assert res.to_json()["symbology"] is None and res.read_text is None


def test_non_gs1_datamatrix_is_refused_as_not_gs1():
    res = grade(render("HELLO SERIALINE 42", gs1_mode=False))
    assert res.error == "not_gs1" and res.decoded.symbology == "]d1" and res.overall_grade == "F"
    assert res.parameters["symbol_contrast"].letter == "A"  # still graded: the print is fine, the data is not


def test_gs1_symbol_with_an_invalid_element_string_is_not_gs1():
    bad = np.asarray(zxingcpp.create_barcode("(01)09506000134353(21)X", zxingcpp.BarcodeFormat.DataMatrix, gs1=True,
                                             force_square=True).to_image(scale=1, add_quiet_zones=False)) < 128
    res = grade(render("", matrix=bad))
    assert res.decoded.symbology == "]d2" and res.error == "not_gs1" and "check digit" in res.decoded.detail


@pytest.mark.parametrize("pairs,symbology", [
    ([("01", "09506000134352"), ("21", "ABC123")], "]d2"),  # an ECC 200 rectangle
    ([("01", "09506000134352"), ("17", "261231"), ("10", "L1"), ("21", "ABC123")], "]d8"),  # DMRE
])
def test_rectangle_is_refused_as_not_square(pairs, symbology):
    rect = np.asarray(zxingcpp.create_barcode(gs1.hri(pairs), zxingcpp.BarcodeFormat.DataMatrix, gs1=True)
                      .to_image(scale=1, add_quiet_zones=False)) < 128
    assert rect.shape[0] != rect.shape[1]
    res = grade(render("", matrix=rect))
    assert res.decoded.symbology == symbology
    assert res.error == "not_square" and res.overall_grade == "F"


@pytest.mark.parametrize("values,message", [
    ({"smudge": 1}, "unknown defect 'smudge'"), ({"missing_dots": 2.5}, "want a whole number in 0..400"),
    ({"contrast": float("nan")}, "contrast = nan"), ({"noise": "0.1"}, "noise = '0.1'"),
    ({"skew_deg": True}, "skew_deg = True"),
])
def test_defects_from_a_scenario_table_are_checked(values, message):
    with pytest.raises(RenderError, match=message):
        Defects.from_mapping(values, where="scenario.toml [print]")
    assert Defects.from_mapping({"smear": 1, "missing_dots": 3}) == Defects(smear=1, missing_dots=3)


def test_render_refuses_what_it_cannot_print():
    with pytest.raises(RenderError, match="contrast"):
        Defects(contrast=1.5)
    with pytest.raises(RenderError, match="missing_dots"):
        Defects(missing_dots=-1)
    with pytest.raises(RenderError, match="cannot print"):
        encode("0109506000134353")  # bad check digit


# --- the grader's decode is zxing-cpp's ---


@pytest.mark.parametrize("defects", [Defects(), Defects(rotation_deg=20, noise=0.05), Defects(flipped=5),
                                     Defects(smear=1.0, skew_deg=8)])
def test_graders_decode_equals_zxing(defects):
    for code in CODES:
        img = render(code, defects, seed=4)
        ref = zxingcpp.read_barcode(img, formats=zxingcpp.BarcodeFormat.DataMatrix)
        res = grade(img)
        assert res.decoded.symbology == ref.symbology_identifier == "]d2"
        assert res.decoded.data == ref.bytes.decode("latin-1")
        assert res.decoded.data == code  # the exact element string, FNC1 first (the identifier says so)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(serial=st.text(alphabet=sorted(gs1.CSET82), min_size=1, max_size=20),
       lot=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20))
def test_any_pack_code_round_trips_through_print_and_grade(serial, lot):
    import datetime as dt
    pairs = gs1.pack_pairs("09506000134352", serial, lot, dt.date(2027, 6, 30))
    code = gs1.element_string(pairs)
    res = grade(render(code, seed=1))
    assert res.error is None and list(res.decoded.ais.items()) == pairs
    assert res.overall_grade == "A"


def test_a_read_that_is_rs_valid_is_the_nominal_pattern():
    """The grader takes a Reed–Solomon-valid read as the nominal (no re-encode); it is the pattern the
    encoder gives, and a read with codeword errors is not RS-valid."""
    from serialine.host.verify.grade import nominal, rs_valid
    n = 22
    for code in CODES[:2]:
        clean = grade(render(code, Defects(rotation_deg=12), seed=1))
        assert clean.detail["nominal"] == "read, RS-valid"
        m = encode(code)
        ring = np.zeros((m.shape[0] + 2, m.shape[1] + 2), dtype=bool)
        ring[1:-1, 1:-1] = m
        assert rs_valid(ring.ravel(), layout(m.shape[0])) and np.array_equal(nominal(clean.decoded, m.shape[0]), m)
    flipped = grade(render(CODE, Defects(flipped=3), seed=1))
    assert flipped.detail["nominal"] == "re-encoded" and flipped.detail["own_uec"] < 1.0
    assert n == encode(CODE).shape[0]


def test_symbol_at_the_frame_edge_is_graded_from_the_pixels_there():
    """Sample points past the frame take its edge pixels (the clipped path of the sampler)."""
    res = grade(render(CODE, width=146, height=146, module_px=6.0))
    assert res.error is None and res.decoded.data == CODE
    assert res.parameters["symbol_contrast"].letter == "A" and res.parameters["unused_error_correction"].value == 1.0


def _gf_mul(a: int, b: int) -> int:
    return _EXP[_LOG[a] + _LOG[b]] if a and b else 0


def _rs_checks(data: list[int], k: int) -> list[int]:
    gen = [1]
    for i in range(1, k + 1):  # Π (x − α^i)
        gen = [a ^ _gf_mul(b, _EXP[i]) for a, b in zip(gen + [0], [0] + gen)]
    rem = [0] * k
    for c in data:
        f = c ^ rem[0]
        rem = [r ^ _gf_mul(f, g) for r, g in zip(rem[1:] + [0], gen[1:])]
    return rem


def test_a_symbol_from_another_encoder_is_graded_as_sampled():
    """'12' as two ASCII digits (50, 51) where zxing-cpp's writer packs the pair (142): a valid symbol
    the re-encode does not reproduce; the grader notices and takes the read as the nominal."""
    n = 10
    lay = layout(n)
    data = [50, 51, 129]
    cws = data + _rs_checks(data, 5)
    m = lay.dark_fixed.copy()
    for (r, c), k in np.ndenumerate(lay.codeword):
        if k >= 0:
            m[r, c] = bool(cws[k] & (0x80 >> lay.bit[r, c]))
    res = grade(render("", matrix=m, module_px=10.0))
    assert res.decoded.data == "12" and res.decoded.symbology == "]d1" and res.error == "not_gs1"
    assert res.detail["nominal"] == "read, RS-valid" and res.parameters["reflectance_margin"].letter == "A"
    m[3, 3] = not m[3, 3]  # one codeword wrong: no longer RS-valid, the re-encode is not this symbol
    res = grade(render("", matrix=m, module_px=10.0))
    assert res.decoded.data == "12" and res.detail["nominal"] == "as sampled"
    assert res.parameters["unused_error_correction"].value < 1.0
