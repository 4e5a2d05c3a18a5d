"""PackML (OPC 30050) for the line: a PackMLBaseObjectType instance whose state follows the agent's
status snapshot (the control interface's `GET /status`) and whose commands are the control
interface's commands, so the operator's interlocks are the only ones (host/service.py decides,
audits and answers). The nested state machines of the NodeSet:

    BaseStateMachine: Aborted | Cleared ─ MachineState: Stopped | Stopping | Running ─ ExecuteState:
    Idle | Starting | Execute | Held

Status → state: no agent answering → Aborted; not ready (not configured, no batch) → Stopped; the
service stopping → Stopping; resuming → Starting; a latched line stop (device STOPPED, a lost coder
or camera) → Held; device IDLE → Idle; RUNNING → Execute."""

from __future__ import annotations

import asyncio
import logging

from asyncua import ua
from asyncua.common.instantiate_util import instantiate

from ..control import Client, ControlError
from ...protocol.schema import Reason

log = logging.getLogger("serialine.opcua")

LINE = "Line"  # browse name of the instance under Objects (our namespace)
BASE_TYPE, MACHINE_TYPE, EXECUTE_TYPE, OBJECT_TYPE, ADMIN_TYPE = 3, 2, 1, 6, 5  # PackML NodeSet's i=
POLL_S = 0.5
# PackML command → (the control interface's command, the machine level that owns the method)
COMMANDS = {"Start": ("line.start", EXECUTE_TYPE), "Hold": ("line.stop", EXECUTE_TYPE),
            "Unhold": ("line.clear", EXECUTE_TYPE), "Reset": ("line.clear", EXECUTE_TYPE),
            "Stop": ("line.stop", MACHINE_TYPE), "Abort": ("line.stop", BASE_TYPE), "Clear": ("line.clear", BASE_TYPE)}
COUNTERS = ("ProdProcessedCount", "ProdDefectiveCount")  # arrays of PackMLCountDataType (the NodeSet's ValueRank 1)
STATUS_TYPE, PRODUCT_TYPE = 4, 18  # PackMLStatusObjectType, PackMLProductDataType
SPEED_WINDOW_S = 10.0  # CurMachSpeed: packs with an outcome per minute over this window
# UNECE Rec. 20 "H87" (piece), as OPC UA's EUInformation encodes a unit code
PIECE = ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                         UnitId=(ord("H") << 16) | (ord("8") << 8) | ord("7"), DisplayName=ua.LocalizedText("piece"),
                         Description=ua.LocalizedText("packs"))


def states(status: dict | None) -> tuple[str, str | None, str | None]:
    """(BaseStateMachine, MachineState, ExecuteState) current states for a status snapshot."""
    if status is None:
        return "Aborted", None, None
    device = status.get("device") or {}
    if status.get("stopping"):
        return "Cleared", "Stopping", None
    if not status.get("ready"):
        return "Cleared", "Stopped", None
    if status.get("resuming"):
        return "Cleared", "Running", "Starting"
    if device.get("state") == "STOPPED" or status.get("line_stop") or "lost" in (status.get("coder"),
                                                                               status.get("camera")):
        return "Cleared", "Running", "Held"
    if device.get("state") == "RUNNING":
        return "Cleared", "Running", "Execute"
    return "Cleared", "Running", "Idle"


def reason_id(reason: str) -> int:
    """A reject reason's counter ID: the line protocol's Reason code (protocol/schema.py), so an ID
    means the same on every line; an outcome without a reason (PURGED, UNKNOWN…) 1000 + its place."""
    try:
        return int(Reason[reason])
    except KeyError:
        return 1000 + OUTCOMES.index(reason) if reason in OUTCOMES else 1999


OUTCOMES = ("REJECTED_CONFIRMED", "REJECTED_UNCONFIRMED", "PURGED", "UNKNOWN", "DESTROYED")


def defective_by_reason(conn, batch_id: str) -> list[tuple[int, str, int]]:
    """The ledger's units of the batch without PASSED, per reject reason → [(ID, reason, count)]."""
    # the outcomes named (not "<> 'PASSED'"): unit_batch seeks the few, never walks the passed
    rows = conn.execute("SELECT COALESCE(reason, outcome), COUNT(*) FROM unit_row WHERE batch_id=? AND outcome IN"
                        f" ({', '.join(repr(o) for o in OUTCOMES)}) GROUP BY 1", (batch_id,)).fetchall()
    return sorted((reason_id(r), r, n) for r, n in rows)


def batch_numbers(conn) -> list[str]:
    """"N BATCH GTIN LOT STATE" of the batches that can be selected (N = SetProduct's ProductID)."""
    return [f"{n} {b} {g} {lot} {st}" for n, b, g, lot, st in conn.execute(
        "SELECT rowid, batch_id, gtin, lot, state FROM batch WHERE state IN ('created', 'running') ORDER BY rowid")]


def counters(status: dict | None) -> dict[str, int]:
    """The ledger's unit counts of the batch (the snapshot's `counts`): processed = units with an
    outcome, defective = those without PASSED (the same figures `serialine line status` shows)."""
    counts = (status or {}).get("counts") or {}
    processed = sum(v for k, v in counts.items() if k not in ("detected", "in_flight"))
    return {"ProdProcessedCount": processed, "ProdDefectiveCount": processed - counts.get("PASSED", 0)}


class PackML:
    def __init__(self, server, idx: int, control_address: str, caller, refusal, refused, ledger=None, secret=None):
        self.server, self.idx = server, idx
        self.ledger = ledger  # async fn(callable(conn)) → its result: a read of the ledger
        self.reasons: tuple = ((), None)  # (per-reason rows, the key they were read for)
        self.speed_marks: list[tuple[float, int]] = []
        self.control = Client(control_address)
        self.caller, self.refusal, self.refused = caller, refusal, refused  # refusal: server.gate
        self.secret = secret or (lambda: None)  # the ledger user's password: the control interface proves it
        self.nodes: dict[str, object] = {}
        self.state_ids: dict[str, ua.NodeId] = {}
        self.shown: tuple | None = None
        self.updating = asyncio.Lock()  # one update at a time (see refresh)
        self.task: asyncio.Task | None = None
        self.alarms_seen: set | None = None  # (at, source, alarm) of the snapshot's alarms already sent
        self.events = None

    async def build(self) -> None:
        s = self.server
        pk = await s.get_namespace_index("http://opcfoundation.org/UA/PackML/")
        self.pk = pk
        line = await s.nodes.objects.add_object(ua.NodeId(LINE, self.idx), ua.QualifiedName(LINE, self.idx),
                                                objecttype=ua.NodeId(OBJECT_TYPE, pk))
        base = await line.get_child(f"{pk}:BaseStateMachine")
        machine = await base.get_child(f"{pk}:MachineState")
        execute = await machine.get_child(f"{pk}:ExecuteState")
        levels = {BASE_TYPE: base, MACHINE_TYPE: machine, EXECUTE_TYPE: execute}
        for t in levels:  # the states' node ids, for CurrentState.Id
            for c in await s.get_node(ua.NodeId(t, pk)).get_children():
                if await c.read_node_class() == ua.NodeClass.Object:
                    self.state_ids.setdefault((await c.read_browse_name()).Name, c.nodeid)
        # the NodeSet's optional instance declarations we serve: asyncua instantiates only the
        # mandatory ones of nested objects, so the type's own declarations are instantiated here
        for name, (_, level) in COMMANDS.items():
            decl = await s.get_node(ua.NodeId(level, pk)).get_child(f"{pk}:{name}")
            (method_id, *_) = await instantiate(levels[level], decl, bname=ua.QualifiedName(name, pk),
                                                nodeid=ua.NodeId(f"{levels[level].nodeid.Identifier}.{name}", self.idx))
            s.link_method(s.get_node(method_id), self._command(name))
        for name in ("SetProduct", "SetMachSpeed"):
            s.link_method(await line.get_child(f"{pk}:{name}"), getattr(self, "_" + name))
        await line.add_method(ua.NodeId(f"{LINE}.SelectBatch", self.idx), ua.QualifiedName("SelectBatch", self.idx),
                              self._select_batch, [ua.VariantType.String], [])
        self.nodes["Batches"] = await line.add_variable(ua.NodeId(f"{LINE}.Batches", self.idx),
                                                        ua.QualifiedName("Batches", self.idx), [], ua.VariantType.String)
        status_node = await line.get_child(f"{pk}:Status")
        decl = await s.get_node(ua.NodeId(STATUS_TYPE, pk)).get_child(f"{pk}:Product")
        (prod_id, *_) = await instantiate(status_node, decl, bname=ua.QualifiedName("Product", pk),
                                          nodeid=ua.NodeId(f"{status_node.nodeid.Identifier}.Product", self.idx))
        self.nodes["Product"] = s.get_node(prod_id)
        for name in ("CurMachSpeed", "MachSpeed"):
            self.nodes[name] = await status_node.get_child(f"{pk}:{name}")
        admin = await line.get_child(f"{pk}:Admin")
        for name in COUNTERS:
            decl = await s.get_node(ua.NodeId(ADMIN_TYPE, pk)).get_child(f"{pk}:{name}")
            (var_id, *_) = await instantiate(admin, decl, bname=ua.QualifiedName(name, pk),
                                             nodeid=ua.NodeId(f"{admin.nodeid.Identifier}.{name}", self.idx))
            self.nodes[name] = s.get_node(var_id)
        for key, node in (("base", base), ("machine", machine), ("execute", execute)):
            self.nodes[key] = await node.get_child("0:CurrentState")
            self.nodes[key + ".id"] = await self.nodes[key].get_child("0:Id")
        await line.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        self.events = await s.get_event_generator(ua.ObjectIds.BaseEventType, line)
        await self.update(None)

    async def _alarm_events(self, status: dict | None) -> None:
        """Each alarm of the agent (the snapshot's latest ≤ 20) once, as a BaseEventType event of the
        Line: SourceName = where (camera, coder, device, agent), Message = "KIND: detail"."""
        alarms = (status or {}).get("alarms") or []
        keys = {(a.get("at"), a.get("source"), a.get("alarm")) for a in alarms}
        if self.alarms_seen is None:  # the ones before this server started are history, not news
            self.alarms_seen = keys
            return
        for a in alarms:
            key = (a.get("at"), a.get("source"), a.get("alarm"))
            if key in self.alarms_seen:
                continue
            self.alarms_seen.add(key)
            kind = str(a.get("alarm") or "")
            ev = self.events.event
            ev.SourceName = str(a.get("source") or "")
            ev.Message = ua.LocalizedText(f"{kind}: {a.get('detail') or ''}")
            ev.Severity = 800 if kind.endswith("_LOST") else 300 if kind.endswith(("_BACK", "RESUMED")) else 500
            await self.events.trigger()
        self.alarms_seen &= keys  # older ones left the snapshot for good

    async def _write_state(self, key: str, name: str | None) -> None:
        await self.nodes[key].write_value(ua.Variant(ua.LocalizedText(name or ""), ua.VariantType.LocalizedText))
        await self.nodes[key + ".id"].write_value(
            ua.Variant(self.state_ids.get(name, ua.NodeId()) if name else ua.NodeId(), ua.VariantType.NodeId))

    async def update(self, status: dict | None) -> None:
        if status is not None:
            await self._alarm_events(status)
        st, figures = states(status), counters(status)
        batch = (status or {}).get("batch")
        reasons = await self._reasons(batch, figures["ProdDefectiveCount"])
        speed = self._speed(figures["ProdProcessedCount"])
        batches = await self.ledger(batch_numbers) if self.ledger else []
        shown = (st, figures, reasons, speed, batch, batches)
        if shown == self.shown:
            return
        for key, name in zip(("base", "machine", "execute"), st):
            await self._write_state(key, name)
        count = ua.PackMLCountDataType
        n = figures["ProdProcessedCount"]
        await self.nodes["ProdProcessedCount"].write_value(ua.Variant(
            [count(ID=0, Name="processed", Unit=PIECE, Count=n, AccCount=n)], ua.VariantType.ExtensionObject))
        await self.nodes["ProdDefectiveCount"].write_value(ua.Variant(
            [count(ID=i, Name=r, Unit=PIECE, Count=k, AccCount=k) for i, r, k in reasons], ua.VariantType.ExtensionObject))
        for name in ("CurMachSpeed", "MachSpeed"):
            await self.nodes[name].write_value(ua.Variant(float(speed), ua.VariantType.Float))
        number = await self.ledger(lambda c: (c.execute("SELECT rowid FROM batch WHERE batch_id=?", (batch,)).fetchone()
                                              or (0,))[0]) if self.ledger and batch else 0
        await self.nodes["Product"].write_value(ua.Variant([ua.PackMLProductDataType(ProductID=number)] if batch else [],
                                                           ua.VariantType.ExtensionObject))
        await self.nodes["Batches"].write_value(ua.Variant(batches, ua.VariantType.String))
        if self.shown is None or st != self.shown[0]:
            log.info("opcua: PackML state %s", "/".join(x for x in st if x))
        self.shown = shown

    async def _reasons(self, batch: str | None, defective: int) -> tuple:
        """Per-reason counts from the ledger, read again only when the defective total moved."""
        key = (batch, defective)
        if self.ledger is None or batch is None:
            return ()
        if self.reasons[1] != key:
            self.reasons = (tuple(await self.ledger(lambda c: defective_by_reason(c, batch))), key)
        return self.reasons[0]

    def _speed(self, processed: int) -> float:
        """Packs per minute with an outcome, over the last SPEED_WINDOW_S (0 when the line stands)."""
        import time
        now = time.monotonic()
        marks = self.speed_marks
        marks.append((now, processed))
        while len(marks) > 2 and now - marks[1][0] >= SPEED_WINDOW_S:
            marks.pop(0)
        (t0, n0), (t1, n1) = marks[0], marks[-1]
        return round(60.0 * max(0, n1 - n0) / (t1 - t0), 1) if t1 - t0 >= 1.0 else 0.0

    async def _status(self) -> dict | None:
        try:
            return await asyncio.to_thread(self.control.status)
        except ControlError:
            return None

    async def refresh(self) -> None:
        """Show the agent's status now (the poll, and each method after its command). One at a time,
        the status read under the lock: an older snapshot's writes never land after a newer one's
        while `shown` names the newer (the nodes would then keep the older figures until a change)."""
        async with self.updating:
            await self.update(await self._status())

    async def follow(self) -> None:
        said = False
        while True:
            try:
                await self.refresh()
                said = False
            except Exception:  # a snapshot it cannot show: said once, the last state stands, it goes on
                if not said:
                    log.exception("opcua: PackML could not follow the agent's status")
                    said = True
            await asyncio.sleep(POLL_S)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.follow())

    async def _refuse(self, name: str, user: str, why: str, code) -> ua.StatusCode:
        log.warning("opcua: PackML %s by %s refused: %s", name, user, why)
        await self.refused(user, f"opcua.{name}", why)
        return ua.StatusCode(code)

    async def _challenge_missing(self) -> str | None:
        """host/challenge.py's rule for the line ([policy] challenge, as its configuration records say),
        for a batch selection (the agent's line.start applies it to Start)."""
        line = ((await self._status()) or {}).get("line_id")
        if self.ledger is None or not line:
            return None
        from .. import challenge
        return await self.ledger(lambda c: challenge.missing(c, line))

    async def _send(self, name: str, command: str, gated: bool, **args):
        """A PackML method → the control interface's command (its interlocks), for a changing role;
        `gated`: also refused here while the line's policy wants a passed challenge test."""
        user, _ = self.caller()
        if why := await self.refusal(command, name):  # the control command's own action in users.PERMISSIONS
            return await self._refuse(name, user, why, ua.StatusCodes.BadUserAccessDenied)
        if gated and (why := await self._challenge_missing()):
            return await self._refuse(name, user, why, ua.StatusCodes.BadInvalidState)
        try:
            await asyncio.to_thread(self.control.command, command, user, f"OPC UA PackML {name}",
                                    password=self.secret(), **args)
        except ControlError as exc:  # the agent's interlock (or no agent): said in the log, refused
            return await self._refuse(name, user, str(exc), ua.StatusCodes.BadInvalidState)
        await self.refresh()
        return []

    def _command(self, name: str):
        command = COMMANDS[name][0]

        async def call(parent, *args):  # Start's [policy] challenge: the agent's line.start refuses it
            return await self._send(name, command, False)
        return call

    async def _select_batch(self, parent, batch_id=None):
        batch_id = str(_val(batch_id) or "")
        if not batch_id:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        return await self._send("SelectBatch", "batch.select", True, batch=batch_id)

    async def _SetProduct(self, parent, products=None):
        """Product[0].ProductID = the batch's number (Line.Batches lists "N BATCH GTIN LOT STATE")."""
        products = _val(products) or []
        products = products if isinstance(products, list) else [products]
        number = getattr(products[0], "ProductID", None) if len(products) == 1 else None
        found = await self.ledger(lambda c: c.execute("SELECT batch_id FROM batch WHERE rowid=?", (number,)).fetchone()) \
            if self.ledger and isinstance(number, int) else None
        if found is None:
            user, _ = self.caller()
            return await self._refuse("SetProduct", user, f"SetProduct: one Product whose ProductID is a batch number "
                                      f"of Line.Batches, got {number!r}", ua.StatusCodes.BadInvalidArgument)
        return await self._send("SetProduct", "batch.select", True, batch=found[0])

    async def _SetMachSpeed(self, parent, speed=None):
        user, _ = self.caller()
        return await self._refuse("SetMachSpeed", user, "the line's speed is the conveyor's (its PLC's): Serialine "
                                  "follows it, CurMachSpeed shows it", ua.StatusCodes.BadNotSupported)


def _val(v):
    return v.Value if isinstance(v, ua.Variant) else v
