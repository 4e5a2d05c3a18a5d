"""`serialine verify` on image files the test writes."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from serialine.host import cli, gs1
from serialine.host.verify.render import Defects, render

CODE = "0109506000134352" "17261231" "10L1" + gs1.GS + "21ABC123"


@pytest.fixture
def images(tmp_path):
    paths = {}
    for name, img in (("clean", render(CODE)), ("smeared", render(CODE, Defects(smear=1.0), seed=2)),
                      ("plain", render("HELLO", gs1_mode=False)), ("blank", render(CODE, Defects(contrast=0.0)))):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(img).save(paths[name])
    (tmp_path / "junk.png").write_text("not a picture")
    paths["junk"] = tmp_path / "junk.png"
    paths["missing"] = tmp_path / "missing.png"
    return {k: str(v) for k, v in paths.items()}


def run(capsys, *args):
    rc = cli.main(["verify", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_one_object_per_image(capsys, images):
    rc, out, err = run(capsys, images["clean"], images["smeared"], "--json")
    lines = out.splitlines()
    assert rc == 0 and err == "" and len(lines) == 2
    clean, smeared = map(json.loads, lines)
    assert clean["symbology"] == "]d2" and clean["data"] == CODE and clean["error"] is None
    assert clean["overall_grade"] == "A" and clean["calibrated"] is False
    assert clean["ais"] == {"01": "09506000134352", "17": "261231", "10": "L1", "21": "ABC123"}
    assert set(clean["parameters"]) == {"decode", "symbol_contrast", "modulation", "reflectance_margin",
                                        "fixed_pattern_damage", "axial_nonuniformity", "grid_nonuniformity",
                                        "unused_error_correction"}
    assert all(p["grade"] == "A" for p in clean["parameters"].values())
    assert smeared["parameters"]["modulation"]["grade"] in "BCD" and smeared["overall_grade"] in "BCD"


def test_table_shows_parameters_ais_and_the_expected_code(capsys, images):
    rc, out, _ = run(capsys, images["clean"], "--expect", "(01)09506000134352(17)261231(10)L1(21)ABC123")
    assert rc == 0
    for text in ("symbol contrast", "unused error correction", "overall", "(21) ABC123", "equals the expected",
                 "no calibrated optics"):
        assert text in out
    rc, out, _ = run(capsys, images["clean"], "--expect", "0109506000134352" "17261231" "10L1\x1d21ABC124")
    assert rc == 1 and "differs from the expected" in out


def test_not_gs1_and_no_read_are_errors_with_exit_1(capsys, images):
    rc, out, _ = run(capsys, images["plain"], images["blank"], "--json")
    plain, blank = map(json.loads, out.splitlines())
    assert rc == 1
    assert plain["error"] == "not_gs1" and plain["symbology"] == "]d1" and plain["overall_grade"] == "F"
    assert blank["error"] == "no_read" and blank["overall_grade"] == "F"


@pytest.mark.parametrize("which,why", [("missing", "no such file"), ("junk", "not an image file")])
def test_unreadable_file_is_one_line_and_exit_1(capsys, images, which, why):
    rc, out, err = run(capsys, images[which])
    assert rc == 1 and out == "" and err == f"serialine verify: {images[which]}: {why}\n"
    rc, out, err = run(capsys, images[which], images["clean"], "--json")
    first, second = map(json.loads, out.splitlines())
    assert rc == 1 and first["error"] == "unreadable" and first["error_detail"] == why
    assert second["overall_grade"] == "A"


def test_bad_expect_is_usage(capsys, images):
    rc, out, err = run(capsys, images["clean"], "--expect", "(01)09506000134353")
    assert rc == 2 and out == "" and "check digit" in err and len(err.splitlines()) == 1


from hypothesis import given, settings, strategies as st  # noqa: E402

from serialine.host.verify.cli import expected_ais  # noqa: E402


@settings(max_examples=60, deadline=None, derandomize=True)
@given(serial=st.text(alphabet=sorted(gs1.CSET82 - {"("}), min_size=1, max_size=20),
       lot=st.text(alphabet=sorted(gs1.CSET82 - {"("}), min_size=1, max_size=20))
def test_expect_reads_the_same_code_in_either_form(serial, lot):
    import datetime as dt
    pairs = gs1.pack_pairs("09506000134352", serial, lot, dt.date(2027, 6, 30))
    code = gs1.element_string(pairs)
    assert expected_ais(code) == expected_ais("]d2" + code) == expected_ais(gs1.hri(pairs)) == dict(pairs)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(text=st.text(max_size=40))
def test_expect_refuses_anything_else_in_one_gs1_error(text):
    try:
        ais = expected_ais(text)
    except gs1.GS1Error as exc:
        assert "\n" not in str(exc)
    else:
        assert ais and all(isinstance(v, str) for v in ais.values())


def test_bench_verify_prints_a_table_then_one_json_line(capsys):
    from serialine.tools import bench
    assert bench.main(["verify", "--symbols", "4", "--repeat", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(out[-1])
    assert figures["symbols"] == 4 and figures["image"] == "640x480"
    for key in ("render_ms_p50", "decode_ms_p50", "grade_ms_p50", "grade_to_decode_ratio", "verify_per_s"):
        assert figures[key] > 0, key
    assert sum(figures["overall_grades"].values()) == 4
