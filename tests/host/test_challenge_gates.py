"""`[policy] challenge` holds at every way the line is set running, not only at `line.start`: the
service's own start at a new boot (`[agent] start_on_boot`) and `line.clear` (the device's
CLEAR_ALARM releases a latched stop into running) are refused by the same rule (host/challenge.py
`missing`, via `start_refusal`), in one line, audited as `challenge.refused`; an armed challenge lets
the line run. The service's rig: the firmware in the unix port, the simulated coder and camera."""

from __future__ import annotations

import json

import pytest

from test_service import Agent, ledger_rows, line, wait_for  # noqa: F401  (line: the rig's fixture)

NO_CHALLENGE = "refused: line line-1 has no passed challenge since its configuration changed at "


def test_start_on_boot_and_line_clear_are_refused_without_a_passed_challenge(line):
    from serialine.host.control import ControlError

    rig, cfg, db, batch = line()
    assert "start_on_boot = true" in cfg.read_text()
    cfg.write_text(cfg.read_text() + '\n[policy]\nchallenge = "on_change"\n')
    agent = Agent(cfg, batch)
    try:
        agent.wait_status(lambda s: s["ready"], 120)
        wait_for(lambda: "start_on_boot: line.start " + NO_CHALLENGE in agent.log, 60, "the refused start_on_boot", rig)
        agent.wait_status(lambda s: s["device"]["state"] == "IDLE", 30)  # configured, not started
        with pytest.raises(ControlError) as refused:
            agent.control.command("line.clear", "op-otto", "alarm seen to")
        why = str(refused.value)
        assert "\n" not in why and why.startswith("line.clear " + NO_CHALLENGE), why
        assert why.endswith('([policy] challenge = "on_change"): run serialine challenge --config LINE.toml'), why
        assert not rig.packs
        # an armed challenge may set the line running: its test packs are the next ones fed
        agent.control.command("challenge.run", "eng-emil", "after the gate change", plan="no_code,good")
        agent.control.command("line.clear", "op-otto", "challenge packs")
        agent.control.command("line.start", "op-otto", "challenge packs")
        agent.wait_status(lambda s: s["device"]["state"] == "RUNNING", 60)
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
    refusals = [(u, json.loads(d)) for u, d in
                ledger_rows(db, "SELECT user, detail FROM audit WHERE action='challenge.refused' ORDER BY seq")]
    assert [(u, d["command"]) for u, d in refusals] == [("serialine-agent", "line.start"), ("op-otto", "line.clear")]
    assert "start_on_boot" in refusals[0][1]["reason"] and refusals[1][1]["reason"] == "alarm seen to"
    assert all(d["batch_id"] == batch and "no passed challenge" in d["missing"] for _, d in refusals)
    trail = ledger_rows(db, "SELECT user, action, json_extract(detail, '$.reason') FROM audit"
                            " WHERE action IN ('line.start', 'line.clear') ORDER BY seq")
    assert trail == [("op-otto", "line.clear", "challenge packs"), ("op-otto", "line.start", "challenge packs")]
    assert "line started (start_on_boot)" not in agent.log and "Traceback" not in agent.log
