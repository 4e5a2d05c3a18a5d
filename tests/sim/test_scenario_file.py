"""Scenario files: every bad one refused with one line naming the file and the key, before anything
is created (no ledger, no --out directory); Hypothesis against the parser: any text or bytes either
give a valid Scenario or a ScenarioError, never another exception."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serialine.host.sim import cli
from serialine.host.sim import scenario as sc

# (TOML, what the one-line error must name) — the cases first
BAD = [
    ("units = 100000000000", "units"),
    ("units = 1e11", "units"),
    ("[camera]\nlatency_ms = inf", "latency_ms"),
    ("[camera]\nlatency_jitter_ms = nan", "latency_jitter_ms"),
    ("[line]\ngate_lead_ms = -1", "gate_lead_ms"),
    ('[speed]\nprofile = "ramp"\nramp_to = 0', "ramp_to"),
    ("[line]\ncounts_per_mm = 0.001", "counts_per_mm"),
    ("[faults]\nlink_outages = [[100, -5]]", "link_outages"),
    ("[faults]\nlink_outages = [[700, 50]]", "link_outages"),
    ("[faults]\nhost_kill_at = [600]", "host_kill_at"),
    ("[faults]\ndevice_reboot_at = [0]", "device_reboot_at"),  # before pack 0: never strikes
    ("[faults]\nbin_full_at = 9999", "bin_full_at"),
    ("[faults]\nlink_outages = [[1e400, 3]]", "link_outages"),
    ("[faults]\nlink_outages = [[true, 3]]", "link_outages"),
    ("ppm = 0", "ppm"),
    ("seed = -1", "seed"),
    ('name = "../../etc/x"', "name"),
    ("[line]\ngate_lead_ms = 900", "gate_lead_ms"),  # leaves the host no time for a verdict
    ("[line]\npitch_spread = 0.7", "pitch_spread"),
    ("[defects]\nmisprint = 2", "misprint"),
    ("[speed]\naccel_ms = 0", "accel_ms"),
    ('[speed]\nprofile = "warp"', "profile"),
    ("[line]\ncoder_at_mm = 600", "coder_at_mm"),
    ("[line]\nbin_capacity = 0", "bin_capacity"),
    ("[nope]\nx = 1", "nope"),
    ("line = 3", "line"),
    ("units = [1]", "units"),
    ('[camera]\ndriver = "text"', "driver"),  # no emulator for the configurable text reader
    ('[coder]\ndriver = "domino"', "driver"),
    ("[coder]\ndriver = 1", "driver"),
    ("[coder]\nspeed = 3", "speed"),
    ("[faults]\nhost_term_at = [600]", "host_term_at"),
    ("[faults]\ncamera_drop_at = [0]", "camera_drop_at"),
]


@pytest.mark.parametrize("text,key", BAD, ids=[k for _, k in BAD])
def test_a_bad_scenario_is_refused_in_one_line_naming_file_and_key(tmp_path, capsys, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    out = tmp_path / "out"
    assert cli.main(["--scenario", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err and key in err, err
    assert not out.exists()  # nothing created: no ledger, no batch


def test_a_binary_file_is_refused_naming_the_file(tmp_path, capsys):
    path = tmp_path / "blob.toml"
    path.write_bytes(bytes(range(256)) * 4)
    assert cli.main(["--scenario", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "UTF-8" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_overrides_are_checked_like_the_file(tmp_path, capsys):
    assert cli.main(["--units", "100000000000", "--out", str(tmp_path / "o")]) == 2
    assert "units" in capsys.readouterr().err
    # a fault the smaller run would never reach is refused, not silently skipped
    assert cli.main(["--scenario", "host-crash", "--units", "100", "--out", str(tmp_path / "o")]) == 2
    assert "host_kill_at" in capsys.readouterr().err
    assert cli.main(["--ppm", "inf", "--out", str(tmp_path / "o")]) == 2
    assert "ppm" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_run_refuses_an_unchecked_scenario_before_creating_anything(tmp_path):
    from serialine.host.sim.run import run

    with pytest.raises(sc.ScenarioError, match="gate_lead_ms"):
        run(sc.Scenario(line=sc.Line(gate_lead_ms=-5.0)), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_every_shipped_scenario_is_valid():
    for name in sc.names():
        assert sc.load(name).name == name


# --- Hypothesis ---

KEYS = {"": ["name", "description", "units", "ppm", "seed"],
        **{sect: [f.name for f in sc.dataclasses.fields(cls)] for sect, cls in sc._SECTIONS.items()}}
scalars = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=12), st.sampled_from(["constant", "ramp", "stop-start"]),
    st.integers(min_value=0, max_value=700), st.floats(min_value=0, max_value=1.5))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml(x) for x in v) + "]"


@st.composite
def documents(draw):
    lines = []
    for section, keys in KEYS.items():
        chosen = draw(st.lists(st.sampled_from(keys + ["typo"]), unique=True, max_size=4))
        if section and (chosen or draw(st.booleans())):
            lines.append(f"[{section}]")
        lines += [f"{k} = {_toml(draw(values))}" for k in chosen]  # top-level keys come first
    return "\n".join(lines) + "\n"


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(documents())
def test_any_scenario_document_parses_or_is_refused_with_a_scenario_error(text):
    try:
        s = sc.parse(text, "fuzz.toml")
    except sc.ScenarioError as exc:
        assert str(exc).startswith("fuzz.toml") and "\n" not in str(exc)
        return
    sc.validate(s, "again")  # what parse returns holds every range
    assert 1 <= s.units <= 200_000 and math.isfinite(s.ppm) and sc.host_budget_counts(s) > 0
    assert all(1 <= at < s.units for at, _ in s.faults.link_outages)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_file_bytes_load_or_are_refused(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("scn") / "x.toml"
    path.write_bytes(data)
    try:
        sc.load(str(path))
    except sc.ScenarioError as exc:
        assert str(path) in str(exc)
