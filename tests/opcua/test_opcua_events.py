"""OPEN-SCS event and aggregation managers over OPC UA on loopback: a ledger filled through the host
path (tools/bench_batch.make_ledger: the line's units, commissioning and packing; host/rework.py:
unpacking, sampling, destroying, decommissioning); an independent asyncua client reads the batch's
EPCIS document from EPCISStream and receives new events live — both equal the ledger's outbox."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asyncua import ua

from serialine.host import db, rework
from serialine.host.epcis import outbox, validate
from serialine.host.opcua.events import AGGREGATION_MANAGER, EVENT_MANAGER
from serialine.host.opcua.openscs import Ret
from serialine.host.opcua.server import NAMESPACE, OPENSCS_NS, Background
from serialine.tools import bench_batch

from opcuakit import free_port, run, session

BATCH, GTIN = bench_batch.BATCH, bench_batch.GTIN
STEPS = {"commissioning", "packing", "unpacking", "sampling", "destroying", "decommissioning"}


def rework_some(conn, n0: int = 0) -> None:
    """One pack out of its case and destroyed, one sampled, one decommissioned (the host's rework)."""
    s = [r for (r,) in conn.execute("SELECT serial FROM serial WHERE gtin=? AND state='commissioned' ORDER BY serial"
                                    " LIMIT 3 OFFSET ?", (GTIN, n0))]
    rework.remove_pack(conn, GTIN, s[0], "ann", "damaged")
    rework.decommission(conn, GTIN, s[0], "destroyed", "ann", "damaged")
    rework.decommission(conn, GTIN, s[1], "sampled", "ann", "QC sample")
    rework.decommission(conn, GTIN, s[2], "decommissioned", "ann", "stolen")


@pytest.fixture
def line(tmp_path, users_file):
    path = tmp_path / "line.db"
    conn, *_ = bench_batch.make_ledger(str(path), 40)
    rework_some(conn)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    served = db.connect(str(path))  # the server's own connection, as the service gives it
    bg = Background(served, endpoint, str(users_file), tmp_path / "pki").start()
    bg.conn, bg.endpoint, bg.pki, bg.path = conn, endpoint, tmp_path / "client-pki", path
    yield bg
    bg.stop()
    served.close()
    conn.close()


async def _managers(c):
    """The OPEN-SCS namespace's index, the event manager and the aggregation manager."""
    idx = await c.get_namespace_index(NAMESPACE)
    return (await c.get_namespace_index(OPENSCS_NS), await c.nodes.objects.get_child(f"{idx}:{EVENT_MANAGER}"),
            await c.nodes.objects.get_child(f"{idx}:{AGGREGATION_MANAGER}"))


def _options(c_ua, **ctx):
    kv = [ua.OPENSCSKeyValueDataType(Key=k, Value=v) for k, v in ctx.items()]
    return ua.OPENSCSEventStreamArgumentDataType(SNFormat="EPCURI", ParentSNFormat="EPCURI",
                                                 PackedElementSNFormat="EPCURI", EventContext=kv)


async def read_stream(c, options, chunk=4096, commit=False) -> bytes:
    scs, em, _ = await _managers(c)
    stream = await em.get_child(f"{scs}:EPCISStream")
    fid, handle, _ = await stream.call_method("0:GenerateFileForRead", ua.Variant(options, ua.VariantType.ExtensionObject))
    f = c.get_node(fid)
    size = await (await f.get_child("0:Size")).read_value()
    data = b""
    while True:
        part = await f.call_method("0:Read", ua.Variant(handle, ua.VariantType.UInt32), ua.Variant(chunk, ua.VariantType.Int32))
        if not part:
            break
        data += part
    if commit:  # the stream's own end of a transfer
        await stream.call_method("0:CloseAndCommit", ua.Variant(handle, ua.VariantType.UInt32))
    else:
        await f.call_method("0:Close", ua.Variant(handle, ua.VariantType.UInt32))
    with pytest.raises(ua.UaStatusCodeError):  # the temporary file is gone
        await f.call_method("0:Read", ua.Variant(handle, ua.VariantType.UInt32), ua.Variant(1, ua.VariantType.Int32))
    assert len(data) == size
    return data


def test_browse_the_managers_by_their_standard_types(line):
    async def go():
        async with session(line, "vera") as pc:
            c = pc.client
            scs, em, am = await _managers(c)
            for node, typ in ((em, "OPENSCSEventManagerObjectType"), (am, "OPENSCSAggregationManagerObjectType")):
                assert (await c.get_node(await node.read_type_definition()).read_browse_name()).Name == typ
            names = {(await n.read_browse_name()).Name for n in await em.get_children()}
            assert {"EPCISStream", "SIDCommissioningEvent", "SIDDestroyingEvent", "SIDDecommissioningEvent",
                    "LabelsSamplingEvent", "MaxEvents"} <= names
            names = {(await n.read_browse_name()).Name for n in await am.get_children()}
            assert {"AggregationPackingEvent", "AggregationUnpackingEvent", "MaxAggregationEvents"} <= names
            assert await (await am.get_child(f"{scs}:MaxAggregationEvents")).read_value() == 0
    run(go())


@pytest.mark.parametrize("context, chunk, commit", [
    ({"BATCH": BATCH}, 4096, False),
    ({"GTIN": GTIN, "LOT": "L1"}, 1 << 20, True)],  # the batch by its lot; a read in one chunk; the stream's commit
    ids=["batch", "gtin-lot"])
def test_the_stream_serves_the_batch_as_the_outbox_holds_it(line, context, chunk, commit):
    async def go():
        async with session(line, "vera") as pc:  # a viewer may read the ledger's events
            return await read_stream(pc.client, _options(ua, **context), chunk=chunk, commit=commit)
    doc = json.loads(run(go()))
    validate.json_document(doc)  # the EPCIS 2.0 schema, as `serialine epcis export` checks it
    events = doc["epcisBody"]["eventList"]
    # the outbox's events, in its order, unchanged (the envelope names the audit head of its time)
    assert doc["epcisBody"] == {"eventList": outbox.batch_events(line.conn, BATCH)}
    assert {e["bizStep"] for e in events} == STEPS
    audits = [json.loads(d) for (d,) in line.conn.execute(
        "SELECT detail FROM audit WHERE action='opcua.GenerateFileForRead' AND user='opcua:vera'")]
    assert [a["events"] for a in audits] == [len(events)]


def test_new_ledger_events_come_live_from_the_two_managers(line):
    before = line.conn.execute("SELECT MAX(seq) FROM epcis_outbox").fetchone()[0]
    got: dict[str, list] = {EVENT_MANAGER: [], AGGREGATION_MANAGER: []}

    class Handler:
        def __init__(self, name):
            self.name = name

        def event_notification(self, event):
            got[self.name].append((event.SourceName, event.Message.Text))

    async def go():
        async with session(line, "vera") as pc:
            _, em, am = await _managers(pc.client)
            for name, node in ((EVENT_MANAGER, em), (AGGREGATION_MANAGER, am)):
                sub = await pc.client.create_subscription(50, Handler(name))
                await sub.subscribe_events(node)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(rework_some, line.conn, 3)  # the ledger records new events meanwhile
            want = line.conn.execute("SELECT COUNT(*) FROM epcis_outbox WHERE seq > ?", (before,)).fetchone()[0]
            deadline = time.monotonic() + 60  # a bound for a stuck server: the loop ends once they all came
            while sum(map(len, got.values())) < want and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
    run(go())
    rows = [(t, outbox.body_text(b)) for t, b in line.conn.execute(
        "SELECT event_type, body FROM epcis_outbox WHERE seq > ? ORDER BY seq", (before,))]
    assert [b for t, b in rows if t == "AggregationEvent"] == [m for _, m in got[AGGREGATION_MANAGER]]
    assert [b for t, b in rows if t == "ObjectEvent"] == [m for _, m in got[EVENT_MANAGER]]
    assert {s for v in got.values() for s, _ in v} == {BATCH}
    assert {json.loads(b)["bizStep"] for _, b in rows} == STEPS - {"commissioning", "packing"}


def test_receiving_methods_refused_with_the_nodesets_codes_and_audited(line):
    async def go():
        async with session(line, "emil") as pc:
            c = pc.client
            scs, em, am = await _managers(c)
            label = ua.OPENSCSLabelCollectionDataType(LabelCollection=[ua.OPENSCSLabelDataType(ID="x")])
            fmt = ua.Variant("EPCURI", ua.VariantType.String)
            sid = await em.call_method(f"{scs}:SIDCommissioningEvent", ua.Variant(label, ua.VariantType.ExtensionObject),
                                       fmt, ua.Variant([], ua.VariantType.ExtensionObject))
            agg = await am.call_method(f"{scs}:AggregationPackingEvent", ua.Variant([], ua.VariantType.ExtensionObject),
                                       fmt, fmt, ua.Variant([], ua.VariantType.ExtensionObject))
            stream = await em.get_child(f"{scs}:EPCISStream")
            bad = []
            for opts in (_options(ua, BATCH="NOPE"), _options(ua, LOT="L1"),
                         ua.OPENSCSEventStreamArgumentDataType(SNFormat="LITERAL",
                                                               EventContext=[ua.OPENSCSKeyValueDataType(Key="BATCH", Value=BATCH)])):
                with pytest.raises(ua.UaStatusCodeError) as e:
                    await stream.call_method("0:GenerateFileForRead", ua.Variant(opts, ua.VariantType.ExtensionObject))
                bad.append(e.value.code)
            with pytest.raises(ua.UaStatusCodeError) as e:
                await stream.call_method("0:GenerateFileForWrite", ua.Variant(None))
            return sid, agg, bad, e.value.code
        
    sid, agg, bad, write = run(go())
    assert sid == Ret.UnableToAcceptSIDEvents and agg == Ret.UnableToAcceptSIDEvents
    assert bad == [ua.StatusCodes.BadInvalidArgument] * 3 and write == ua.StatusCodes.BadNotSupported
    rows = dict(line.conn.execute("SELECT action, detail FROM audit WHERE user='opcua:emil' AND action IN "
                                  "('opcua.SIDCommissioningEvent', 'opcua.AggregationPackingEvent')"))
    assert json.loads(rows["opcua.SIDCommissioningEvent"])["return"] == "UnableToAcceptSIDEvents"

    async def viewer():
        async with session(line, "vera") as pc:
            scs, em, _ = await _managers(pc.client)
            with pytest.raises(ua.UaStatusCodeError) as e:
                await em.call_method(f"{scs}:SIDDestroyingEvent", ua.Variant(None), ua.Variant("EPCURI"),
                                     ua.Variant([], ua.VariantType.ExtensionObject))
            return e.value.code
    assert run(viewer()) == ua.StatusCodes.BadUserAccessDenied


def test_after_a_simulated_run_the_stream_equals_the_export(tmp_path, users_file):
    """`serialine sim` (the agent service on the firmware, the simulated coder and camera) fills the
    ledger; the EPCISStream serves the batch's events exactly as `serialine epcis export` writes them."""
    import subprocess
    import sys
    out = tmp_path / "out"
    sim = subprocess.run([sys.executable, "-m", "serialine.host.cli", "sim", "--scenario", "nominal", "--units", "40",
                          "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert sim.returncode == 0, sim.stderr
    served = db.connect(str(out / "serialine.db"))
    (batch,) = outbox.batches(served)
    export = subprocess.run([sys.executable, "-m", "serialine.host.cli", "epcis", "export", "--batch", batch,
                             "--db", str(out / "serialine.db"), "--out", str(tmp_path / "export")],
                            capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr
    exported = json.loads((tmp_path / "export" / f"{batch}.jsonld").read_text())["epcisBody"]["eventList"]
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    bg = Background(served, endpoint, str(users_file), tmp_path / "pki").start()
    bg.endpoint, bg.pki = endpoint, tmp_path / "client-pki"
    try:
        async def go():
            async with session(bg, "vera") as pc:
                return await read_stream(pc.client, _options(ua, BATCH=batch), chunk=1 << 16)
        events = json.loads(run(go()))["epcisBody"]["eventList"]
    finally:
        bg.stop()
    assert events == exported == outbox.batch_events(served, batch)
    assert {e["bizStep"] for e in events} >= {"commissioning", "packing"}
    served.close()
