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


STARTUP_S = 180.0  # the agent's start (certificate, NodeSets, device boot): an upper bound, for a loaded machine


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


def counts_of(admin_value):
    return sum(c.Count for c in admin_value)


def start_line(tmp_path, users_file, *, select=True, extra=""):
    db = tmp_path / "serialine.db"
    batch = svc.make_batch(db)
    rig = svc.Rig(tmp_path, {})
    cfg = svc.line_file(tmp_path / "line.toml", rig, db)
    rig.f = svc.fields_of(cfg)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    cfg.write_text(cfg.read_text() + f'\n[opcua]\nendpoint = "{endpoint}"\nusers = "{users_file}"\n' + extra)
    return svc.Agent(cfg, batch if select else None), rig, Endpoint(endpoint, tmp_path / "client-pki"), db, batch


@pytest.fixture
def agent_line(tmp_path, users_file):
    agent, rig, ep, db, batch = start_line(tmp_path, users_file)
    try:
        yield agent, rig, ep, db, batch
    finally:
        print("the agent's log:\n" + agent.log)  # pytest shows it when the test failed
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


async def until(nodes, want, timeout=40.0):
    end = time.monotonic() + timeout
    while True:
        got = await current(nodes)
        if got == want or time.monotonic() > end:
            return got
        await asyncio.sleep(0.2)


def test_packml_follows_the_line_and_commands_drive_the_device(agent_line):
    agent, rig, ep, db, batch = agent_line
    agent.wait_status(lambda s: s["ready"], timeout=STARTUP_S)
    agent.wait_log(r"opcua: serving", timeout=STARTUP_S)
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
        await asyncio.to_thread(svc.wait_for, lambda: len(rig.packs) >= 8, 60, "8 packs on the line", rig)
        async with session(ep, "olga") as op:
            nodes = await line_nodes(op)
            pk, line, base, machine, execute = nodes
            await execute.call_method(f"{pk}:Hold")
            assert await until(nodes, ("Cleared", "Running", "Held")) == ("Cleared", "Running", "Held")
            assert control.status()["device"]["state"] == "STOPPED"
            with pytest.raises(ua.uaerrors.BadInvalidState):  # the operator's interlock: stopped until cleared
                await execute.call_method(f"{pk}:Start")
            await execute.call_method(f"{pk}:Unhold")  # line.clear: the latched stop released, running again
            assert await until(nodes, ("Cleared", "Running", "Execute")) == ("Cleared", "Running", "Execute")
            assert control.status()["device"]["state"] == "RUNNING"
            await machine.call_method(f"{pk}:Stop")
            assert await until(nodes, ("Cleared", "Running", "Held")) == ("Cleared", "Running", "Held")
            admin = await line.get_child(f"{pk}:Admin")
            end = time.monotonic() + 30
            while True:  # packs on the belt ride on to their outcome; then the figures stand
                processed = counts_of(await (await admin.get_child(f"{pk}:ProdProcessedCount")).read_value())
                defective = counts_of(await (await admin.get_child(f"{pk}:ProdDefectiveCount")).read_value())
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
    agent.wait_status(lambda s: s["ready"], timeout=STARTUP_S)
    agent.wait_log(r"opcua: serving", timeout=STARTUP_S)
    svc.wait_for(lambda: len(rig.packs) >= 4, 60, "4 packs", rig)

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


def test_set_product_selects_the_batch_speed_and_counters_per_reason(tmp_path, users_file):
    from serialine.host.opcua.packml import defective_by_reason
    agent, rig, ep, db, batch = start_line(tmp_path, users_file, select=False)
    try:
        agent.wait_log(r"opcua: serving", timeout=STARTUP_S)

        async def go():
            async with session(ep, "olga") as op:
                nodes = await line_nodes(op)
                pk, line = nodes[0], nodes[1]
                assert await until(nodes, ("Cleared", "Stopped", None)) == ("Cleared", "Stopped", None)
                idx = await op.client.get_namespace_index(NAMESPACE)
                listed = await (await line.get_child(f"{idx}:Batches")).read_value()
                (number,) = [int(x.split()[0]) for x in listed if x.split()[1] == batch]
                with pytest.raises(ua.uaerrors.BadInvalidArgument):
                    await line.call_method(f"{pk}:SetProduct", ua.Variant([ua.PackMLProductDataType(ProductID=999)],
                                                                         ua.VariantType.ExtensionObject))
                with pytest.raises(ua.uaerrors.BadNotSupported):
                    await line.call_method(f"{pk}:SetMachSpeed", ua.Variant(100.0, ua.VariantType.Float))
                await line.call_method(f"{pk}:SetProduct", ua.Variant([ua.PackMLProductDataType(ProductID=number)],
                                                                     ua.VariantType.ExtensionObject))
                assert await until(nodes, ("Cleared", "Running", "Execute"), 60) == ("Cleared", "Running", "Execute")
                status = await line.get_child(f"{pk}:Status")
                (product,) = await (await status.get_child(f"{pk}:Product")).read_value()
                assert product.ProductID == number
                await asyncio.to_thread(svc.wait_for, lambda: len(rig.packs) >= 12, 60, "12 packs", rig)
                end = time.monotonic() + 20
                while (speed := await (await status.get_child(f"{pk}:CurMachSpeed")).read_value()) <= 0 \
                        and time.monotonic() < end:
                    await asyncio.sleep(0.5)
                assert speed > 0
                await nodes[3].call_method(f"{pk}:Stop")
                # the packs on the belt run out to their outcome after Stop (seconds under load): the
                # ledger's figures are final once every pack has one; compare with those, not a moving target
                await asyncio.to_thread(svc.wait_for, lambda: ledger_counts(db, batch)[0] == len(rig.packs), 120,
                                        "every pack's outcome after Stop", rig)
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
                want = ledger_counts(db, batch), defective_by_reason(conn, batch)
                conn.close()
                admin = await line.get_child(f"{pk}:Admin")
                end = time.monotonic() + 30  # an upper bound: they follow within a status period (~1.5 s)
                while True:
                    processed = await (await admin.get_child(f"{pk}:ProdProcessedCount")).read_value()
                    defective = await (await admin.get_child(f"{pk}:ProdDefectiveCount")).read_value()
                    got = (counts_of(processed), counts_of(defective)), [(c.ID, c.Name, c.Count) for c in defective]
                    if got == want or time.monotonic() > end:
                        break
                    await asyncio.sleep(0.5)
                assert got == want and want[0][0] > 0, agent.log[-3000:]
        asyncio.run(go())
        audit = sqlite3.connect(db).execute("SELECT user, action FROM audit WHERE user LIKE 'opcua:%'").fetchall()
        assert ("opcua:olga", "batch.select") in audit and ("opcua:olga", "opcua.SetMachSpeed") in audit
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
        rig.close()


def test_start_and_batch_selection_refused_without_a_passed_challenge(tmp_path, users_file):
    agent, rig, ep, db, batch = start_line(tmp_path, users_file, extra='\n[policy]\nchallenge = "on_change"\n')
    try:
        agent.wait_status(lambda s: s["ready"], timeout=STARTUP_S)
        agent.wait_log(r"opcua: serving", timeout=STARTUP_S)

        def configured():  # the service records the configuration it applied: the challenge's change point
            c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            try:
                return c.execute("SELECT count(*) FROM audit WHERE action='line.configure'").fetchone()[0]
            finally:
                c.close()
        svc.wait_for(configured, 30, "a line.configure record", rig)

        async def go():
            async with session(ep, "emil") as eng:
                nodes = await line_nodes(eng)
                pk, line = nodes[0], nodes[1]
                idx = await eng.client.get_namespace_index(NAMESPACE)
                with pytest.raises(ua.uaerrors.BadInvalidState):
                    await nodes[4].call_method(f"{pk}:Start")
                with pytest.raises(ua.uaerrors.BadInvalidState):
                    await line.call_method(f"{idx}:SelectBatch", ua.Variant(batch, ua.VariantType.String))
        asyncio.run(go())
        rows = sqlite3.connect(db).execute("SELECT action, detail FROM audit WHERE user='opcua:emil'").fetchall()
        # Start is the agent's line.start: refused there by the rule (challenge.refused), and the call here
        assert sorted(a for a, _ in rows) == ["challenge.refused", "opcua.SelectBatch", "opcua.Start"], rows
        assert all("no passed challenge" in d for _, d in rows), rows
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
        rig.close()


def test_a_methods_refresh_and_the_polls_never_leave_an_older_snapshot_shown(tmp_path):
    """The poll's refresh and a method's (after its command) at once, made to interleave the worst
    way (the older one held at its first ledger read until the newer one has written): the nodes end
    with the newest snapshot and stay there. Before refreshes were one at a time, the older snapshot's
    writes landed last while `shown` named the newer, so at a standing line (nothing else changing)
    the state stayed Idle for good after Execute, Idle, Held. Real asyncua address space, control
    interface and ledger."""
    import contextvars

    from asyncua import Server

    from opcuakit import make_ledger
    from serialine.host.control import ControlServer
    from serialine.host.opcua.packml import PackML, batch_numbers
    from serialine.host.opcua.server import nodeset

    conn = make_ledger(tmp_path / "ledger.db")
    who = contextvars.ContextVar("who", default=None)
    older_held, newer_wrote, older_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def ledger(fn):
        if who.get() == "older" and fn is batch_numbers and not older_done.is_set():
            older_held.set()  # its snapshot read
            try:  # held until the newer one has written (with the fix it cannot: it waits its turn)
                await asyncio.wait_for(newer_wrote.wait(), 2.0)
            except asyncio.TimeoutError:
                pass
        if who.get() == "newer" and fn is not batch_numbers:  # its Product read: after its state writes
            newer_wrote.set()
            await older_done.wait()
        return await asyncio.to_thread(fn, conn)

    def snapshot(device_state):  # a standing line: no counts, so nothing else changes between snapshots
        return {"ready": True, "batch": "B1", "device": {"state": device_state}, "counts": {}, "alarms": []}

    async def go():
        server = Server()
        await server.init()
        await server.import_xml(str(nodeset("Opc.Ua.PackML.NodeSet2.xml")))
        await server.load_data_type_definitions()
        idx = await server.register_namespace(NAMESPACE)
        with ControlServer(port=0) as control:
            pk = PackML(server, idx, control.address, lambda: ("opcua:test", None), None, None, ledger)
            await pk.build()
            execute = pk.nodes["execute"]
            control.set_status(snapshot("RUNNING"))
            await pk.refresh()
            assert (await execute.read_value()).Text == "Execute"
            control.set_status(snapshot("IDLE"))

            async def older():
                who.set("older")
                try:
                    await pk.refresh()
                finally:
                    older_done.set()

            async def newer():
                who.set("newer")
                await pk.refresh()

            first = asyncio.create_task(older())
            await older_held.wait()
            control.set_status(snapshot("STOPPED"))
            await asyncio.gather(first, newer())
            await pk.refresh()  # the next poll: the same snapshot
            assert (await execute.read_value()).Text == "Held"
    asyncio.run(go())
