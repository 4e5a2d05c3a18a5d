"""The line file (host/linefile.py): strict reading (every refusal one line naming the file, the key
and what is allowed), the one mm/ms → ConfigFields conversion (equal to what the simulator always
sent, for every shipped scenario), the firmware's own validation run offline, refusals explained in
the file's keys and units, `serialine agent check`, and the round trip through to_toml."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serialine.host import linefile as lf
from serialine.host.sim import parts
from serialine.host.sim import scenario as sc
from serialine.protocol.schema import ConfigResult, DwellUnit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

GOOD = """\
[identity]
line_id = "L1"
time_zone = "Europe/Berlin"

[device]
port = "/dev/ttyACM0"

[line]
counts_per_mm = 4
coder_at_mm = 250
camera_at_mm = 500
gate_at_mm = 1000
max_speed_mm_s = 1250

[coder]
driver = "serialine"
address = "10.0.0.5:9100"

[camera]
driver = "serialine"
address = "10.0.0.6:9101"

[ledger]
path = "line.db"
"""


def with_keys(text: str, section: str, lines: str) -> str:
    """GOOD with `lines` added at the top of [section] (a new section appended if absent)."""
    head = f"[{section}]\n"
    if head in text:
        return text.replace(head, head + lines + "\n", 1)
    return text + f"\n{head}{lines}\n"


def without(text: str, key: str) -> str:
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith(f"{key} =")) + "\n"


def old_device_config(s) -> dict:
    """parts.device_config as it was before the line file (commit 7cee52a), with the line model's
    station counts, lead and full speed (host/sim/line.py) inlined: the fields the sim always sent."""
    L, c = s.line, s.line.counts_per_mm
    full = s.ppm / 60.0 * L.pitch_mm * c
    coder_at, camera_at, gate_at = round(L.coder_at_mm * c), round(L.camera_at_mm * c), round(L.gate_at_mm * c)
    margin = round(max(8, 0.002 * full))
    budget_counts = gate_at - camera_at - margin - L.gate_lead_ms / 1000 * full * 1.25
    return dict(
        config_id=1, coder_at=coder_at, camera_at=camera_at, gate_at=gate_at, confirm_from=gate_at,
        confirm_to=round(gate_at + L.confirm_window_mm * c), counts_per_mm_milli=round(c * 1000),
        gate_lead_us=round(L.gate_lead_ms * 1000), dwell=round(L.gate_dwell_mm * c),
        dwell_unit=int(DwellUnit.COUNTS), debounce_us=200,
        min_pitch=round(L.pitch_mm * (1 - L.pitch_spread) * c * 0.5), deadline_margin=margin,
        max_speed_cps=round(full * 1.25),
        min_host_budget_us=max(1, min(20_000, int(budget_counts / (full * 1.25) * 1e6 * 0.8))),
        reject_streak_limit=0, link_timeout_ms=1000, link_stop_ms=0,
        purge_counts=round(gate_at + L.gate_window_mm * c), virtual_speed_cps=0, stall_ms=0, policy=0)


def sim_config(s):
    return lf.from_scenario(s, port="/dev/pts/7", coder_addr=("127.0.0.1", 7001), camera_addr="127.0.0.1:7002",
                            ledger="out/serialine.db")


# --- the conversion ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sc.names())
def test_every_shipped_scenario_gives_the_device_what_the_simulator_always_sent(name):
    s = sc.load(name)
    old = old_device_config(s)
    cfg = sim_config(s)
    via_file = lf.parse(lf.to_toml(cfg), cfg.path)  # what `serialine agent run` reads back
    assert via_file == cfg
    assert lf.device_fields(via_file) == old
    assert parts.device_config(s) == old
    assert lf.check(cfg) is None  # the device accepts it


_scen = st.builds(
    lambda pitch, spread, cpm, coder, camera, gate, lead, ppm: dataclasses.replace(
        sc.Scenario(), ppm=ppm, line=sc.Line(pitch_mm=pitch, pitch_spread=spread, pack_length_mm=5.0,
                                             counts_per_mm=cpm, coder_at_mm=coder, camera_at_mm=camera,
                                             gate_at_mm=gate, gate_lead_ms=lead)),
    st.one_of(st.integers(10, 400).map(float), st.floats(10, 2000)), st.sampled_from([0.0, 0.05, 0.1, 0.3]),
    st.one_of(st.sampled_from([1.0, 3.0, 4.0, 7.0, 12.5]), st.floats(1, 100)), st.floats(1, 500),
    st.floats(501, 2000), st.floats(2001, 8000), st.floats(0, 50),
    st.one_of(st.sampled_from([600.0, 1200.0, 1500.0]), st.floats(1, 3000)))


@settings(max_examples=300, deadline=None)
@given(_scen)
def test_any_valid_scenario_gives_the_old_fields_through_its_line_file(s):
    try:
        sc.validate(s, "random")
    except sc.ScenarioError:
        return
    cfg = sim_config(s)
    assert lf.device_fields(lf.parse(lf.to_toml(cfg), cfg.path)) == old_device_config(s)


def test_the_scenario_helpers_and_the_line_model_agree_with_the_conversion():
    from serialine.host.sim import line as lm

    s = sc.load("high-speed")
    model = getattr(lm, "LineModel", None) or getattr(lm, "Line")  # renamed by the simulator's clean-up
    f, model = lf.device_fields(sim_config(s)), model(s)
    assert (f["coder_at"], f["camera_at"], f["gate_at"], f["gate_lead_us"]) == (
        model.coder_at, model.camera_at, model.gate_at, model.lead_us)
    assert f["max_speed_cps"] == round(model.profile.full_cps * 1.25)
    assert f["deadline_margin"] == sc.deadline_margin_counts(s)


def test_a_scenario_line_section_is_a_geometry_read_by_the_same_code(tmp_path):
    assert sc.Scenario().line == lf.Geometry() and isinstance(sc.load("high-speed").line, lf.Geometry)
    p = tmp_path / "s.toml"
    p.write_text("[line]\ndebounce_ms = 0.5\nreject_streak_limit = 3\nstop_on_double_detect = true\n")
    s = sc.load(str(p))
    f = parts.device_config(s)
    assert (f["debounce_us"], f["reject_streak_limit"], f["policy"]) == (500, 3, 2)
    p.write_text("[line]\nreject_streak_limit = 300\n")  # the line file's range, the scenario's error
    with pytest.raises(sc.ScenarioError, match=r"s\.toml.*\[line\] reject_streak_limit = 300 must be in 0\.\.255"):
        sc.load(str(p))
    p.write_text("[line]\ncamera_at_mm = 2000\n")
    with pytest.raises(sc.ScenarioError, match="stations must be in order"):
        sc.load(str(p))
    # a scenario the device would refuse is refused before anything runs, by the firmware's rules
    p.write_text("ppm = 1\n[line]\npitch_mm = 10\npack_length_mm = 5\ncounts_per_mm = 1\n")
    with pytest.raises(sc.ScenarioError, match=r"s\.toml: the device would refuse it: \[line\] max_speed_mm_s = 0 "
                                               r"mm/s gives max_speed_cps = 0, outside the device's range 1\.\.10000000"):
        sc.load(str(p))


def test_the_agent_settings_default_to_what_the_agent_does():
    from serialine.host import agent, verdicts

    a, c = lf.AgentSettings(), lf.CameraSettings()
    assert a.fill_ahead == agent.FILL_AHEAD
    assert verdicts.grade_value(c.min_grade) == verdicts.DEFAULT_MIN_GRADE
    assert a.correlation_window_ms == 500.0


# --- the shipped examples ------------------------------------------------------------------------------

def test_the_examples_load_and_the_device_accepts_them():
    real = lf.load(EXAMPLES / "line.toml")
    assert real.device.board == "rpi_pico" and real.device.port == "/dev/ttyACM0"
    assert real.camera.driver == "dataman" and real.upstream[0].kind == "http"
    assert real.upstream[0].credentials_file == "/etc/serialine/credentials"
    assert real.identity.biz_location == real.identity.site_sgln  # defaults to the site
    assert lf.check(real) is None and lf.decision_budget_ms(real) >= real.geometry.min_host_budget_ms
    sim = lf.load(EXAMPLES / "line-sim.toml")
    assert sim.agent.start_on_boot and sim.device.board == "sim"
    # what `serialine sim` generates for the nominal scenario, up to the run's ports and paths
    gen = sim_config(sc.load("nominal"))
    assert sim.geometry == gen.geometry and sim.coder.driver == gen.coder.driver == "serialine"
    for cfg in (real, sim):
        assert lf.parse(lf.to_toml(cfg), cfg.path) == cfg


def test_the_docs_key_table_is_generated_from_the_code():
    doc = (ROOT / "docs" / "line-file.md").read_text()
    assert lf.key_table() in doc, "regenerate: python -m serialine.host.linefile --key-table"


# --- refusals ----------------------------------------------------------------------------------------------

# (change to GOOD, what the one line must say)
BAD = [
    (lambda t: with_keys(t, "line", "gate_lead_ms = -1"), r"\[line\] gate_lead_ms = -1\.0 must be in 0\.\.1000 ms"),
    (lambda t: with_keys(t, "line", "counts_per_mm_x = 1"), r"\[line\] unknown key 'counts_per_mm_x'"),
    (lambda t: with_keys(t, "line", "debounce_ms = nan"), r"\[line\] debounce_ms = nan must be in 0\.\.100 ms"),
    (lambda t: with_keys(t, "line", "link_timeout_ms = 1.5"), r"\[line\] link_timeout_ms = 1\.5 must be an integer"),
    (lambda t: with_keys(t, "line", 'stop_on_link_loss = "yes"'), r"\[line\] stop_on_link_loss = 'yes' must be true or false"),
    (lambda t: t.replace("camera_at_mm = 500", "camera_at_mm = 1500"), r"stations must be in order.*coder_at_mm < camera_at_mm < gate_at_mm"),
    (lambda t: without(t, "max_speed_mm_s"), r"\[line\] max_speed_mm_s is required"),
    (lambda t: with_keys(t, "line", "min_pitch_mm = 95"), r"\[line\] min_pitch_mm = 95 mm must be below the smallest pitch .* 90 mm"),
    (lambda t: without(t, "gate_at_mm"), r"\[line\] gate_at_mm is required"),
    (lambda t: without(t, "line_id"), r"\[identity\] line_id is required"),
    (lambda t: t.replace('line_id = "L1"', 'line_id = "../x"'), r"\[identity\] line_id = '\.\./x' must be 1-64"),
    (lambda t: t.replace("Europe/Berlin", "Europe/Atlantis"), r"\[identity\] time_zone = 'Europe/Atlantis' is not an IANA"),
    (lambda t: with_keys(t, "identity", 'site_sgln = "urn:epc:id:sgln:4012345.00000"'), r"\[identity\] site_sgln = .* is not an SGLN"),
    (lambda t: with_keys(t, "identity", 'read_point = "4012345000009"'), r"\[identity\] read_point = .* must be an SGLN URN"),
    (lambda t: with_keys(t, "identity", 'market = "MARS"'), r"\[identity\] market = 'MARS' must be one of EU_FMD, US_DSCSA"),
    (lambda t: t.replace('"/dev/ttyACM0"', '"tcp://1.2.3.4:5"'), r"\[device\] port = 'tcp://1\.2\.3\.4:5' must be a device path"),
    (lambda t: t.replace('"/dev/ttyACM0"', '"socket://host:99999"'), r"\[device\] port = .* port must be in 1\.\.65535"),
    (lambda t: with_keys(t, "device", "baud = 12345"), r"\[device\] baud = 12345 must be one of 9600, .*921600"),
    (lambda t: with_keys(t, "device", 'board = "arduino"'), r"\[device\] board = 'arduino' must be one of sim, rpi_pico, esp32"),
    (lambda t: with_keys(t, "device", 'device_id = "a-very-long-device-id"'), r"\[device\] device_id = .* at most 16"),
    (lambda t: t.replace('driver = "serialine"\naddress = "10.0.0.6', 'driver = "zebra"\naddress = "10.0.0.6'), r"\[camera\] driver = 'zebra' must be one of .*dataman"),
    (lambda t: t.replace('"10.0.0.5:9100"', '"10.0.0.5"'), r"\[coder\] address = '10\.0\.0\.5' must be HOST:PORT"),
    (lambda t: with_keys(t, "coder", "options = { speed = 3 }"), r"\[coder\] options: .*unknown option 'speed'"),
    (lambda t: with_keys(t, "camera", 'min_grade = "E"'), r"\[camera\] min_grade = 'E' must be a grade A, B, C, D, F or a number 0\.\.4"),
    (lambda t: with_keys(t, "camera", "min_grade = 5"), r"\[camera\] min_grade = 5 must be a grade"),
    (lambda t: with_keys(t, "agent", "fill_ahead = 0"), r"\[agent\] fill_ahead = 0 must be in 1\.\.1000 jobs"),
    (lambda t: with_keys(t, "control", 'address = "0.0.0.0:8765"'), r"\[control\] address = '0\.0\.0\.0:8765' is not a loopback.*allow_remote = true"),
    (lambda t: with_keys(t, "control", 'address = "127.0.0.1"'), r"\[control\] address = '127\.0\.0\.1' must be HOST:PORT"),
    (lambda t: t + '\n[[upstream]]\nkind = "ftp"\nwhere = "x"\n', r"\[\[upstream\]\] kind = 'ftp' must be one of dir, http, mqtt"),
    (lambda t: t + '\n[[upstream]]\nkind = "http"\nwhere = "mqtt://broker/x"\n', r"\[\[upstream\]\] #1 where = .* must be a http:// or https://"),
    (lambda t: t + '\n[[upstream]]\nkind = "http"\nwhere = "http://epcis.example/c"\ncredentials = "env"\n', r"\[\[upstream\]\] #1 where: refusing to send credentials over a plain http"),
    (lambda t: t + '\n[[upstream]]\nkind = "http"\nwhere = "https://epcis.example/c"\ncredentials = "s3cret"\n', r"\[\[upstream\]\] credentials = 's3cret' must be \"env\""),
    (lambda t: t + '\n[[upstream]]\nkind = "mqtt"\nwhere = "mqtts://b:8883/s/l"\ncredentials = "env:SERIALINE_PIN"\n', r"\[\[upstream\]\] credentials = .* env:NAME"),
    (lambda t: t + "\n[plc]\nx = 1\n", r"unknown section \[plc\]"),
    (lambda t: t.replace("[ledger]\npath = \"line.db\"\n", ""), r"\[ledger\] is required"),
    (lambda t: t.replace('path = "line.db"', 'path = ""'), r"\[ledger\] path = '' must be a file path"),
    (lambda t: t.replace("[line]", "[line]\n[line.x]"), r"\[line\] x = .* must be a number|\[line\] unknown key 'x'"),
    (lambda t: t + "\n[line]\n", r"not valid TOML"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[re.sub(r"\W+", "_", m)[:40] for _, m in BAD])
def test_every_refusal_is_one_line_naming_file_key_and_range(tmp_path, change, message):
    path = tmp_path / "plant" / "line.toml"
    path.parent.mkdir()
    path.write_text(change(GOOD))
    with pytest.raises(lf.LineFileError) as exc:
        lf.load(path)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    assert re.search(message, text), text


def test_the_good_file_and_its_defaults():
    cfg = lf.parse(GOOD, "line.toml")
    assert cfg.control.address == "127.0.0.1:8765" and (cfg.control.host, cfg.control.port) == ("127.0.0.1", 8765)
    assert cfg.agent.start_on_boot is False and cfg.upstream == () and cfg.ledger == "line.db"
    f = lf.device_fields(cfg)
    # at 1250 mm/s the nominal speed is 1000 mm/s = 4000 counts/s, as the nominal scenario runs
    assert f == old_device_config(sc.Scenario()) | {"min_host_budget_us": f["min_host_budget_us"]}
    assert lf.parse(lf.to_toml(cfg), "line.toml") == cfg


def test_the_simulators_physics_keys_do_not_bind_a_real_line():
    # a 50 mm pitch with the simulator's default 60 mm pack: a real line's packs are what they are
    cfg = lf.parse(with_keys(GOOD, "line", "pitch_mm = 50"), "l.toml")
    assert cfg.geometry.min_pitch_mm == 22.5  # half the smallest pitch, 50 × 0.9 / 2
    with pytest.raises(sc.ScenarioError, match="pack_length_mm"):
        sc.parse("[line]\npitch_mm = 50\n", "s.toml")


def test_a_remote_control_address_needs_allow_remote():
    text = with_keys(GOOD, "control", 'address = "0.0.0.0:8765"\nallow_remote = true')
    assert lf.parse(text, "l.toml").control.address == "0.0.0.0:8765"


def test_the_console_section_serves_loopback_or_tls_on_the_network():
    assert lf.parse(GOOD, "l.toml").console is None  # no [console]: the agent serves none
    cfg = lf.parse(GOOD + '\n[console]\naddress = "127.0.0.1:0"\n', "l.toml")
    assert cfg.console.address == "127.0.0.1:0" and lf.parse(lf.to_toml(cfg), "l.toml") == cfg
    for body, message in (('address = "0.0.0.0:8780"', "is not a loopback address"),
                          ('address = "0.0.0.0:8780"\nallow_remote = true', "give tls_cert and tls_key"),
                          ('tls_cert = "c.pem"', "tls_cert and tls_key go together")):
        with pytest.raises(lf.LineFileError, match=message) as e:
            lf.parse(GOOD + "\n[console]\n" + body + "\n", "l.toml")
        assert str(e.value).startswith("l.toml: [console]") and "\n" not in str(e.value)


def test_the_typed_getters_range_check_and_refuse_in_one_line():
    sec = lf.Section({"n": 300, "x": 10**400, "b": 1, "s": "warp", "k": 5.0}, "f.toml", "[agent]")
    assert sec.getint("missing", 8, minval=1, maxval=10) == 8  # a default is taken as it is
    for call, says in ((lambda: sec.getint("n", minval=0, maxval=255, unit="packs"),
                        "[agent] n = 300 must be in 0..255 packs"),
                       (lambda: sec.getint("n", minval=400), "[agent] n = 300 must be at least 400"),
                       (lambda: sec.getfloat("x", maxval=1e9), "[agent] x = inf must be at most 1e+09"),
                       (lambda: sec.getboolean("b"), "[agent] b = 1 must be true or false"),
                       (lambda: sec.getint("k"), "[agent] k = 5.0 must be an integer"),
                       (lambda: sec.getchoice("s", ("constant", "ramp")),
                        "[agent] s = 'warp' must be one of constant, ramp"),
                       (lambda: sec.get("absent"), "[agent] absent is required"),
                       (lambda: sec.refuse_unknown(["n", "x", "b", "s"]), "[agent] unknown key 'k' (known: n, x, b, s)")):
        with pytest.raises(lf.LineFileError) as exc:
            call()
        assert str(exc.value) == f"f.toml: {says}"
    with pytest.raises(sc.ScenarioError, match=r"^s\.toml: \[speed\] must be a table$"):
        lf.Section(3, "s.toml", "[speed]", err=sc.ScenarioError)


def test_sockets_and_rfc2217_ports_are_pyserial_urls():
    for port in ("socket://10.0.0.9:4000", "rfc2217://[::1]:2217", "/dev/serial/by-id/usb-Raspberry_Pi_Pico-if00"):
        assert lf.parse(GOOD.replace("/dev/ttyACM0", port), "l.toml").device.port == port


SECRETS = [
    ("[[upstream]]", 'kind = "http"\nwhere = "https://e.example/c"\npassword = "hunter2-top"'),
    ("[[upstream]]", 'kind = "http"\nwhere = "https://e.example/c"\ntoken = "hunter2-top"'),
    ("[coder]", 'options = { api_key = "hunter2-top" }'),
    ("[camera]", 'options = { expect = { "Auth_Token" = "hunter2-top" } }'),
    ("[[upstream]]", 'kind = "http"\nwhere = "https://user:hunter2-top@e.example/c"'),
]


@pytest.mark.parametrize("section,lines", SECRETS)
def test_a_secret_in_the_file_is_refused_without_showing_it(section, lines):
    if section == "[[upstream]]":
        text = GOOD + f"\n{section}\n{lines}\n"
    else:
        text = with_keys(GOOD, section.strip("[]"), lines)
    with pytest.raises(lf.LineFileError) as exc:
        lf.parse(text, "line.toml")
    msg = str(exc.value)
    assert "hunter2" not in msg and "\n" not in msg
    assert "secret" in msg or "credentials" in msg, msg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_any_text_is_a_line_config_or_a_line_file_error(text):
    try:
        lf.parse(text, "fuzz.toml")
    except lf.LineFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.toml: ")


_scalar = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=30), st.sampled_from(["/dev/ttyACM0", "socket://h:1", "127.0.0.1:0", "C", "env",
                                                           "file:/x", "urn:epc:id:sgln:4012345.00000.0", "http",
                                                           "https://e.example/c", "mqtt://b/s/l", "dir", "dataman"]))
_value = st.one_of(_scalar, st.lists(_scalar, max_size=3), st.dictionaries(st.text(max_size=8), _scalar, max_size=3))


def _section_strategy(name, cls):
    keys = [f.name for f in dataclasses.fields(cls)] + ["bogus"]
    return st.dictionaries(st.sampled_from(keys), _value, max_size=len(keys))


@st.composite
def tomlish(draw):
    """Line files built from the real section and key names with random values: the deep checks run."""
    base = lf.parse(GOOD, "x")
    doc = {}
    for name, cls in lf.SECTIONS.items():
        if draw(st.booleans()):
            continue
        table = draw(_section_strategy(name, cls))
        if name == "line" and draw(st.booleans()):
            table = {**{k: getattr(base.geometry, k) for k in ("counts_per_mm", "coder_at_mm", "camera_at_mm",
                                                                "gate_at_mm", "max_speed_mm_s")}, **table}
        doc[name] = [table] if name == "upstream" else table
    lines = []
    for name, table in doc.items():
        for t in (table if isinstance(table, list) else [table]):
            lines.append(f"[[{name}]]" if name == "upstream" else f"[{name}]")
            for k, v in t.items():
                try:
                    lines.append(f"{k} = {lf._toml_value(v)}")
                except TypeError:
                    continue
    return "\n".join(lines) + "\n"


@st.composite
def mutated(draw):
    """The good file with a few keys of its sections (and a target) set to random values."""
    import tomllib

    doc = tomllib.loads(GOOD)
    doc["upstream"] = [{"kind": "http", "where": "https://e.example/c"}]
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(lf.SECTIONS)))
        table = doc.setdefault(name, [{}] if name == "upstream" else {})
        table = table[0] if name == "upstream" else table
        key = draw(st.sampled_from([f.name for f in dataclasses.fields(lf.SECTIONS[name])] + ["bogus"]))
        table[key] = draw(_value)
    lines = []
    for name, table in doc.items():
        for t in (table if isinstance(table, list) else [table]):
            lines.append(f"[[{name}]]" if name == "upstream" else f"[{name}]")
            lines += [f"{k} = {lf._toml_value(v)}" for k, v in t.items()]
    return "\n".join(lines) + "\n"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(tomlish(), mutated()))
def test_any_line_file_made_of_real_keys_is_a_config_or_a_line_file_error(text):
    try:
        cfg = lf.parse(text, "fuzz.toml")
    except lf.LineFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.toml: ")
    else:
        assert lf.parse(lf.to_toml(cfg), "fuzz.toml") == cfg
        lf.check(cfg)


# --- the device's rules, offline; refusals in mm/ms -----------------------------------------------------

def test_check_runs_the_firmware_rules_and_agrees_with_the_micropython_device(run_mp):
    """The same fields, judged by firmware/config.py in the real MicroPython unix port."""
    import ast

    cfg = lf.parse(GOOD, "l.toml")
    cases = [lf.device_fields(cfg)]
    for change in ({"camera_at": 1000}, {"gate_at": 1999}, {"confirm_to": 4000}, {"max_speed_cps": 10**8},
                   {"min_host_budget_us": 10**6}, {"dwell_unit": 2}, {"link_timeout_ms": 5}):
        cases.append({**cases[0], **change})
    names = list(lf.firmware_config().FIELDS)
    lists = [[f[n] for n in names] for f in cases]
    out = run_mp(f"import config\nfor c in {lists!r}:\n    print(repr(config.validate(c)))")
    on_device = [ast.literal_eval(line) for line in out.strip().splitlines()]
    assert [tuple(map(int, lf.device_verdict(f))) for f in cases] == on_device
    assert on_device[0] == (0, 255) and len({r for r, _ in on_device}) >= 3


def _cfg(**line):
    cfg = lf.parse(GOOD, "line.toml")
    return dataclasses.replace(cfg, geometry=dataclasses.replace(cfg.geometry, **line))


def test_explain_refusal_names_the_line_file_key_and_value_in_mm_and_ms():
    cfg = _cfg(gate_at_mm=400.0)  # built, not parsed: the device's own order rule answers
    why = lf.check(cfg)
    assert why == ("the device would refuse it: [line] gate_at_mm = 400 mm puts the gate before or at "
                   "the camera (camera_at_mm = 500 mm) (BAD_ORDER)")
    # stations that round to one count: a file the parser passes, the device refuses
    text = GOOD.replace("counts_per_mm = 4", "counts_per_mm = 1").replace("coder_at_mm = 250", "coder_at_mm = 499.8")
    why = lf.check(lf.parse(text, "line.toml"))
    assert "[line] camera_at_mm = 500 mm puts the camera before or at the coder (coder_at_mm = 499.8 mm)" in why
    why = lf.check(_cfg(max_speed_mm_s=5_000_000.0))
    assert "[line] max_speed_mm_s = 5e+06 mm/s gives max_speed_cps = 20000000" in why
    assert "range 1..10000000 (0.25..2.5e+06 mm/s" in why and "BAD_RANGE" in why
    why = lf.check(_cfg(min_host_budget_ms=500.0))
    assert why.startswith("the device would refuse it: the host's decision budget at max speed "
                          "([line] max_speed_mm_s = 1250 mm/s) is 390.400 ms")
    assert why.endswith("below [line] min_host_budget_ms = 500 ms")
    assert "BUSY" in lf.explain_refusal({"result": "BUSY", "bad_field": 255}, cfg)
    assert "STORAGE" in lf.explain_refusal({"result": int(ConfigResult.STORAGE), "bad_field": 255}, cfg)
    for r in ConfigResult:
        if r != ConfigResult.OK:
            for bad in range(len(lf.firmware_config().FIELDS)):
                line = lf.explain_refusal({"result": r, "bad_field": bad, "config_id": 1}, cfg)
                assert "\n" not in line and line.startswith("device refused the configuration: ")


def test_every_config_field_maps_back_to_a_line_file_key():
    keys = {f.name for f in dataclasses.fields(lf.Geometry)}
    assert list(lf.FIELD_KEYS) == list(lf.firmware_config().FIELDS)
    for name, (key, _unit, _back) in lf.FIELD_KEYS.items():
        assert name == "config_id" or all(k.strip() in keys for k in key.split(",")), name


def test_decision_budget_is_the_devices_arithmetic():
    cfg = lf.parse(GOOD, "l.toml")
    f = lf.device_fields(cfg)
    counts = f["gate_at"] - f["gate_lead_us"] * f["max_speed_cps"] // 10**6 - f["deadline_margin"] - f["camera_at"]
    assert lf.decision_budget_ms(cfg) == counts * 10**6 // f["max_speed_cps"] / 1000 == 390.4


# --- serialine agent check -----------------------------------------------------------------------------------

def agent_check(*args, env=None):
    exe = Path(sys.executable).with_name("serialine")
    return subprocess.run([str(exe), "agent", "check", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def test_agent_check_prints_what_the_device_gets_and_the_budget(tmp_path):
    p = agent_check("--config", str(EXAMPLES / "line.toml"))
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert re.search(r"gate_at\s+= 14000\s+\[line\] gate_at_mm = 1400 mm", out)
    assert re.search(r"gate_lead_us\s+= 12000\s+\[line\] gate_lead_ms = 12 ms", out)
    assert re.search(r"max_speed_cps\s+= 20000\s+\[line\] max_speed_mm_s = 2000 mm/s", out)
    assert "host decision budget at max speed (2000 mm/s): 361.400 ms" in out
    assert out.rstrip().endswith("OK: the device will accept this configuration") and p.stderr == ""


def test_agent_check_exits_1_with_one_line_when_the_device_would_refuse(tmp_path):
    path = tmp_path / "line.toml"
    path.write_text(with_keys(GOOD, "line", "min_host_budget_ms = 500"))
    p = agent_check("--config", str(path))
    assert p.returncode == 1
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(path) in err and "below [line] min_host_budget_ms = 500 ms" in err
    assert "host decision budget at max speed" in p.stdout  # what it would get is still shown


def test_agent_check_exits_1_with_one_line_for_a_bad_or_missing_file(tmp_path):
    path = tmp_path / "line.toml"
    path.write_text(GOOD.replace("gate_at_mm = 1000", "gate_at_mm = 1000\ngate_lead_ms = 5000"))
    p = agent_check("--config", str(path))
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip() == (f"serialine agent check: {path}: [line] gate_lead_ms = 5000.0 must be in "
                                "0..1000 ms")
    p = agent_check("--config", str(tmp_path / "nope.toml"))
    assert p.returncode == 1 and p.stderr.strip().endswith("nope.toml: no such file")
    p = agent_check()
    assert p.returncode == 2  # usage


def test_agent_check_reports_credentials_by_name_never_by_value(tmp_path):
    creds = tmp_path / "creds"
    creds.write_text("SERIALINE_HTTP_TOKEN=tok-very-secret\n")
    creds.chmod(0o600)
    path = tmp_path / "line.toml"
    path.write_text(GOOD + f'\n[[upstream]]\nkind = "http"\nwhere = "https://e.example/c"\ncredentials = "file:{creds}"\n'
                    '\n[[upstream]]\nkind = "mqtt"\nwhere = "mqtts://b.example:8883/site/line"\n'
                    'credentials = "env:SERIALINE_MQTT_USER,SERIALINE_MQTT_PASSWORD"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERIALINE_")}
    p = agent_check("--config", str(path), env={**env, "SERIALINE_MQTT_USER": "u-visible-not"})
    assert p.returncode == 0, p.stderr
    assert "readable, SERIALINE_HTTP_TOKEN" in p.stdout and "not set here: SERIALINE_MQTT_PASSWORD" in p.stdout
    assert "tok-very-secret" not in p.stdout + p.stderr and "u-visible-not" not in p.stdout


def test_a_config_report_as_the_host_link_decodes_it_is_explained():
    """CONFIG_REPORT through the wire codec (fastcodec: what host/link.py hands the service)."""
    from serialine.protocol import fastcodec
    from serialine.protocol.schema import BY_NAME

    cfg = _cfg(min_host_budget_ms=500.0)
    fields = lf.device_fields(cfg, config_id=7)
    res, bad = lf.device_verdict(fields)
    msg = BY_NAME["CONFIG_REPORT"]
    in_force = lf.device_fields(lf.parse(GOOD, "l.toml"), config_id=6)  # the device keeps its old one
    frame = fastcodec.encode(msg.msg_type, 1, 0, {"event_seq": 3, "result": int(res), "bad_field": bad,
                                                  "config": in_force})
    _t, _s, _a, values = fastcodec.decode(frame)
    report = fastcodec.as_dict(msg.msg_type, values)
    assert report["result"] == ConfigResult.BUDGET_TOO_SMALL
    line = lf.explain_refusal(report, cfg)
    assert line.startswith("device refused the configuration: the host's decision budget at max speed")
    assert "below [line] min_host_budget_ms = 500 ms" in line


def test_the_boards_a_line_file_names_are_the_shipped_boards():
    from serialine.host.resources import board_dir

    shipped = sorted(p.name for p in board_dir("sim").parent.iterdir() if (p / "board.py").exists())
    assert sorted(lf.BOARDS) == shipped
