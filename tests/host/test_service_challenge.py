"""`[policy] challenge` at the agent's own `line.start` (the control interface, which PackML Start
also is): the same rule as `serialine batch start` (host/challenge.py `missing`), refused in one
line and audited; an armed challenge may start the line (its packs need it running). The service's
rig: the firmware in the unix port, the simulated coder and camera (tests/host/test_service.py)."""

from __future__ import annotations

import json

import pytest

from test_service import Agent, ledger_rows, line, wait_for  # noqa: F401  (line: the rig's fixture)


def test_line_start_is_refused_without_a_passed_challenge_in_one_line_and_audited(line):
    from serialine.host.control import ControlError

    rig, cfg, db, batch = line()
    cfg.write_text(cfg.read_text().replace("start_on_boot = true", "start_on_boot = false")
                   + '\n[policy]\nchallenge = "on_change"\n')
    agent = Agent(cfg, batch)
    try:
        agent.wait_status(lambda s: s["ready"], 120)
        wait_for(lambda: ledger_rows(db, "SELECT 1 FROM audit WHERE action='line.configure'"), 60,
                 "the configuration record (the challenge's change point)", rig)
        with pytest.raises(ControlError) as refused:
            agent.control.command("line.start", "op-otto", "shift start")
        why = str(refused.value)
        assert "\n" not in why and why.startswith("line.start refused: line line-1 has no passed challenge since its"
                                                  " configuration changed at "), why
        assert why.endswith('([policy] challenge = "on_change"): run serialine challenge --config LINE.toml'), why
        # configured, not started: the status shows the device IDLE once its next report is in
        agent.wait_status(lambda s: s["device"]["state"] == "IDLE", 30)
        assert not rig.packs
        # an armed challenge starts the line: its test packs are the next ones fed
        agent.control.command("challenge.run", "eng-emil", "after the gate change", plan="no_code,good")
        agent.control.command("line.start", "op-otto", "challenge packs")
        agent.wait_status(lambda s: s["device"]["state"] == "RUNNING", 60)
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    refusals = ledger_rows(db, "SELECT user, detail FROM audit WHERE action='challenge.refused'")
    assert len(refusals) == 1 and refusals[0][0] == "op-otto", refusals
    detail = json.loads(refusals[0][1])
    assert detail["command"] == "line.start" and detail["reason"] == "shift start" and detail["line_id"] == "line-1"
    assert detail["batch_id"] == batch and "no passed challenge" in detail["missing"]
    starts = ledger_rows(db, "SELECT user, json_extract(detail, '$.reason') FROM audit WHERE action='line.start'")
    assert starts == [("op-otto", "challenge packs")]  # the refused one is no start
    assert f"line.start by op-otto refused: {why}" in agent.log
    assert "Traceback" not in agent.log
