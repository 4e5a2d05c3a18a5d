"""A batch's life beyond the happy path: abort a stuck batch, rework only on a running or reopened
batch, reconcile's exit status, close refusing an empty batch, warnings the report carries, and one
packing rule for rework add and replace."""

import json
import sqlite3

import pytest

from serialine.host import audit, cli, lifecycle, masterdata, reconcile, rework, serials
from serialine.host.db import snapshot, transaction
from serialine.host.epcis import outbox
from serialine.host.ledger import Ledger, LedgerError

from hostkit import GTIN, Line


def run(capsys, conn, *argv):
    (path,) = [r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"]
    rc = cli.main([*argv, "--db", path, "--user", "qa"])
    out, err = capsys.readouterr()
    return rc, out, err


def state(conn, batch="B1"):
    return conn.execute("SELECT state FROM batch WHERE batch_id=?", (batch,)).fetchone()[0]


def serial_states(conn, batch="B1"):
    return dict(conn.execute("SELECT state, count(*) FROM serial WHERE batch_id=? GROUP BY state", (batch,)))


def stuck(line):
    """4 packs passed (a full case of 3 + one in an open case), unit 4 printed and unit 5 detected
    without an outcome (Ctrl-C), 10 serials allocated but never sent to the coder."""
    for u in range(4):
        line.unit(u)
    line.store([line.event("UNIT_DETECTED", unit_seq=4, pos=0, t_us=0, flags=0),
                line.event("UNIT_PRINTED", unit_seq=4, pos=0, t_us=0),
                line.event("UNIT_DETECTED", unit_seq=5, pos=0, t_us=0, flags=0)])
    with transaction(line.ledger.conn):
        serials.allocate(line.ledger.conn, "B1", GTIN, 10)


def test_abort_ends_a_stuck_batch_and_accounts_for_every_serial(line, capsys):
    conn = line.ledger.conn
    stuck(line)
    printed = conn.execute("SELECT serial FROM unit WHERE unit_seq=4").fetchone()[0]
    pool = serials.available(conn, GTIN)
    with pytest.raises(reconcile.ReconcileError, match="without an outcome"):
        reconcile.close_batch(conn, "B1", "qa")
    rc, out, err = run(capsys, conn, "batch", "abort", "B1", "--reason", "Ctrl-C during the run")
    assert rc == 0, err
    # 20 queued to the coder: 5 bound to units (4 passed, 1 printed), 15 may exist on packs: never reissued
    assert out.startswith("batch B1 aborted: 2 unit(s) without an outcome rejected, 16 serial(s) written off"
                          " as rejected (printed or sent to a coder), 10 returned to the pool")
    assert state(conn) == "aborted"
    assert serial_states(conn) == {"commissioned": 4, "rejected": 16}
    assert serials.available(conn, GTIN) == pool + 10
    assert conn.execute("SELECT state FROM serial WHERE serial=?", (printed,)).fetchone()[0] == "rejected"
    units = conn.execute("SELECT unit_seq, outcome, reason FROM unit WHERE unit_seq>=4 ORDER BY unit_seq").fetchall()
    assert units == [(4, "REJECTED_UNCONFIRMED", lifecycle.ABORTED_REASON), (5, "REJECTED_UNCONFIRMED", lifecycle.ABORTED_REASON)]
    assert conn.execute("SELECT count(*) FROM coder_job WHERE state='queued'").fetchone()[0] == 0
    report = reconcile.reconcile(conn, "B1")
    assert report.problems == [] and len(report.partial) == 2  # the open case and its pallet, closed partial
    assert any("4 of 100 planned packs made" in w for w in report.warnings)
    (rec,) = [r for r in audit.records(conn) if r[3] == "batch.abort"]
    assert rec[2] == "qa" and "Ctrl-C during the run" in rec[4] and '"units_rejected":2' in rec[4]
    assert audit.verify(conn)[0]
    with pytest.raises(LedgerError, match="aborted"):
        Ledger(conn, "B1")  # no line runs on it again
    before = snapshot(conn)
    rc, _, err = run(capsys, conn, "batch", "abort", "B1", "--reason", "again")
    assert rc == 1 and "only a created or running batch can be aborted" in err
    assert snapshot(conn) == before


def test_abort_needs_a_reason_and_refuses_unknown_outcomes(conn):
    with pytest.raises(lifecycle.LifecycleError, match="user and a reason"):
        lifecycle.abort(conn, "B1", "qa", " ")
    if "UNKNOWN" in conn.execute("SELECT sql FROM sqlite_master WHERE name='unit'").fetchone()[0]:
        conn.execute("INSERT INTO unit (device_id, boot_id, unit_seq, batch_id, outcome) VALUES ('d', 1, 1, 'B1', 'UNKNOWN')")
        with pytest.raises(lifecycle.LifecycleError, match="unknown"):
            lifecycle.abort(conn, "B1", "qa", "r")
        assert state(conn) == "running"


def test_abort_of_a_created_batch(conn, capsys):
    masterdata.create_batch(conn, "B2", GTIN, "L2", "2030-01-31", 10, 2, 2)
    rc, out, _ = run(capsys, conn, "batch", "abort", "B2", "--reason", "work order cancelled")
    assert rc == 0 and "0 returned" in out and state(conn, "B2") == "aborted"


def full_run(line, n=6):
    for u in range(n):
        line.unit(u)
    return reconcile.close_batch(line.ledger.conn, "B1", "qa")


def packs_in(conn, sscc):
    return sorted(s for (s,) in conn.execute("SELECT p.serial FROM packed p JOIN container c USING (container_id)"
                                             " WHERE c.sscc=?", (sscc,)))


def test_rework_on_a_closed_batch_is_refused_until_reopened(line, capsys):
    conn = line.ledger.conn
    full_run(line)
    case = conn.execute("SELECT sscc FROM container WHERE level='case' AND state='closed' LIMIT 1").fetchone()[0]
    pack = packs_in(conn, case)[0]
    before = snapshot(conn)
    rc, _, err = run(capsys, conn, "rework", "remove", GTIN, pack, "--reason", "damaged")
    assert rc == 1 and "batch B1 is closed" in err and "serialine batch reopen B1" in err
    with pytest.raises(lifecycle.LifecycleError, match="closed"):
        rework.decommission(conn, GTIN, pack, "destroyed", "qa", "damaged")
    assert snapshot(conn) == before
    assert run(capsys, conn, "batch", "reconcile", "B1")[0] == 0

    rc, out, _ = run(capsys, conn, "batch", "reopen", "B1", "--reason", "customer complaint 4711")
    assert rc == 0 and "reopened" in out and state(conn) == "reopened"
    with pytest.raises(LedgerError):
        Ledger(conn, "B1")  # rework only, no line
    rc, out, _ = run(capsys, conn, "rework", "remove", GTIN, pack, "--reason", "damaged")
    assert rc == 0 and f"removed from case {case}" in out and out.startswith("pack ")
    rc, out, _ = run(capsys, conn, "batch", "reconcile", "B1")
    assert rc == 1 and "PROBLEM" in out and "not in a closed case" in out
    rc, out, _ = run(capsys, conn, "batch", "close", "B1")
    assert rc == 1 and state(conn) == "reopened"
    rc, out, _ = run(capsys, conn, "rework", "add", case, GTIN, pack, "--reason", "inspected, fine")
    assert rc == 0 and f"pack {pack} added to case {case}" in out
    rc, out, _ = run(capsys, conn, "batch", "close", "B1")
    assert rc == 0 and "no discrepancy" in out and state(conn) == "closed"
    assert audit.verify(conn)[0], audit.verify(conn)[2]
    actions = [r[3] for r in audit.records(conn)]
    assert actions.count("batch.reopen") == 1 and "batch.close" in actions


def test_reconcile_exit_status_says_whether_it_passed(line, capsys):
    conn = line.ledger.conn
    line.unit(0)
    rc, out, _ = run(capsys, conn, "batch", "reconcile", "B1")
    assert rc == 1 and "PROBLEM" in out
    for u in range(1, 6):
        line.unit(u)  # six packs: two full cases on a full pallet
    rc, out, _ = run(capsys, conn, "batch", "reconcile", "B1")
    assert rc == 0 and "no discrepancy" in out


def test_close_refuses_a_batch_that_made_nothing(conn, capsys):
    before = snapshot(conn)
    rc, out, err = run(capsys, conn, "batch", "close", "B1")
    assert rc == 1 and "nothing was made (0 of 100 planned packs)" in out and "abort" in err
    assert "no discrepancy" not in out and state(conn) == "running"
    assert snapshot(conn) == before


def test_short_batch_closes_with_a_warning_in_the_report(line, capsys):
    report = full_run(line)
    assert report.warnings == ["6 of 100 planned packs made (6.0 %): short batch"]
    assert "WARNING: 6 of 100 planned packs made" in "\n".join(report.lines())
    (rec,) = [r for r in audit.records(line.ledger.conn) if r[3] == "batch.close"]
    assert "short batch" in rec[4]


def test_create_refuses_duplicate_lot_and_zero_gtin_and_warns_pool_too_small(conn, capsys):
    before = snapshot(conn)
    rc, _, err = run(capsys, conn, "batch", "create", "B2", GTIN, "L1", "2031-01-31", "--planned", "5",
                     "--case-size", "2", "--pallet-size", "2")
    assert rc == 1 and "lot is already used by another batch of the same GTIN" in err
    rc, _, err = run(capsys, conn, "batch", "product", "00000000000000", "Nothing", "--market", "EU_FMD", "--prefix-len", "7")
    assert rc == 1 and "not an allocated key" in err
    rc, _, err = run(capsys, conn, "batch", "product", "09506000134353", "Bad", "--market", "EU_FMD", "--prefix-len", "7")
    assert rc == 1 and "bad check digit" in err
    assert snapshot(conn) == before
    free = serials.available(conn, GTIN)
    rc, out, err = run(capsys, conn, "batch", "create", "B3", GTIN, "L3", "2031-01-31", "--planned", str(free + 500),
                       "--case-size", "2", "--pallet-size", "2")
    assert rc == 0 and "created batch B3" in out
    assert f"has {free} available, but the {free + 500} planned packs need {free + 500} more (short by 500)" in err
    assert any("(short by 500)" in w for w in reconcile.reconcile(conn, "B3").warnings)


def second_batch(conn):
    masterdata.create_batch(conn, "B2", GTIN, "L2", "2030-01-31", 100, 3, 2)
    masterdata.start_batch(conn, "B2")
    led = Ledger(conn, "B2")
    with transaction(conn):
        led.queue_codes(10)
    other = Line(led, device_id="dev2", boot_id=1)
    for u in range(3):
        other.unit(u)
    loose = conn.execute("SELECT serial FROM serial WHERE batch_id='B2' AND state='commissioned'").fetchone()[0]
    rework.remove_pack(conn, GTIN, loose, "qa", "out of its case, so only the batch rule stands in the way")
    return loose


@pytest.mark.parametrize("how", ["add", "replace"])
def test_rework_add_and_replace_follow_one_rule(line, how):
    conn = line.ledger.conn
    for u in range(3):
        line.unit(u)  # one full closed case in B1
    case = conn.execute("SELECT sscc FROM container WHERE batch_id='B1' AND level='case' AND state='closed'").fetchone()[0]
    mine = packs_in(conn, case)
    foreign = second_batch(conn)
    if how == "add":
        rework.remove_pack(conn, GTIN, mine[0], "qa", "make room")
    before = snapshot(conn)
    with pytest.raises(rework.ReworkError, match=f"pack {foreign} belongs to batch B2, case {case} to B1"):
        if how == "add":
            rework.add_pack(conn, case, GTIN, foreign, "qa", "swap")
        else:
            rework.replace_pack(conn, GTIN, mine[0], foreign, "qa", "swap")
    assert snapshot(conn) == before
    # a pack of its own batch, out of any case, goes in by either path
    line.unit(3)
    spare = conn.execute("SELECT serial FROM serial WHERE batch_id='B1' AND state='commissioned' AND serial NOT IN"
                         " (SELECT serial FROM packed p JOIN container c USING (container_id) WHERE c.state='closed')"
                         ).fetchone()[0]
    conn.execute("DELETE FROM packed WHERE serial=?", (spare,))  # take it out of the open case
    if how == "add":
        rework.add_pack(conn, case, GTIN, spare, "qa", "swap")
    else:
        rework.replace_pack(conn, GTIN, mine[0], spare, "qa", "swap")
    assert spare in packs_in(conn, case) and len(packs_in(conn, case)) == 3


def test_an_aborted_batch_takes_no_new_serials(conn):
    lifecycle.abort(conn, "B1", "qa", "line broke down")
    with pytest.raises(sqlite3.IntegrityError, match="only to a running batch"):
        with transaction(conn):
            serials.allocate(conn, "B1", GTIN, 1)
    assert conn.execute("SELECT count(*) FROM serial WHERE batch_id='B1'").fetchone() == (0,)


def test_abort_refused_while_an_agent_runs_the_batch(conn, capsys):
    import fcntl
    (path,) = [r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"]
    with open(f"{path}.dev1.agent.lock", "a+") as held:  # what host/agent.py holds while it serves
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on line-pc, batch B1\n")
        held.flush()
        rc, _, err = run(capsys, conn, "batch", "abort", "B1", "--reason", "stuck?")
        assert rc == 1 and "being run by an agent (pid 4242 on line-pc, batch B1)" in err
        assert state(conn) == "running"
    rc, out, _ = run(capsys, conn, "batch", "abort", "B1", "--reason", "agent gone")  # lock released: stale file
    assert rc == 0 and state(conn) == "aborted"


def test_close_refused_while_an_agent_runs_the_batch(line, capsys):
    import sys
    sys.path.insert(0, "tests/host")
    from serialine.host.agent import Agent
    from test_faults_agent import ScriptedLink
    conn = line.ledger.conn
    for u in range(6):  # two full cases on one full pallet: closable
        line.unit(u)
    agent = Agent(conn, "B1", ScriptedLink())  # a real agent, holding its lock beside the ledger
    agent.start()
    before = snapshot(conn)
    rc, out, err = run(capsys, conn, "batch", "close", "B1")
    assert rc == 1 and err.count("\n") == 1, err
    assert "batch B1 is being run by an agent (pid" in err and "batch B1): stop the line" in err
    assert snapshot(conn) == before
    with pytest.raises(lifecycle.LifecycleError, match="being run by an agent"):
        reconcile.close_batch(conn, "B1", "qa")
    agent.release()
    rc, out, err = run(capsys, conn, "batch", "close", "B1")
    assert rc == 0 and "batch B1 closed" in out, err + out


def test_decommission_a_pack_in_the_open_case(line, capsys):
    import sys
    sys.path.insert(0, "tests/host")
    from serialine.host.agent import Agent
    from test_faults_agent import ScriptedLink
    conn = line.ledger.conn
    for u in range(4):  # a full case of 3, and pack 3 in the line's open case (no SSCC yet)
        line.unit(u)
    (pack,) = conn.execute("SELECT p.serial FROM packed p JOIN container c USING (container_id) WHERE c.state='open'"
                           ).fetchone()
    agent = Agent(conn, "B1", ScriptedLink())  # the line's agent is filling that case
    agent.start()
    before = snapshot(conn)
    rc, _, err = run(capsys, conn, "rework", "decommission", "destroyed", GTIN, pack, "--reason", "dropped")
    assert rc == 1 and err.count("\n") == 1, err
    assert f"pack {pack} is in the open case of batch B1, which an agent is filling (pid" in err
    assert snapshot(conn) == before
    agent.release()  # line stopped: the case may change
    events = conn.execute("SELECT count(*) FROM epcis_outbox").fetchone()[0]
    rc, out, err = run(capsys, conn, "rework", "decommission", "destroyed", GTIN, pack, "--reason", "dropped")
    assert rc == 0 and f"pack {pack} destroyed" in out, err
    assert conn.execute("SELECT state FROM serial WHERE serial=?", (pack,)).fetchone() == ("destroyed",)
    assert conn.execute("SELECT count(*) FROM packed WHERE serial=?", (pack,)).fetchone() == (0,)
    # the open case was never reported: only the pack's end of life, no unpacking event
    new = conn.execute("SELECT event_type, body FROM epcis_outbox ORDER BY seq LIMIT -1 OFFSET ?", (events,)).fetchall()
    assert [t for t, _ in new] == ["ObjectEvent"] and json.loads(outbox.body_text(new[0][1]))["action"] == "DELETE"
    rc, out, err = run(capsys, conn, "batch", "close", "B1")  # the emptied open case is dropped, not reported
    assert rc == 0 and "batch B1 closed" in out, err + out
    states = serial_states(conn)
    assert (states["commissioned"], states["destroyed"]) == (3, 1)
    assert conn.execute("SELECT count(*) FROM container WHERE level='case' AND state='closed'").fetchone() == (1,)
