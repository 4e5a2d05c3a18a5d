"""PackML over OPC UA against `serialine agent run` with [opcua] in its line file, running the
firmware in the MicroPython unix port with the simulated coder and camera (tests/host/test_service.py's
rig): browse by standard browse names, Hold / Unhold / Start / Stop and see the device follow, the
Admin counters equal the ledger's, a viewer cannot command."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from asyncua import ua

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "host"))
import test_service as svc  # noqa: E402  the service's own rig (real firmware, TCP coder and camera)

from opcuakit import free_port, session  # noqa: E402
from serialine.host.opcua.packml import LINE  # noqa: E402
from serialine.host.opcua.server import NAMESPACE, PACKML_NS  # noqa: E402


class Endpoint:
    def __init__(self, endpoint, pki):
        self.endpoint, self.pki = endpoint, pki


def ledger_counts(db, batch):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = dict(conn.execute("SELECT outcome, COUNT(*) FROM unit WHERE batch_id=? AND outcome IS NOT NULL"
                                 " GROUP BY 1", (batch,)).fetchall())
    finally:
        conn.close()
    total = sum(rows.values())
    return total, total - rows.get("PASSED", 0)


@pytest.fixture
def agent_line(tmp_path, users_file):
    db = tmp_path / "serialine.db"
    batch = svc.make_batch(db)
    rig = svc.Rig(tmp_path, {})
    cfg = svc.line_file(tmp_path / "line.toml", rig, db)
    rig.f = svc.fields_of(cfg)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    cfg.write_text(cfg.read_text() + f'\n[opcua]\nendpoint = "{endpoint}"\nusers = "{users_file}"\n')
    agent = svc.Agent(cfg, batch)
    try:
        yield agent, rig, Endpoint(endpoint, tmp_path / "client-pki"), db, batch
    finally:
        agent.kill()
        rig.close()


async def line_nodes(pc):
    c = pc.client
    pk = await c.get_namespace_index(PACKML_NS)
    line = await c.nodes.objects.get_child(f"{await c.get_namespace_index(NAMESPACE)}:{LINE}")
    base = await line.get_child(f"{pk}:BaseStateMachine")
    machine = await base.get_child(f"{pk}:MachineState")
    execute = await machine.get_child(f"{pk}:ExecuteState")
    return pk, line, base, machine, execute


async def current(nodes):
    _, _, base, machine, execute = nodes
    out = []
    for n in (base, machine, execute):
        out.append((await (await n.get_child("0:CurrentState")).read_value()).Text or None)
    return tuple(out)


async def until(nodes, want, timeout=20.0):
    end = time.monotonic() + timeout
    while True:
        got = await current(nodes)
        if got == want or time.monotonic() > end:
            return got
        await asyncio.sleep(0.2)


def test_packml_follows_the_line_and_commands_drive_the_device(agent_line):
    agent, rig, ep, db, batch = agent_line
    agent.wait_status(lambda s: s["ready"], timeout=60)
    agent.wait_log(r"opcua: serving", timeout=30)
    control = agent.control

    async def go():
        async with session(ep, "vera") as viewer:
            nodes = await line_nodes(viewer)
            pk, line = nodes[0], nodes[1]
            typ = viewer.client.get_node(await line.read_type_definition())
            assert (await typ.read_browse_name()).Name == "PackMLBaseObjectType"
            assert await until(nodes, ("Cleared", "Running", "Execute")) == ("Cleared", "Running", "Execute")
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await nodes[4].call_method(f"{pk}:Hold")
            assert control.status()["device"]["state"] == "RUNNING"
        await asyncio.to_thread(svc.wait_for, lambda: len(rig.packs) >= 8, 30, "8 packs on the line", rig)
        async with session(ep, "olga") as op:
            nodes = await line_nodes(op)
            pk, line, base, machine, execute = nodes
            await execute.call_method(f"{pk}:Hold")
            assert await until(nodes, ("Cleared", "Running", "Held")) == ("Cleared", "Running", "Held")
            assert control.status()["device"]["state"] == "STOPPED"
            with pytest.raises(ua.uaerrors.BadInvalidState):  # the operator's interlock: stopped until cleared
                await execute.call_method(f"{pk}:Start")
            await execute.call_method(f"{pk}:Unhold")
            got = await until(nodes, ("Cleared", "Running", "Execute"), 5)
            if got != ("Cleared", "Running", "Execute"):
                await execute.call_method(f"{pk}:Start")
            assert await until(nodes, ("Cleared", "Running", "Execute")) == ("Cleared", "Running", "Execute")
            assert control.status()["device"]["state"] == "RUNNING"
            await machine.call_method(f"{pk}:Stop")
            assert await until(nodes, ("Cleared", "Running", "Held")) == ("Cleared", "Running", "Held")
            admin = await line.get_child(f"{pk}:Admin")
            end = time.monotonic() + 30
            while True:  # packs on the belt ride on to their outcome; then the figures stand
                processed = (await (await admin.get_child(f"{pk}:ProdProcessedCount")).read_value()).Count
                defective = (await (await admin.get_child(f"{pk}:ProdDefectiveCount")).read_value()).Count
                if (processed, defective) == ledger_counts(db, batch) and processed > 0 or time.monotonic() > end:
                    break
                await asyncio.sleep(0.5)
            assert (processed, defective) == ledger_counts(db, batch) and processed > 0
    asyncio.run(go())
    assert agent.stop() == 0, agent.log
    audit = sqlite3.connect(db).execute("SELECT user, action FROM audit WHERE user LIKE 'opcua:%'").fetchall()
    assert ("opcua:olga", "line.stop") in audit and ("opcua:olga", "line.clear") in audit
    assert ("opcua:vera", "opcua.Hold") in audit and ("opcua:olga", "opcua.Start") in audit  # the refusals too
    assert "Traceback" not in agent.log


class Events:
    def __init__(self):
        self.got = []

    def event_notification(self, event):
        self.got.append(event)


def test_a_lost_camera_is_held_with_an_alarm_event_and_clear_is_refused_until_back(agent_line):
    agent, rig, ep, db, batch = agent_line
    agent.wait_status(lambda s: s["ready"], timeout=60)
    agent.wait_log(r"opcua: serving", timeout=30)
    svc.wait_for(lambda: len(rig.packs) >= 4, 30, "4 packs", rig)

    async def go():
        async with session(ep, "olga") as op:
            nodes = await line_nodes(op)
            pk, line, base, machine, execute = nodes
            events = Events()
            sub = await op.client.create_subscription(100, events)
            await sub.subscribe_events(line)
            assert await until(nodes, ("Cleared", "Running", "Execute")) == ("Cleared", "Running", "Execute")
            host, port = rig.camera.address
            rig.camera.close()
            assert await until(nodes, ("Cleared", "Running", "Held")) == ("Cleared", "Running", "Held")
            end = time.monotonic() + 10
            while not any("CAMERA_LOST" in e.Message.Text for e in events.got) and time.monotonic() < end:
                await asyncio.sleep(0.2)
            lost = [e for e in events.got if "CAMERA_LOST" in e.Message.Text]
            assert lost and lost[0].SourceName == "camera" and lost[0].Severity == 800, [e.Message for e in events.got]
            with pytest.raises(ua.uaerrors.BadInvalidState):  # the operator's interlock: not while the camera is lost
                await base.call_method(f"{pk}:Clear")
            assert await current(nodes) == ("Cleared", "Running", "Held")
            return port
    port = asyncio.run(go())
    rig.camera = svc.SimCamera(latency_ms=2, jitter_ms=0, port=port).start()
    agent.wait_log(r"alarm camera CAMERA_BACK", 40)
    assert agent.stop() == 0, agent.log
