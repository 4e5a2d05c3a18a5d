"""OPEN-SCS (OPC 30260) event manager and aggregation manager, serving the events the ledger made:
the EPCIS events of its outbox (host/epcis/outbox.py, written by host/reporting.py in the same
transaction as the ledger change), not a second event model.

- `EventManager.EPCISStream.GenerateFileForRead` (TemporaryFileTransferType): a batch's EPCIS 2.0
  JSON-LD document, exactly `serialine epcis export`'s (the outbox's stored events in outbox order,
  the same envelope), read with the file's `Read` and ended with its `Close` (or the stream's
  `CloseAndCommit`).
- Live: each outbox event once as it is recorded, an OPC UA event (BaseEventType) whose `Message`
  is the stored EPCIS event (JSON): ObjectEvents (commissioning, sampling, destroying,
  decommissioning) from `EventManager`, AggregationEvents (packing, unpacking) from
  `AggregationManager`; `SourceName` = the batch.
- The managers' receiving methods (a client reporting events of its own: SID…/Labels…/
  SNInvalidating…/AggregationPacking…/Unpacking…, GenerateFileForWrite) are refused with the
  NodeSet's return codes: this ledger records only what its own line did. Audited like every call."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import tempfile
import time

from asyncua import ua
from asyncua.common.instantiate_util import instantiate

from .. import audit
from ..db import transaction
from ..epcis import document, outbox
from .openscs import POOL_ACTION, Ret

log = logging.getLogger("serialine.opcua")

EVENT_MANAGER, AGGREGATION_MANAGER = "EventManager", "AggregationManager"
EVENT_MANAGER_TYPE, AGGREGATION_MANAGER_TYPE = 15062, 15094  # i= in the OPEN-SCS namespace
POLL_S = 0.5
READ_MAX = 1 << 20  # bytes per Read (the file's MaxByteStringLength)
OPEN_MAX = 8  # files open at once
IDLE_S = 60.0  # EPCISStream.ClientProcessingTimeout: a file not read for this long is closed
# receiving methods → the NodeSet's refusal (OPENSCSReturnEnum)
RECEIVERS = {
    EVENT_MANAGER: {**{m: 9 for m in ("SIDCommissioningEvent", "SIDDecommissioningEvent", "SIDDestroyingEvent",
                                      "SIDInspectingEvent", "SIDShippingEvent")},
                    **{m: 8 for m in ("LabelsEncodingEvent", "LabelsInspectingEvent", "LabelsSamplingEvent",
                                      "LabelsScrappingEvent")},
                    "SNInvalidatingEvent": 7},
    AGGREGATION_MANAGER: {"AggregationPackingEvent": 9, "AggregationUnpackingEvent": 9},
}
NOT_RECEIVED = "this ledger records only its own line's events (served by the EPCISStream and as OPC UA events)"


class StreamRefused(Exception):
    pass


def selected_batch(conn: sqlite3.Connection, options) -> str:
    """GenerateOptions (OPENSCSEventStreamArgumentDataType) → the batch: EventContext BATCH=…, or
    GTIN=… and LOT=…; the SN formats empty or EPCURI (the ledger's events carry EPC URIs)."""
    for field in ("SNFormat", "ParentSNFormat", "PackedElementSNFormat"):
        fmt = (getattr(options, field, "") or "").strip().upper()
        if fmt not in ("", "EPCURI"):
            raise StreamRefused(f"{field} {fmt!r}: the ledger's EPCIS events carry EPC URIs (EPCURI)")
    ctx: dict[str, str] = {}
    for kv in getattr(options, "EventContext", None) or []:
        key = (kv.Key or "").strip().upper()
        if key not in ("BATCH", "GTIN", "LOT") or key in ctx:
            raise StreamRefused(f"EventContext key {kv.Key!r}: BATCH, or GTIN and LOT, each once")
        ctx[key] = (kv.Value or "").strip()
    if "BATCH" in ctx and len(ctx) == 1:
        row = conn.execute("SELECT batch_id FROM batch WHERE batch_id=?", (ctx["BATCH"],)).fetchone()
    elif set(ctx) == {"GTIN", "LOT"}:
        row = conn.execute("SELECT batch_id FROM batch WHERE gtin=? AND lot=?", (ctx["GTIN"], ctx["LOT"])).fetchone()
    else:
        raise StreamRefused("EventContext: BATCH=<batch>, or GTIN=<gtin> and LOT=<lot>")
    if row is None:
        raise StreamRefused(f"no batch {', '.join(f'{k}={v}' for k, v in ctx.items())}")
    return row[0]


def write_document(conn: sqlite3.Connection, batch_id: str, fh) -> int:
    """The batch's EPCIS document (as `serialine epcis export` writes one) into fh → events."""
    head, tail = document.envelope(audit_head=audit.head(conn) if audit.present(conn) else None)
    fh.write(head)
    n = 0
    for body in outbox.batch_bodies(conn, batch_id):
        fh.write((b"," if n else b"") + body.encode("utf-8"))
        n += 1
    fh.write(tail)
    return n


class _Open:
    def __init__(self, fh, node, size: int):
        self.fh, self.node, self.size = fh, node, size
        self.used = time.monotonic()


class Managers:
    def __init__(self, server, idx: int, scs: int, conn, lock: asyncio.Lock, caller, refusal, refuse):
        self.server, self.idx, self.scs, self.conn, self.lock = server, idx, scs, conn, lock
        self.caller, self.refusal, self.refuse = caller, refusal, refuse  # refusal: server.gate
        self.files: dict[int, _Open] = {}
        self.next_handle = 1
        self.gens: dict[str, object] = {}
        self.seen = 0
        self.task: asyncio.Task | None = None

    async def build(self) -> None:
        s, scs = self.server, self.scs
        for name, type_id in ((EVENT_MANAGER, EVENT_MANAGER_TYPE), (AGGREGATION_MANAGER, AGGREGATION_MANAGER_TYPE)):
            (nid, *_) = await instantiate(s.nodes.objects, s.get_node(ua.NodeId(type_id, scs)),
                                          nodeid=ua.NodeId(name, self.idx), bname=ua.QualifiedName(name, self.idx))
            node = s.get_node(nid)
            for method, code in RECEIVERS[name].items():
                s.link_method(await node.get_child(f"{scs}:{method}"), self._receiver(method, code))
            await node.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
            self.gens[name] = await s.get_event_generator(ua.ObjectIds.BaseEventType, node)
            if name == EVENT_MANAGER:
                self.stream = await node.get_child(f"{scs}:EPCISStream")
                for prop in ("MaxEvents", "MaxEPCISObjectEventSIDs", "MaxEPCISaggregationEvents"):
                    await (await node.get_child(f"{scs}:{prop}")).write_value(ua.Variant(0, ua.VariantType.UInt32))
                s.link_method(await self.stream.get_child("0:GenerateFileForRead"), self._generate)
                s.link_method(await self.stream.get_child("0:GenerateFileForWrite"), self._refused_write)
                s.link_method(await self.stream.get_child("0:CloseAndCommit"), self._close)
                await (await self.stream.get_child("0:ClientProcessingTimeout")).write_value(
                    ua.Variant(IDLE_S * 1000, ua.VariantType.Double))
            else:
                await (await node.get_child(f"{scs}:MaxAggregationEvents")).write_value(ua.Variant(0, ua.VariantType.UInt32))
        async with self.lock:
            self.seen = await asyncio.to_thread(self._last_seq)  # before this start: history, in the stream

    # -- the ledger's events, live ------------------------------------------------------------
    def _last_seq(self) -> int:
        try:
            return self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM epcis_outbox").fetchone()[0]
        except sqlite3.OperationalError:  # a ledger without an outbox yet
            return 0

    def _new_rows(self) -> list[tuple]:
        try:
            return self.conn.execute("SELECT seq, batch_id, event_type, body FROM epcis_outbox WHERE seq > ?"
                                     " ORDER BY seq LIMIT 1000", (self.seen,)).fetchall()
        except sqlite3.OperationalError:
            return []

    async def publish(self) -> int:
        async with self.lock:
            rows = await asyncio.to_thread(self._new_rows)
        for seq, batch_id, kind, body in rows:
            gen = self.gens[AGGREGATION_MANAGER if kind == "AggregationEvent" else EVENT_MANAGER]
            gen.event.SourceName = batch_id
            gen.event.Message = ua.LocalizedText(outbox.body_text(body))
            gen.event.Severity = 100
            await gen.trigger()
            self.seen = seq
        return len(rows)

    async def follow(self) -> None:
        said = False
        while True:
            try:
                while await self.publish():
                    pass
                said = False
            except Exception:  # said once; the next poll tries again from the last event sent
                if not said:
                    log.exception("opcua: could not serve the ledger's new EPCIS events")
                    said = True
            await asyncio.sleep(POLL_S)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.follow())

    # -- EPCISStream (TemporaryFileTransferType) ----------------------------------------------
    def _make(self, user: str, options) -> tuple[str, int, object]:
        with transaction(self.conn):  # one read of the outbox, and its audit record
            try:
                batch_id = selected_batch(self.conn, options)
            except StreamRefused as exc:
                audit.append(self.conn, user, "opcua.GenerateFileForRead", {"why": str(exc)})
                raise
            fh = tempfile.TemporaryFile()
            n = write_document(self.conn, batch_id, fh)
            audit.append(self.conn, user, "opcua.GenerateFileForRead", {"batch_id": batch_id, "events": n})
        return batch_id, n, fh

    async def _generate(self, parent, options=None):
        user, _ = self.caller()
        for handle in [h for h, f in self.files.items() if time.monotonic() - f.used > IDLE_S]:
            log.info("opcua: EPCIS stream file %d not read for %g s: closed", handle, IDLE_S)
            await self._close(None, handle)
        if len(self.files) >= OPEN_MAX:
            return ua.StatusCode(ua.StatusCodes.BadTooManyOperations)
        async with self.lock:
            try:
                batch_id, n, fh = await asyncio.to_thread(self._make, user, _val(options))
            except StreamRefused as exc:
                log.info("opcua: GenerateFileForRead by %s refused: %s", user, exc)
                return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        size = fh.tell()
        fh.seek(0)
        handle, self.next_handle = self.next_handle, self.next_handle + 1
        s = self.server
        (fid, *_) = await instantiate(self.stream, s.get_node(ua.NodeId(ua.ObjectIds.FileType)),
                                      nodeid=ua.NodeId(f"{self.stream.nodeid.Identifier}.File{handle}", self.idx),
                                      bname=ua.QualifiedName(f"{batch_id}.jsonld", self.idx))
        node = s.get_node(fid)
        for prop, value, vtype in (("Size", size, ua.VariantType.UInt64), ("Writable", False, ua.VariantType.Boolean),
                                   ("UserWritable", False, ua.VariantType.Boolean),
                                   ("OpenCount", 1, ua.VariantType.UInt16)):
            await (await node.get_child(f"0:{prop}")).write_value(ua.Variant(value, vtype))
        for method, fn in (("Read", self._read), ("Close", self._close), ("GetPosition", self._position),
                           ("SetPosition", self._seek), ("Open", self._no), ("Write", self._no)):
            s.link_method(await node.get_child(f"0:{method}"), fn)
        self.files[handle] = _Open(fh, node, size)
        log.info("opcua: EPCIS stream of batch %s for %s: %d event(s), %d bytes", batch_id, user, n, size)
        return [ua.Variant(node.nodeid, ua.VariantType.NodeId), ua.Variant(handle, ua.VariantType.UInt32),
                ua.Variant(ua.NodeId(), ua.VariantType.NodeId)]

    def _file(self, handle):
        return self.files.get(int(_val(handle) or 0))

    async def _read(self, parent, handle, length):
        f = self._file(handle)
        if f is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        f.used = time.monotonic()
        data = f.fh.read(max(0, min(int(_val(length)), READ_MAX)))
        return [ua.Variant(data, ua.VariantType.ByteString)]

    async def _position(self, parent, handle):
        f = self._file(handle)
        if f is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        return [ua.Variant(f.fh.tell(), ua.VariantType.UInt64)]

    async def _seek(self, parent, handle, position):
        f = self._file(handle)
        if f is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        f.fh.seek(min(int(_val(position)), f.size))
        return []

    async def _close(self, parent, handle):
        f = self.files.pop(int(_val(handle) or 0), None)
        if f is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        f.fh.close()
        await self.server.delete_nodes([f.node], recursive=True)
        return [ua.Variant(ua.NodeId(), ua.VariantType.NodeId)] if parent == self.stream.nodeid else []

    async def _no(self, parent, *args):  # the file is made for reading by GenerateFileForRead only
        return ua.StatusCode(ua.StatusCodes.BadNotWritable)

    async def _refused_write(self, parent, *args):
        user, _ = self.caller()
        async with self.lock:
            await asyncio.to_thread(self.refuse, user, "opcua.GenerateFileForWrite", Ret.Undefined, NOT_RECEIVED)
        return ua.StatusCode(ua.StatusCodes.BadNotSupported)

    def _receiver(self, method: str, code: int):
        async def call(parent, *args):
            user, _ = self.caller()
            if why := await self.refusal(POOL_ACTION, method):  # receiving events changes a GTIN's serials too
                out = ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
                status = Ret.InsufficientPrivilegeToExecute
            else:
                why, status, out = NOT_RECEIVED, Ret(code), [ua.Variant(code, ua.VariantType.Int32)]
            async with self.lock:
                await asyncio.to_thread(self.refuse, user, f"opcua.{method}", status, why)
            return out
        return call


def _val(v):
    return v.Value if isinstance(v, ua.Variant) else v


def read_events(text: bytes) -> list[dict]:
    """A streamed document's events (for a client): the eventList of the JSON-LD document."""
    return json.loads(text)["epcisBody"]["eventList"]
