"""`serialine device config get|set` on a running device through `serialine agent run` (the firmware
in the MicroPython unix port, the simulated line of tests/host/test_service.py): mm/ms values, the
device's own validation, every change audited with before/after, a refusal changes nothing."""

from __future__ import annotations

import subprocess

import pytest

from serialine.host import tune

from test_challenge import audit_rows, batch_start, challenge_line, new_batch  # noqa: F401 (fixture)
from test_service import SERIALINE, Agent


def device_config(agent, cfg, *args):
    return subprocess.run([SERIALINE, "device", "config", *args, "--config", str(cfg), "--control",
                           agent.control.address], capture_output=True, text=True, timeout=60)


def test_get_set_audited_refusal_changes_nothing(challenge_line):
    rig, cfg, db, batch = challenge_line("on_change")
    agent = Agent(cfg, batch)
    try:
        agent.wait_status(lambda s: s["ready"])
        got = device_config(agent, cfg, "get")
        assert got.returncode == 0, got
        assert "gate_lead_ms = 8  # ms" in got.stdout and "gate_at_mm = 400  # mm" in got.stdout, got.stdout
        assert "gate_dwell_mm = 20  # mm" in got.stdout

        s = device_config(agent, cfg, "set", "gate_lead_ms=9.5", "gate_dwell_mm=24", "--user", "eng-bob",
                          "--reason", "paddle measured slower")
        assert s.returncode == 0, (s, agent.log)
        assert "[line] gate_lead_ms: 8.0 → 9.5" in s.stdout and "[line] gate_dwell_mm: 20.0 → 24.0" in s.stdout, s.stdout
        assert "put the new value there" in s.stderr
        got = device_config(agent, cfg, "get")
        assert "gate_lead_ms = 9.5  # ms" in got.stdout and "gate_dwell_mm = 24  # mm" in got.stdout, got.stdout
        (user, rec), = audit_rows(db, tune.ACTION)
        assert user == "eng-bob" and rec["reason"] == "paddle measured slower"
        assert rec["before"] == {"gate_lead_ms": 8.0, "gate_dwell_mm": 20.0}
        assert rec["after"] == {"gate_lead_ms": 9.5, "gate_dwell_mm": 24.0}
        confs = audit_rows(db, "line.configure")
        assert len(confs) == 2 and confs[1][0] == "eng-bob" and confs[1][1]["device_fields"]["gate_lead_us"] == 9500
        # the configuration changed: a line with [policy] challenge = "on_change" needs a new challenge
        new_batch(db, "B2")
        assert "configuration changed" in batch_start(db, "B2").stderr

        # the device's own validation: a budget the device refuses; nothing applied, nothing audited
        bad = device_config(agent, cfg, "set", "min_host_budget_ms=5000", "--user", "eng-bob", "--reason", "try it")
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad
        assert "device refused the configuration" in bad.stderr and "min_host_budget_ms" in bad.stderr \
            and "nothing changed" in bad.stderr, bad.stderr
        # a key that is no device setting, a value out of the line file's range: said before anything is sent
        for args, want in ((["pitch_mm=90"], "not a device setting"),
                           (["gate_lead_ms=-1"], "the change: [line] gate_lead_ms = -1.0 must be in 0..1000 ms"),
                           (["gate_lead_ms"], "expected KEY=VALUE")):
            r = device_config(agent, cfg, "set", *args, "--user", "eng-bob", "--reason", "try it")
            assert r.returncode == 1 and want in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
        short = device_config(agent, cfg, "set", "gate_lead_ms=9", "--user", "eng-bob", "--reason", "x")
        assert short.returncode == 1 and "reason" in short.stderr
        got = device_config(agent, cfg, "get")
        assert "gate_lead_ms = 9.5  # ms" in got.stdout and "min_host_budget_ms = 5000" not in got.stdout
        assert len(audit_rows(db, tune.ACTION)) == 1
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    assert "Traceback" not in agent.log


@pytest.mark.parametrize("text,want", [("gate_lead_ms=9;stop_on_link_loss=true", {"gate_lead_ms": 9,
                                                                                   "stop_on_link_loss": True}),
                                       ("gate_at_mm = 410.5", {"gate_at_mm": 410.5})])
def test_parse_values(text, want):
    assert tune.parse_values(text) == want


from hypothesis import given, strategies as st  # noqa: E402

from serialine.host import challenge  # noqa: E402


@given(st.text(max_size=200))
def test_parse_values_says_no_in_one_line_or_parses(text):
    try:
        got = tune.parse_values(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert got and set(got) <= set(tune.device_keys())


@given(st.sampled_from(tune.device_keys()), st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_parse_values_reads_numbers(key, value):
    assert tune.parse_values(f"{key}={value!r}") == {key: value}


@given(st.text(max_size=120))
def test_parse_plan_says_no_in_one_line_or_parses(text):
    try:
        plan = challenge.parse_plan(text)
    except challenge.ChallengeError as exc:
        assert "\n" not in str(exc)
    else:
        assert 1 <= len(plan) <= challenge.MAX_PACKS and set(plan) <= set(challenge.KINDS)
