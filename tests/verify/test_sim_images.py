"""Images in the simulated line (`[print] images = true`): the camera decodes (zxing-cpp) and grades a
rendered print, the whole loop keeps its invariants, image-level smear and missing dots are rejected
for the right reasons, and a slowly fading print is alarmed (PRINT_QUALITY_DRIFT) before its first
LOW_GRADE reject."""

import re
import sqlite3
from dataclasses import replace

import pytest

from serialine.host.sim import scenario
from serialine.host.sim.camera import imager_for
from serialine.host.verify.imager import Imager

CODES = ["01095060001343521728113010L00001-1\x1d21P00F0YNY3P", "01095060001343521728113010L00001-1\x1d21Y785ULMSD5",
         "01095060001343521728113010L00001-1\x1d21K2Q9ZZ7HRA", "01095060001343521728113010L00001-1\x1d210000000001"]


def _scenario(text: str) -> scenario.Scenario:
    return scenario.parse(text, "test")


IMAGES = """
name = "images-test"
units = 300
ppm = 600
seed = 3
[defects]
skip = 0.01
smear = 0.03
[print]
images = true
noise = 0.02
rotation_deg = 4.0
clogged = 0.06
clogged_rows = 18
"""


def test_images_are_off_by_default_and_the_print_section_is_checked():
    assert imager_for(scenario.load("nominal"), 1) is None
    im = imager_for(scenario.load("images"), 1)
    try:
        assert isinstance(im, Imager) and im._pool is not None  # its worker warmed up before the line runs
        im.prepare(CODES[0], "", 1)  # the coder printed: the worker renders and grades it
        im.prepare(CODES[1], "smear", 2)
        im.prepare(CODES[2], "misprint", 3)  # the line changes a misprint's code: left to the camera
        assert im.look(CODES[0], False, 1) == (CODES[0], "A", "")
        assert im.look(CODES[1], True, 2) == (None, "", "no_read")
        assert not any(im._ready.values())
    finally:
        im.close()
    for bad, says in (("[print]\nimages = 1", "must not be a boolean"), ("[print]\nsmear = 11.0", "smear"),
                      ("[print]\nwear = \"ink\"", "wear = 'ink'"), ("[print]\nwear = \"contrast\"\nwear_to = 2.0", "wear_to"),
                      ("[print]\nbogus = 1", "unknown key 'bogus'")):
        with pytest.raises(scenario.ScenarioError, match=re.escape(says)):
            _scenario(bad)


def test_the_camera_reports_what_the_decoder_and_grader_found():
    s = _scenario(IMAGES)
    im = imager_for(s, 5)
    for n, code in enumerate(CODES, 1):
        assert im.look(code, False, n) == (code, "A", "")  # a clean print: read, grade A
        assert im.look(code, True, n) == (None, "", "no_read")  # smear: heavy motion blur, no read
    assert im.look(None, False, 9) == (None, "", "")  # a skip: a blank carton, no symbol
    clogged = replace(s.print, clogged=1.0)  # every print 18 nozzle rows short
    seen = set()
    for n in range(1, 25):
        read, grade, fault = Imager(clogged, 300, seed=n).look(CODES[n % 4], False, n)
        assert fault in ("no_read", "low_grade", "") and (fault != "" or grade == "C")
        seen.add(fault)
    assert {"no_read", "low_grade"} <= seen


def test_wear_lowers_the_grade_step_by_step():
    s = _scenario("[print]\nimages = true\nwear = \"contrast\"\nwear_to = 0.3\n")
    im = imager_for(s, 1)
    letters = [im.look(CODES[0], False, n)[1] for n in range(1, 601, 60)]
    assert letters == sorted(letters) and letters[0] == "A" and letters[-1] == "D"


def _run(s, tmp_path):
    from serialine.host.sim.run import run

    r = run(s, out=tmp_path, realtime=False)
    assert r["ok"], {k: v for k, v in r["invariants"].items() if not v}
    conn = sqlite3.connect(r["db"])
    return r, conn


def test_images_scenario_keeps_every_invariant_and_rejects_for_the_right_reasons(tmp_path):
    r, conn = _run(_scenario(IMAGES), tmp_path)
    reasons = dict(conn.execute("SELECT verdict_reason, count(*) FROM unit WHERE outcome != 'PASSED' GROUP BY 1"))
    assert set(reasons) <= {"NO_READ", "LOW_GRADE", "UNKNOWN_SERIAL", "CODE_MISMATCH"}, reasons
    # smeared prints and skips (bad packs) are no-reads; clogged nozzles on good packs: LOW_GRADE or NO_READ
    assert reasons.get("NO_READ", 0) >= r["defects"].get("smear", 0) + r["defects"].get("skip", 0) > 0
    assert set(r["good_rejected_reasons"]) <= {"no_read", "low_grade"}
    assert reasons.get("LOW_GRADE", 0) == r["camera_faults"].get("low_grade", 0) > 0
    passed = dict(conn.execute("SELECT grade, count(*) FROM unit WHERE outcome = 'PASSED' GROUP BY 1"))
    assert set(passed) <= {"A", "B", "C"} and passed["A"] > 200


def test_a_fading_print_is_alarmed_before_its_first_low_grade_reject(tmp_path):
    s = _scenario('name = "fading"\nunits = 700\nppm = 600\n[print]\nimages = true\nwear = "contrast"\nwear_to = 0.3\n')
    r, conn = _run(s, tmp_path)
    alarms = [d for (d,) in conn.execute("SELECT detail FROM alarm_log WHERE alarm = 'PRINT_QUALITY_DRIFT'")]
    assert len(alarms) == 1, alarms  # once for the episode
    alarmed_at = int(re.match(r"unit [^:]*:\d+:(\d+): print quality drifting: clean the printhead", alarms[0]).group(1))
    (first_low,) = conn.execute("SELECT min(unit_seq) FROM unit WHERE verdict_reason = 'LOW_GRADE'").fetchone()
    assert first_low is not None and alarmed_at < first_low, (alarms, first_low)
    assert (conn.execute("SELECT count(*) FROM unit WHERE unit_seq < ? AND outcome != 'PASSED'", (alarmed_at,))
            .fetchone() == (0,))  # no pack failed before the alarm


def _with_images(name: str) -> scenario.Scenario:
    from sim.test_scenarios import small  # the shipped scenarios at their test sizes (tests/sim)

    s = small(name)
    return s.with_overrides(print=replace(s.print, images=True))


@pytest.mark.parametrize("name", sorted(set(scenario.names()) - {"images"}))
def test_every_shipped_scenario_holds_its_invariants_with_images_on(name, tmp_path):
    s = _with_images(name)
    r, _ = _run(s, tmp_path)
    assert r["units_detected"] == s.units and r["bad_rejected"] == r["units_bad"]
