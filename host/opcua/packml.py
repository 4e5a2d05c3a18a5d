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

log = logging.getLogger("serialine.opcua")

LINE = "Line"  # browse name of the instance under Objects (our namespace)
BASE_TYPE, MACHINE_TYPE, EXECUTE_TYPE, OBJECT_TYPE, ADMIN_TYPE = 3, 2, 1, 6, 5  # PackML NodeSet's i=
POLL_S = 0.5
# PackML command → (the control interface's command, the machine level that owns the method)
COMMANDS = {"Start": ("line.start", EXECUTE_TYPE), "Hold": ("line.stop", EXECUTE_TYPE),
            "Unhold": ("line.clear", EXECUTE_TYPE), "Reset": ("line.clear", EXECUTE_TYPE),
            "Stop": ("line.stop", MACHINE_TYPE), "Abort": ("line.stop", BASE_TYPE), "Clear": ("line.clear", BASE_TYPE)}
COUNTERS = ("ProdProcessedCount", "ProdDefectiveCount")
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


def counters(status: dict | None) -> dict[str, int]:
    """The ledger's unit counts of the batch (the snapshot's `counts`): processed = units with an
    outcome, defective = those without PASSED (the same figures `serialine line status` shows)."""
    counts = (status or {}).get("counts") or {}
    processed = sum(v for k, v in counts.items() if k not in ("detected", "in_flight"))
    return {"ProdProcessedCount": processed, "ProdDefectiveCount": processed - counts.get("PASSED", 0)}


class PackML:
    def __init__(self, server, idx: int, control_address: str, caller, roles_changing, refused):
        self.server, self.idx = server, idx
        self.control = Client(control_address)
        self.caller, self.changing, self.refused = caller, roles_changing, refused
        self.nodes: dict[str, object] = {}
        self.state_ids: dict[str, ua.NodeId] = {}
        self.shown: tuple | None = None
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
        if (st, figures) == self.shown:
            return
        for key, name in zip(("base", "machine", "execute"), st):
            await self._write_state(key, name)
        for i, name in enumerate(COUNTERS, 1):
            await self.nodes[name].write_value(ua.Variant(
                ua.PackMLCountDataType(ID=i, Name=name, Unit=PIECE, Count=figures[name], AccCount=figures[name]),
                ua.VariantType.ExtensionObject))
        if self.shown is None or st != self.shown[0]:
            log.info("opcua: PackML state %s", "/".join(x for x in st if x))
        self.shown = (st, figures)

    async def _status(self) -> dict | None:
        try:
            return await asyncio.to_thread(self.control.status)
        except ControlError:
            return None

    async def follow(self) -> None:
        said = False
        while True:
            try:
                await self.update(await self._status())
                said = False
            except Exception:  # a snapshot it cannot show: said once, the last state stands, it goes on
                if not said:
                    log.exception("opcua: PackML could not follow the agent's status")
                    said = True
            await asyncio.sleep(POLL_S)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.follow())

    def _command(self, name: str):
        command = COMMANDS[name][0]

        async def call(parent, *args):
            user, role = self.caller()
            if role not in self.changing:
                log.warning("opcua: PackML %s by %s refused: role %s", name, user, role or "none")
                await self.refused(user, f"opcua.{name}", f"role {role or 'none'} may not call {name}")
                return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
            try:
                await asyncio.to_thread(self.control.command, command, user, f"OPC UA PackML {name}")
            except ControlError as exc:  # the agent's interlock (or no agent): said in the log, refused
                log.warning("opcua: PackML %s by %s refused: %s", name, user, exc)
                await self.refused(user, f"opcua.{name}", str(exc))
                return ua.StatusCode(ua.StatusCodes.BadInvalidState)
            await self.update(await self._status())
            return []
        return call
