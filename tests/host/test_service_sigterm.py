"""SIGTERM with packs in flight (docs/agent.md "SIGTERM"): a controlled stop. The run permissive
drops (the infeed holds), the belt runs the packs on it out through coder, camera and gate, each
gets its verdict and outcome, then the service exits 0. Where the stop halts the belt too, the packs
short of the gate are purged (the device rejects each when the line next moves) and the next start
resumes them: none of them passes. Every pack detected ends with a recorded outcome, and each one
the paddle pushed off is booked rejected, each one it let through booked passed. The service's rig:
the firmware in the unix port, the simulated coder and camera (tests/host/test_service.py)."""

from __future__ import annotations

import re

from test_service import Agent, ledger_rows, line, wait_for  # noqa: F401  (line: the rig's fixture)


def units(db, batch):
    """(boot_id, unit_seq) -> outcome of the batch's units, in detection order."""
    return {(b, u): o for b, u, o in ledger_rows(db, "SELECT boot_id, unit_seq, outcome FROM unit WHERE batch_id=?"
                                                     " ORDER BY boot_id, unit_seq", batch)}


def assert_every_pack_booked_as_it_went(rig, db, batch):
    booked = units(db, batch)
    assert len(booked) == len(rig.packs), (len(booked), len(rig.packs))  # one unit per pack detected
    assert None not in booked.values(), booked
    rejected = sum(o.startswith("REJECTED") or o == "PURGED" for o in booked.values())
    assert rejected == sum(p.rejected for p in rig.packs), (booked, [p.index for p in rig.packs if p.rejected])


def test_sigterm_runs_the_packs_on_the_belt_out_then_exits_0(line):
    rig, cfg, db, batch = line()
    agent = Agent(cfg, batch)
    try:
        agent.wait_status(lambda s: s["ready"] and s["device"]["state"] == "RUNNING", 120)
        wait_for(lambda: len(rig.packs) >= 8, 60, "8 packs on the line", rig)
        assert agent.stop(60) == 0, agent.log
    finally:
        agent.kill()
    assert re.search(r"stopping: line stop sent, the packs on the belt ride on", agent.log), agent.log
    assert re.search(r"stopped: every unit in flight has its outcome", agent.log), agent.log
    assert_every_pack_booked_as_it_went(rig, db, batch)
    assert "purged" not in agent.log and "Traceback" not in agent.log


def test_where_the_stop_halts_the_belt_the_packs_short_of_the_gate_are_purged_and_resumed(line):
    rig, cfg, db, batch = line()
    rig.belt_halts = True
    agent = Agent(cfg, batch)
    try:
        st = agent.wait_status(lambda s: s["ready"] and s["device"]["state"] == "RUNNING", 120)
        boot = st["device"]["boot_id"]
        wait_for(lambda: len(rig.packs) >= 6, 60, "6 packs on the line", rig)
        assert agent.stop(60) == 0, agent.log
    finally:
        agent.kill()
    m = re.search(r"stopping: (\d+) unit\(s\) of boot \d+ still without an outcome after [\d.]+ s; the device keeps"
                  r" their events: purged", agent.log)
    assert m and int(m[1]) > 0, agent.log
    open_units = [k for k, o in units(db, batch).items() if o is None]
    assert len(open_units) == int(m[1]), open_units
    # the next start resumes the boot; the operator's clear moves the belt: each purged pack is rejected
    rig.belt_halts = False
    again = Agent(cfg, batch)
    try:
        again.wait_log(rf"device line-1 boot {boot}: .* \(resumed: line stop latched until its events are in\)", 120)
        again.wait_status(lambda s: s["ready"] and not s["resuming"], 120)
        again.control.command("line.clear", "op-otto", "agent restarted")
        fed = len(rig.packs)
        wait_for(lambda: len(rig.packs) >= fed + 3, 60, "3 packs after the clear", rig)
        assert again.stop(60) == 0, again.log
    finally:
        again.kill()
    booked = units(db, batch)
    assert all(booked[k] is not None and booked[k] != "PASSED" for k in open_units), {k: booked[k] for k in open_units}
    assert_every_pack_booked_as_it_went(rig, db, batch)
    assert "Traceback" not in agent.log + again.log
