"""The company prefix runs out of SSCCs while the line runs: the case that fills cannot close.
The agent keeps the poll's events (the packs that passed stay commissioned, the full case stays
open), says so once (SSCC_EXHAUSTED), latches a line stop the operator cannot clear, and goes on
serving the device instead of failing the same poll forever."""

from serialine.host import aggregation
from serialine.host.agent import Agent
from serialine.host.db import transaction
from serialine.host.devices.camera import Camera
from serialine.host.devices.coder import Coder
from serialine.host.epcis import outbox
from serialine.host.sim.camera import SimCamera
from serialine.host.sim.coder import SimCoder
from serialine.protocol.schema import Reason, Verdict

from test_agent_devices import ScriptedLink, run_unit

STOP = ("COMMAND", {"command": 2, "arg": 0})


def test_sscc_exhausted_while_running_latches_a_line_stop_and_keeps_the_events(conn):
    prefix = "9506000"  # the product's company prefix (conftest): cases of 3, pallets of 2
    with transaction(conn):  # one SSCC left
        conn.execute("INSERT INTO sscc_counter VALUES (?, ?)", (prefix, aggregation.sscc_capacity(prefix)))
    with SimCoder() as sc, SimCamera(latency_ms=0, jitter_ms=0) as scam:
        link = ScriptedLink()
        agent = Agent(conn, "B1", link, Coder(*sc.address), Camera(*scam.address), fill_ahead=4, window_s=0.3)
        agent.start()
        assert [run_unit(agent, link, sc, scam, u) for u in range(3)] == [(Verdict.PASS, Reason.OK)] * 3
        (last,) = conn.execute("SELECT sscc FROM container WHERE level='case' AND state='closed'").fetchone()
        assert last.startswith("9" + prefix + "999999999")  # the prefix's last SSCC
        assert STOP not in link.sent
        acks = link.acks
        assert [run_unit(agent, link, sc, scam, u) for u in range(3, 6)] == [(Verdict.PASS, Reason.OK)] * 3
        assert STOP in link.sent and agent.line_stop and "no SSCC left" in agent.line_stop
        assert link.inbox == [] and link.acks > acks  # stored and acknowledged: no poll retried forever
        (n, detail), = conn.execute("SELECT count(*), detail FROM alarm_log WHERE alarm='SSCC_EXHAUSTED'")
        assert n == 1 and f"company prefix {prefix} has no SSCC left" in detail
        passed = [s for (s,) in conn.execute("SELECT serial FROM unit WHERE unit_seq BETWEEN 3 AND 5 ORDER BY unit_seq")]
        assert {st for (st,) in conn.execute(f"SELECT state FROM serial WHERE serial IN ({','.join('?' * 3)})",
                                             passed)} == {"commissioned"}
        case = conn.execute("SELECT state, sscc, (SELECT count(*) FROM packed p WHERE p.container_id=c.container_id)"
                            " FROM container c WHERE container_id=(SELECT container_id FROM packed WHERE serial=?)",
                            (passed[0],)).fetchone()
        assert case == ("open", None, 3)  # full, waiting for an SSCC
        commissioned = {epc.rsplit(".", 1)[1] for e in outbox.batch_events(conn, "B1")
                        if e.get("bizStep") == "commissioning" for epc in e["epcList"]}
        assert set(passed) <= commissioned
        # the line is stopped: the operator cannot restart it; a pack still in flight is kept too
        assert agent.command("CLEAR_ALARM") is False and agent.command("START") is False
        assert run_unit(agent, link, sc, scam, 6) == (Verdict.PASS, Reason.OK)
        assert conn.execute("SELECT state FROM serial WHERE serial=(SELECT serial FROM unit WHERE unit_seq=6)"
                            ).fetchone()[0] == "commissioned"
        assert conn.execute("SELECT count(*) FROM alarm_log WHERE alarm='SSCC_EXHAUSTED'").fetchone()[0] == 1
        assert link.sent.count(STOP) == 1
        agent.coder.close(); agent.camera.close()


def test_a_pallet_that_cannot_close_leaves_its_cases_closed_and_the_poll_applied(line):
    """Two SSCCs left: both cases close, the pallet they fill cannot. Nothing half-applied: the
    second case is closed and on the open pallet, its packing event waits for nothing."""
    conn, prefix = line.ledger.conn, "9506000"
    with transaction(conn):
        conn.execute("INSERT INTO sscc_counter VALUES (?, ?)", (prefix, aggregation.sscc_capacity(prefix) - 1))
    for u in range(6):
        assert line.unit(u)[0] == Verdict.PASS
    assert line.ledger.packing_stopped and "no SSCC left" in line.ledger.packing_stopped
    cases = conn.execute("SELECT state, sscc IS NOT NULL, parent_id IS NOT NULL FROM container WHERE level='case'"
                         " ORDER BY container_id").fetchall()
    assert cases == [("closed", 1, 1), ("closed", 1, 1)]
    assert conn.execute("SELECT state, sscc FROM container WHERE level='pallet'").fetchall() == [("open", None)]
    packing = [e for e in outbox.batch_events(conn, "B1") if e.get("bizStep") == "packing"]
    assert len(packing) == 2  # both cases, not the pallet
    assert conn.execute("SELECT count(*) FROM serial WHERE state='commissioned'").fetchone()[0] == 6
    assert conn.execute("SELECT count(*) FROM alarm_log WHERE alarm='SSCC_EXHAUSTED'").fetchone()[0] == 1
