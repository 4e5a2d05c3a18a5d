"""The Serialine wire protocol: the one definition both runtimes are built from.

Everything that speaks the wire is generated from this module or tested byte for byte
against it: the fast host codec, the firmware codec (`firmware/wire.py`, made by
`tools/gen_wire.py`), `docs/protocol.md` and the shared test vectors.

Frame (all integers little-endian):

    sof(2) = A5 5A | length(1) | seq(1) | ack(1) | msg_type(1) | payload(length) | crc(4)

- `length` is the payload length, 0..MAX_PAYLOAD; a frame is at most MAX_FRAME bytes.
- `seq` numbers sequenced (reliable) messages modulo 256; unsequenced messages send 0.
- `ack` is the next sequence number the sender expects from its peer (cumulative ack).
- `crc` is CRC-32/ISO-HDLC (the zlib / binascii.crc32 polynomial, reflected, init and
  xorout 0xFFFFFFFF) over length..payload, i.e. every byte after the start-of-frame marker.
  CRC-32 rather than CRC-16 because the stream decoder must never yield a false frame
  under sustained corruption: 2**-32 per corrupted frame instead of 2**-16.

Units: positions are encoder counts from the photo-eye, times are microseconds of the
device's ticks_us clock. Both wrap at 2**30 (a board's small-int range), so the device
compares them only through ticks_diff-style arithmetic, and every field on the per-unit
path holds a value below 2**30 (no big-int allocation on a 32-bit board).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from construct import (
    Bytes,
    Checksum,
    Const,
    Construct,
    Enum,
    Int8ul,
    Int16sl,
    Int16ul,
    Int32sl,
    Int32ul,
    PaddedString,
    PascalString,
    RawCopy,
    Struct,
    this,
)
from crcmod.predefined import mkPredefinedCrcFun

PROTOCOL_VERSION = 1

SOF = b"\xa5\x5a"
HEADER_SIZE = 6  # sof(2) length seq ack msg_type
CRC_SIZE = 4
MAX_PAYLOAD = 96
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
SEQ_MODULO = 256
WRAP = 1 << 30  # ticks_us and encoder positions wrap here on every runtime we model

crc32 = mkPredefinedCrcFun("crc-32")


# --- Enumerations carried on the wire (names shared by firmware, host, ledger, reports) ---


class Outcome(enum.IntEnum):
    """The one final outcome of every detected unit."""

    PASSED = 1
    REJECTED_CONFIRMED = 2
    REJECTED_UNCONFIRMED = 3


class Reason(enum.IntEnum):
    """Why a unit got its outcome. Device reasons < 16; host FAIL verdict reasons >= 16."""

    OK = 0
    VERDICT_FAIL = 1  # a VERDICT the device refused (an enum out of range), failed safe
    NO_VERDICT = 2  # decision deadline missed
    DOUBLE_DETECT = 3
    BUFFER_OVERFLOW = 4
    LINK_LOST = 5
    PURGE = 6
    TEST_UNIT = 7
    NO_READ = 16
    NOT_GS1 = 17
    CODE_MISMATCH = 18
    LOW_GRADE = 19
    DUPLICATE = 20
    UNKNOWN_SERIAL = 21
    WRONG_BATCH = 22
    CORRELATION = 23


class Verdict(enum.IntEnum):
    PASS = 1
    FAIL = 2


class Command(enum.IntEnum):
    START = 1
    STOP = 2  # latch a line stop (stop output on) until CLEAR_ALARM
    CLEAR_ALARM = 3  # also releases a latched line stop
    PURGE = 4  # reject everything in flight now, reason purge
    REBOOT = 5


class DeviceState(enum.IntEnum):
    BOOT = 0  # no valid configuration yet
    IDLE = 1  # configured, not started
    RUNNING = 2
    STOPPED = 3  # line stop latched until the host clears it


class Alarm(enum.IntEnum):
    DOUBLE_DETECT = 1
    REJECT_UNCONFIRMED = 2
    REJECT_STREAK = 3
    BIN_FULL = 4
    ENCODER_STALL = 5
    LINK_LOST = 6
    BUFFER_OVERFLOW = 7
    WATCHDOG_RESET = 8
    CONFIG_INVALID = 9


class ConfigResult(enum.IntEnum):
    OK = 0
    BAD_ORDER = 1  # stations not in order PE < coder < camera < gate < confirm window
    BAD_RANGE = 2  # a value out of its range (see bad_field)
    BUDGET_TOO_SMALL = 3  # host decision budget at max speed below min_host_budget_us
    BUSY = 4  # refused while units are in flight
    STORAGE = 5  # could not be persisted; nothing applied


class HelloStatus(enum.IntEnum):
    OK = 0
    FINGERPRINT_MISMATCH = 1
    VERSION_MISMATCH = 2


class ResetCause(enum.IntEnum):
    UNKNOWN = 0
    POWER_ON = 1
    WATCHDOG = 2
    SOFT = 3


class DwellUnit(enum.IntEnum):
    COUNTS = 0
    US = 1


class LogLevel(enum.IntEnum):
    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40


# Bits of `ConfigFields.policy` (fail-safe policy).
POLICY_STOP_ON_LINK_LOSS = 0x01  # line stop when the link has been lost for link_stop_ms
POLICY_STOP_ON_DOUBLE_DETECT = 0x02

# Bits of `STATUS.flags`.
STATUS_LINK_UP = 0x01
STATUS_BIN_FULL = 0x02
STATUS_PURGING = 0x04

# Bits of `UNIT_DETECTED.flags`.
UNIT_FLAG_TEST = 0x01


def _enum(subcon: Construct, e: type[enum.IntEnum]) -> Construct:
    return Enum(subcon, e)


u8, u16, i16, u32, i32 = Int8ul, Int16ul, Int16sl, Int32ul, Int32sl


# --- Message payloads ---

ConfigFields = Struct(
    "config_id" / u32 * "host's tag for this configuration (echoed in CONFIG_REPORT)",
    "coder_at" / u32 * "coder trigger position, counts from the photo-eye",
    "camera_at" / u32 * "camera trigger position, counts from the photo-eye",
    "gate_at" / u32 * "reject gate position (pack centre in front of the gate), counts",
    "confirm_from" / u32 * "reject-confirm window start, counts from the photo-eye",
    "confirm_to" / u32 * "reject-confirm window end, counts from the photo-eye",
    "counts_per_mm_milli" / u32 * "encoder resolution, counts per mm x 1000",
    "gate_lead_us" / u32 * "gate actuator lead time, us (fired this early at the measured speed)",
    "dwell" / u32 * "how long the gate stays open, in dwell_unit",
    "dwell_unit" / _enum(u8, DwellUnit) * "unit of dwell: counts or us",
    "debounce_us" / u32 * "photo-eye debounce, us",
    "min_pitch" / u32 * "closer photo-eye edges are a double detect, counts",
    "deadline_margin" / u32 * "decision deadline this many counts before the gate's fire point",
    "max_speed_cps" / u32 * "configured maximum line speed, counts/s",
    "min_host_budget_us" / u32 * "minimum host decision budget at max speed, us",
    "reject_streak_limit" / u8 * "consecutive rejects that stop the line (0 = off)",
    "link_timeout_ms" / u32 * "no valid frame for this long = link lost, ms",
    "link_stop_ms" / u32 * "line stop after the link has been lost this long, ms (0 = never)",
    "purge_counts" / u32 * "after a start, the gate rejects everything for this travel; set it to the gate's far edge (a pass is reported beyond it), counts",
    "virtual_speed_cps" / u32 * "0 = real encoder; else a virtual encoder at this speed, counts/s",
    "stall_ms" / u32 * "encoder still while packs are detected for this long = alarm, ms",
    "policy" / u8 * "fail-safe policy bits (POLICY_*)",
)


@dataclass(frozen=True)
class Message:
    msg_type: int
    name: str
    direction: str  # "host>device" | "device>host" | "both"
    sequenced: bool  # reliable: numbered, acked, retransmitted
    payload: Construct
    doc: str


MESSAGES: list[Message] = [
    Message(0x00, "ACK", "both", False, Struct(), "Carries only the header's ack number."),
    Message(
        0x01, "HELLO", "host>device", False,
        Struct(
            "fingerprint" / u32 * "schema fingerprint of the sender",
            "proto_version" / u16 * "PROTOCOL_VERSION of the sender",
        ),
        "Opens a session: both sides reset their sequence numbers to 0. "
        "Unacked device events are kept and resent in the new session.",
    ),
    Message(
        0x02, "HELLO_REPLY", "device>host", False,
        Struct(
            "fingerprint" / u32 * "schema fingerprint of the device",
            "proto_version" / u16 * "PROTOCOL_VERSION of the device",
            "status" / _enum(u8, HelloStatus) * "OK, or why the device refuses the session",
            "fw_version" / PaddedString(12, "ascii") * "firmware version",
            "board" / PaddedString(12, "ascii") * "board name (rpi_pico, esp32, sim)",
            "device_id" / PaddedString(16, "ascii") * "device_id from the board configuration",
            "boot_id" / u32 * "random per start, < 2**30",
            "uptime_ms" / u32 * "ms since this boot",
            "reset_cause" / _enum(u8, ResetCause) * "why the device last started",
            "next_unit_seq" / u32 * "unit_seq the next detected unit will get",
            "state" / _enum(u8, DeviceState) * "device state",
        ),
        "Answers HELLO. A host seeing a fingerprint or version other than its own refuses.",
    ),
    Message(
        0x03, "PING", "host>device", False,
        Struct("nonce" / u32 * "echoed in PONG", "host_ms" / u32 * "host clock, ms mod 2**32"),
        "Heartbeat and time sync.",
    ),
    Message(
        0x04, "PONG", "device>host", False,
        Struct(
            "nonce" / u32 * "from PING",
            "t_us" / u32 * "device ticks_us when answered",
            "pos" / u32 * "encoder position, counts",
        ),
        "Answers PING.",
    ),
    Message(0x10, "CONFIG_SET", "host>device", True, ConfigFields,
            "Sets the whole configuration: validated as a whole, applied atomically or refused."),
    Message(0x11, "CONFIG_GET", "host>device", True, Struct(), "Asks for a CONFIG_REPORT."),
    Message(
        0x12, "CONFIG_REPORT", "device>host", True,
        Struct(
            "event_seq" / u32 * "device event number, per boot",
            "result" / _enum(u8, ConfigResult) * "result of the CONFIG_SET (OK for a CONFIG_GET)",
            "bad_field" / u8 * "index of the offending ConfigFields field, 255 = none",
            "config" / ConfigFields * "the configuration now in force",
        ),
        "Answers CONFIG_SET / CONFIG_GET with the configuration in force.",
    ),
    Message(
        0x13, "VERDICT", "host>device", True,
        Struct(
            "unit_seq" / u32 * "unit this verdict is for",
            "verdict" / _enum(u8, Verdict) * "PASS or FAIL",
            "reason" / _enum(u8, Reason) * "OK for PASS, the host's reason for FAIL",
        ),
        "The host's decision for one unit; a unit passes only with PASS before its deadline.",
    ),
    Message(
        0x14, "COMMAND", "host>device", True,
        Struct("command" / _enum(u8, Command) * "line command", "arg" / u32 * "command argument"),
        "Line commands.",
    ),
    Message(
        0x15, "TEST_UNIT", "host>device", True,
        Struct(
            "count" / u8 * "the next N detected units are challenge-test units",
            "token" / u32 * "host's tag for the challenge test",
        ),
        "Challenge test: the next units are rejected with reason test_unit and must be confirmed.",
    ),
    Message(
        0x20, "UNIT_DETECTED", "device>host", True,
        Struct(
            "event_seq" / u32 * "device event number, per boot",
            "unit_seq" / u32 * "unit number, from 0 per boot",
            "pos" / u32 * "encoder position at the photo-eye edge, counts",
            "t_us" / u32 * "ticks_us at the edge",
            "flags" / u8 * "UNIT_FLAG_* bits",
        ),
        "A unit passed the photo-eye.",
    ),
    Message(
        0x21, "UNIT_PRINTED", "device>host", True,
        Struct(
            "event_seq" / u32 * "device event number, per boot",
            "unit_seq" / u32 * "unit number",
            "pos" / u32 * "encoder position at the trigger, counts",
            "t_us" / u32 * "ticks_us at the trigger",
        ),
        "The coder was triggered for the unit.",
    ),
    Message(
        0x22, "UNIT_INSPECTED", "device>host", True,
        Struct(
            "event_seq" / u32 * "device event number, per boot",
            "unit_seq" / u32 * "unit number",
            "pos" / u32 * "encoder position at the trigger, counts",
            "t_us" / u32 * "ticks_us at the trigger",
        ),
        "The camera was triggered for the unit.",
    ),
    Message(
        0x23, "UNIT_OUTCOME", "device>host", True,
        Struct(
            "event_seq" / u32 * "device event number, per boot",
            "unit_seq" / u32 * "unit number",
            "outcome" / _enum(u8, Outcome) * "passed / rejected_confirmed / rejected_unconfirmed",
            "reason" / _enum(u8, Reason) * "why",
            "gate_error" / i16 * "unit position minus gate_at when the gate opened, counts (0 if not fired)",
            "pos" / u32 * "encoder position at the outcome, counts",
            "t_us" / u32 * "ticks_us at the outcome",
        ),
        "The one final outcome of a unit.",
    ),
    Message(
        0x30, "STATUS", "device>host", False,
        Struct(
            "state" / _enum(u8, DeviceState) * "device state",
            "alarms" / u16 * "bit (1 << Alarm) set while that alarm is active",
            "flags" / u8 * "STATUS_* bits",
            "units_detected" / u32 * "this boot",
            "units_passed" / u32 * "this boot",
            "units_rejected" / u32 * "this boot",
            "in_flight" / u16 * "units between photo-eye and outcome",
            "speed_cps" / i32 * "measured line speed, counts/s",
            "pos" / u32 * "encoder position, counts",
            "queue_fill" / u16 * "events waiting for the host's ack",
            "t_us" / u32 * "ticks_us",
        ),
        "Periodic device status (latest wins, not retransmitted).",
    ),
    Message(
        0x31, "ALARM", "device>host", True,
        Struct(
            "event_seq" / u32 * "device event number, per boot",
            "alarm" / _enum(u8, Alarm) * "which alarm",
            "active" / u8 * "1 raised, 0 cleared",
            "unit_seq" / u32 * "unit concerned, 0xFFFFFFFF none",
            "t_us" / u32 * "ticks_us",
        ),
        "An alarm raised or cleared.",
    ),
    Message(
        0x32, "LOG", "device>host", True,
        Struct(
            "event_seq" / u32 * "device event number, per boot",
            "level" / _enum(u8, LogLevel) * "severity",
            "text" / PascalString(u8, "ascii") * "message, at most 80 characters",
        ),
        "A log line from the device.",
    ),
]

BY_TYPE: dict[int, Message] = {m.msg_type: m for m in MESSAGES}
BY_NAME: dict[str, Message] = {m.name: m for m in MESSAGES}
NO_UNIT = 0xFFFFFFFF
LOG_MAX_TEXT = 80

# --- Framing, as construct: the reference codec ---

FrameBody = Struct(
    "length" / u8,
    "seq" / u8,
    "ack" / u8,
    "msg_type" / u8,
    "payload" / Bytes(this.length),
)

Frame = Struct(
    "sof" / Const(SOF),
    "body" / RawCopy(FrameBody),
    "crc" / Checksum(Int32ul, lambda data: crc32(data), this.body.data),
)


# --- Field introspection for the generators, the docs and the fingerprint ---


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # "int" | "str_fixed" | "str_pascal" | "struct"
    fmt: str  # struct format char for ints ("B","H","h","I","i"); "" otherwise
    size: int  # bytes; for str_pascal the maximum including the length byte
    doc: str
    enum: type[enum.IntEnum] | None = None
    fields: tuple["FieldSpec", ...] = ()  # for kind "struct"


def _unwrap(sc):
    """Strip construct's naming/doc wrappers, keep what defines the bytes."""
    from construct import Renamed

    while isinstance(sc, Renamed):
        sc = sc.subcon
    return sc


def field_specs(payload: Construct) -> tuple[FieldSpec, ...]:
    """Describe a payload Struct field by field, from the construct definitions themselves."""
    from construct import Enum as _Enum
    from construct import FormatField, Renamed, StringEncoded
    from construct import Struct as _Struct

    out = []
    for sub in payload.subcons:
        assert isinstance(sub, Renamed), sub
        name, doc = sub.name, (sub.docs or "")
        inner = _unwrap(sub)
        enum_cls = None
        if isinstance(inner, _Enum):
            members = inner.encmapping  # name -> int
            enum_cls = next(
                e for e in _ENUMS if {m.name: m.value for m in e} == dict(members)
            )
            inner = _unwrap(inner.subcon)
        if isinstance(inner, FormatField):
            out.append(FieldSpec(name, "int", inner.fmtstr[1:], inner.length, doc, enum_cls))
        elif isinstance(inner, StringEncoded):
            body = inner.subcon
            if type(body).__name__ == "FixedSized":
                out.append(FieldSpec(name, "str_fixed", "", body.length, doc))
            else:  # Prefixed(u8, GreedyBytes)
                out.append(FieldSpec(name, "str_pascal", "", 1 + LOG_MAX_TEXT, doc))
        elif isinstance(inner, _Struct):
            out.append(FieldSpec(name, "struct", "", inner.sizeof(), doc, fields=field_specs(inner)))
        else:  # pragma: no cover - a schema edit the generators do not know yet
            raise TypeError(f"field {name}: unsupported construct {inner!r}")
    return tuple(out)


def flat_fields(payload: Construct) -> tuple[FieldSpec, ...]:
    """Field specs with nested structs (CONFIG_REPORT.config) flattened in order."""
    out: list[FieldSpec] = []
    for f in field_specs(payload):
        out.extend(f.fields if f.kind == "struct" else (f,))
    return tuple(out)


_ENUMS = (Outcome, Reason, Verdict, Command, DeviceState, Alarm, ConfigResult, HelloStatus,
          ResetCause, DwellUnit, LogLevel)
ENUMS = _ENUMS


def canonical_text(messages: list[Message] | None = None) -> str:
    """A text that changes whenever any byte-level definition changes (MAVLink CRC_EXTRA idea):
    message ids, names, sequencing, field names, types and sizes, and enum values."""
    lines = [f"v{PROTOCOL_VERSION} sof={SOF.hex()} max={MAX_PAYLOAD} crc=crc-32"]
    for m in sorted(MESSAGES if messages is None else messages, key=lambda m: m.msg_type):
        parts = []
        for f in flat_fields(m.payload):
            e = "" if f.enum is None else "{" + ",".join(f"{x.name}={x.value}" for x in f.enum) + "}"
            parts.append(f"{f.name}:{f.kind}:{f.fmt}:{f.size}{e}")
        lines.append(f"{m.msg_type}:{m.name}:{int(m.sequenced)}:" + ",".join(parts))
    return "\n".join(lines)


def fingerprint(messages: list[Message] | None = None) -> int:
    return crc32(canonical_text(messages).encode())


FINGERPRINT = fingerprint()


# --- The reference codec (construct): slow, but the definition of right ---


def build_frame(msg_type: int, seq: int, ack: int, fields: dict) -> bytes:
    msg = BY_TYPE[msg_type]
    for f in field_specs(msg.payload):
        if f.kind == "str_pascal" and len(fields[f.name]) > LOG_MAX_TEXT:
            raise ValueError(f"{msg.name}.{f.name}: at most {LOG_MAX_TEXT} characters")
    payload = msg.payload.build(fields)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD {MAX_PAYLOAD}")
    body = dict(length=len(payload), seq=seq, ack=ack, msg_type=msg_type, payload=payload)
    return Frame.build(dict(body=dict(value=body)))


def _plain(obj):
    """construct containers and enum strings → plain dicts and ints."""
    from construct import Container, EnumIntegerString

    if isinstance(obj, Container):
        return {k: _plain(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, EnumIntegerString):
        return int(obj)
    return obj


def parse_frame(frame: bytes) -> tuple[int, int, int, dict]:
    """One whole frame → (msg_type, seq, ack, fields). Raises construct errors on bad input."""
    parsed = Frame.parse(frame)
    body = parsed.body.value
    msg = BY_TYPE.get(body.msg_type)
    if msg is None:
        raise ValueError(f"unknown msg_type 0x{body.msg_type:02x}")
    fields = _plain(msg.payload.parse(body.payload))
    if msg.payload.build(fields) != body.payload:
        raise ValueError(f"{msg.name}: payload length {body.length} does not match its definition")
    bad = out_of_range(msg, fields)
    if bad:
        raise ValueError(bad)
    return body.msg_type, body.seq, body.ack, fields


def out_of_range(msg: Message, fields: dict) -> str:
    """"" or one line naming every enum field whose value its enumeration lacks
    (e.g. "UNIT_OUTCOME.reason 99 is not a Reason"); fields nested as construct builds them."""
    bad = []
    for f in field_specs(msg.payload):
        for g in f.fields if f.kind == "struct" else (f,):
            v = fields[f.name][g.name] if f.kind == "struct" else fields[g.name]
            if g.enum is not None and v not in set(g.enum):
                bad.append(f"{msg.name}.{g.name} {v} is not a {g.enum.__name__}")
    return "; ".join(bad)
