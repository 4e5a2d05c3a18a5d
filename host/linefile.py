"""The line file: one `line.toml` per line, everything site-specific in engineering units.

Sections: [identity] (line id, SGLNs, time zone, market), [device] (port, baud, board, device id),
[line] (geometry and timing in mm and ms: the same `Geometry` a scenario's [line] is, read by the
same code), [coder] and [camera] (driver, address, options), [agent], [[upstream]] (EPCIS targets;
credentials only by reference), [ledger] and [control]. Every key is typed and range-checked; an
unknown key or a bad value is a `LineFileError` naming the file, the key and what is allowed.

`device_fields(cfg)` is the ONE conversion of mm/ms into the device's ConfigFields (counts, µs);
`check(cfg)` runs the firmware's own validation (firmware/config.py) on them offline and
`explain_refusal` says in the line file's keys and units why a device refused them."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from serialine.protocol.schema import ConfigResult, DwellUnit, POLICY_STOP_ON_DOUBLE_DETECT, POLICY_STOP_ON_LINK_LOSS


class LineFileError(ValueError):
    """A line file (or a scenario's [line]) that cannot be used: one line naming the file, the key
    (`[section] key`) and the allowed range or values."""


def _k(default=None, lo=None, hi=None, unit="", doc="", kind=None, choices=None, required=False,
       check=None, sim=False):
    """A key of a section: its default, inclusive range, unit, meaning, type (from the default unless
    given), allowed values, whether a line file must give it, a check (value -> value, ValueError)."""
    kind = kind or type(default)
    meta = dict(lo=lo, hi=hi, unit=unit, doc=doc, kind=kind, choices=choices, required=required,
                check=check, sim=sim)
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


# --- [line]: geometry and timing ----------------------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    """THE [line] section of a line file and of a scenario. Lengths from the photo-eye in mm, times
    in ms. None = derived (see `resolve`): a scenario derives them from its speed as the simulator
    always has; a line file from `max_speed_mm_s`."""

    pitch_mm: float = _k(100.0, 10.0, 2000.0, "mm", "mean distance between pack leading edges")
    pitch_spread: float = _k(0.1, 0.0, 0.49, "", "± fraction of the pitch (uniform, simulator)", sim=True)
    pack_length_mm: float = _k(60.0, 1.0, 2000.0, "mm", "pack length; must leave a gap at the smallest pitch", sim=True)
    counts_per_mm: float = _k(4.0, 1.0, 100.0, "counts/mm", "encoder resolution (below 1 the stations and the "
                              "dwell round to nothing)", required=True)
    coder_at_mm: float = _k(250.0, 1.0, 100_000.0, "mm", "coder station from the photo-eye", required=True)
    camera_at_mm: float = _k(500.0, 1.0, 100_000.0, "mm", "camera station (after the coder)", required=True)
    gate_at_mm: float = _k(1000.0, 1.0, 100_000.0, "mm", "reject gate (after the camera)", required=True)
    gate_window_mm: float = _k(15.0, 1.0, 1000.0, "mm", "a pack is pushed off within ± this of the gate; "
                               "after a start the gate rejects everything up to its far edge")
    gate_lead_ms: float = _k(8.0, 0.0, 1000.0, "ms", "actuator delay from the output edge to the paddle out")
    gate_dwell_mm: float = _k(20.0, 1.0, 1000.0, "mm", "how long the gate stays open (travel)")
    confirm_delay_mm: float = _k(40.0, 0.0, 10_000.0, "mm", "travel from the gate to the confirm sensor "
                                 "(simulator; inside confirm_window_mm)", sim=True)
    confirm_window_mm: float = _k(80.0, 1.0, 10_000.0, "mm", "the reject confirm is accepted within this "
                                  "after the gate")
    bin_capacity: int = _k(100_000, 1, 10**9, "packs", "reject bin (simulator)", sim=True)
    debounce_ms: float = _k(0.2, 0.0, 100.0, "ms", "photo-eye debounce")
    min_pitch_mm: float | None = _k(None, 0.0, 2000.0, "mm", "closer photo-eye edges are a double detect "
                                    "(default: half the smallest pitch)", kind=float)
    max_speed_mm_s: float | None = _k(None, 0.1, 1_000_000.0, "mm/s", "maximum belt speed: the host's budget "
                                      "is checked at it (a scenario: 1.25 × its ppm × pitch)", kind=float,
                                      required=True)
    deadline_margin_mm: float | None = _k(None, 0.0, 10_000.0, "mm", "the device decides this far before the "
                                          "gate fires (default: 2 ms of travel at nominal speed, ≥ 8 counts)",
                                          kind=float)
    min_host_budget_ms: float | None = _k(None, 0.0, 60_000.0, "ms", "the device refuses a geometry that "
                                          "leaves the host less for a verdict at max speed (default: 80 % "
                                          "of what it leaves, ≤ 20 ms)", kind=float)
    reject_streak_limit: int = _k(0, 0, 255, "packs", "consecutive rejects that stop the line (0 = off)")
    link_timeout_ms: int = _k(1000, 10, 600_000, "ms", "no valid frame for this long = link lost")
    link_stop_ms: int = _k(0, 0, 3_600_000, "ms", "line stop after the link has been lost this long (0 = never)")
    stall_ms: int = _k(0, 0, 3_600_000, "ms", "encoder still while packs are detected this long = alarm (0 = off)")
    virtual_speed_mm_s: float = _k(0.0, 0.0, 1_000_000.0, "mm/s", "0 = the real encoder; else a virtual "
                                   "encoder at this speed (bench without a belt)")
    stop_on_link_loss: bool = _k(False, doc="stop the line when the link has been lost link_stop_ms")
    stop_on_double_detect: bool = _k(False, doc="stop the line on a double detect")


NOMINAL_OF_MAX = 1.25  # max speed = 125 % of nominal: the device checks the host's budget at it
RANGES = {f"line.{f.name}": (f.metadata["lo"], f.metadata["hi"]) for f in dataclasses.fields(Geometry)
          if f.metadata["lo"] is not None}


def nominal_cps(g: Geometry) -> float:
    return g.max_speed_mm_s * g.counts_per_mm / NOMINAL_OF_MAX


def deadline_margin_counts(g: Geometry, full_cps: float) -> int:
    return round(max(8, 0.002 * full_cps))  # decide 2 ms of travel before the gate fires


def host_budget_counts(g: Geometry, full_cps: float) -> float:
    """Travel from the camera to the decision deadline, less the gate's lead at max speed
    (NOMINAL_OF_MAX × full_cps): what is left for the host's verdict."""
    c = g.counts_per_mm
    margin = (deadline_margin_counts(g, full_cps) if g.deadline_margin_mm is None
              else round(g.deadline_margin_mm * c))
    return (round(g.gate_at_mm * c) - round(g.camera_at_mm * c) - margin
            - g.gate_lead_ms / 1000 * full_cps * NOMINAL_OF_MAX)


def resolve(g: Geometry, full_cps: float | None = None) -> Geometry:
    """`g` with every derived (None) key filled in. `full_cps` is the nominal speed in counts/s (a
    scenario's ppm × pitch); without it, `max_speed_mm_s` / 1.25. Values the device takes in counts
    are computed in counts, as the simulator always did, then stored in mm."""
    c = g.counts_per_mm
    if full_cps is None:
        if g.max_speed_mm_s is None:
            raise LineFileError("[line] max_speed_mm_s is required")
        full_cps = nominal_cps(g)
    v = full_cps * NOMINAL_OF_MAX if g.max_speed_mm_s is None else g.max_speed_mm_s * c  # counts/s at max
    kw = {}
    if g.max_speed_mm_s is None:
        kw["max_speed_mm_s"] = round(v) / c
    if g.min_pitch_mm is None:
        kw["min_pitch_mm"] = round(g.pitch_mm * (1 - g.pitch_spread) * c * 0.5) / c
    if g.deadline_margin_mm is None:
        kw["deadline_margin_mm"] = deadline_margin_counts(g, full_cps) / c
    if g.min_host_budget_ms is None:
        us = max(1, min(20_000, int(host_budget_counts(g, full_cps) / v * 1e6 * 0.8)))
        kw["min_host_budget_ms"] = us / 1000
    return dataclasses.replace(g, **kw) if kw else g


def geometry_problems(g: Geometry, simulated: bool = True) -> list[str]:
    """What is wrong with a [line] section on its own: ranges, then the order of the stations; with
    `simulated`, also the simulator's physics (a line file's packs are real)."""
    problems = []
    for f in dataclasses.fields(Geometry):
        m, v = f.metadata, getattr(g, f.name)
        why = None if v is None else range_problem(f"[line] {f.name}", v, m["lo"], m["hi"], m["unit"])
        if why:
            problems.append(why)
    if problems:
        return problems
    if simulated and not 0 < g.pack_length_mm < g.pitch_mm * (1 - g.pitch_spread):
        problems.append("[line] pack_length_mm must be positive and leave a gap at the smallest pitch "
                        "(pitch_mm × (1 − pitch_spread))")
    if not 0 < g.coder_at_mm < g.camera_at_mm < g.gate_at_mm:
        problems.append("stations must be in order: 0 < [line] coder_at_mm < camera_at_mm < gate_at_mm "
                        f"(got {_n(g.coder_at_mm)}, {_n(g.camera_at_mm)}, {_n(g.gate_at_mm)} mm)")
    if simulated and g.confirm_delay_mm >= g.confirm_window_mm:
        problems.append("[line] confirm_delay_mm must be inside confirm_window_mm")
    if g.min_pitch_mm is not None and g.min_pitch_mm >= g.pitch_mm * (1 - g.pitch_spread):
        problems.append(f"[line] min_pitch_mm = {_n(g.min_pitch_mm)} mm must be below the smallest pitch "
                        f"(pitch_mm × (1 − pitch_spread) = {g.pitch_mm * (1 - g.pitch_spread):g} mm): "
                        "every pack would be a double detect")
    return problems


# --- the other sections --------------------------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1000000)
BOARDS = ("sim", "rpi_pico", "esp32")
FALLBACK_DRIVERS = ("serialine", "dataman", "keyence-sr", "text")  # before host/devices/registry.py


def _line_id(v: str) -> str:
    if not _ID.fullmatch(v):
        raise ValueError("must be 1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)")
    return v


def _printable(v: str) -> str:
    if len(v) > 200 or not v.isprintable():
        raise ValueError("must be printable text of at most 200 characters")
    return v


def _sgln(v: str) -> str:
    from serialine.host import masterdata

    if not v.startswith("urn:"):
        raise ValueError("must be an SGLN URN (urn:epc:id:sgln:PREFIX.LOCATION.EXTENSION)")
    try:
        return masterdata.sgln(v)
    except masterdata.MasterDataError as exc:
        raise ValueError(str(exc)) from None


def _time_zone(v: str) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError("is not an IANA time zone name (e.g. Europe/Berlin, America/New_York)") from None
    return v


def _market(v: str) -> str:
    from serialine.host import masterdata

    if v not in masterdata.PROFILES:
        raise ValueError(f"must be one of {', '.join(sorted(masterdata.PROFILES))}")
    return v


def _serial_url(v: str) -> str:
    """A pyserial URL: a device path, socket://HOST:PORT or rfc2217://HOST:PORT."""
    m = re.fullmatch(r"(socket|rfc2217)://(.+)", v)
    if m:
        _host_port(m.group(2), allow_zero=False)
        return v
    if "://" in v or not (v.startswith("/") or re.fullmatch(r"COM[0-9]{1,3}", v)):
        raise ValueError("must be a device path (/dev/ttyACM0), socket://HOST:PORT or rfc2217://HOST:PORT")
    if not v.isprintable() or len(v) > 4096:
        raise ValueError("is not a usable device path")
    return v


def _path(v: str) -> str:
    if not v or not v.isprintable() or len(v) > 4096:
        raise ValueError("must be a file path")
    return v


def _device_id(v: str) -> str:
    if len(v) > 16 or not all(" " < ch <= "~" for ch in v):
        raise ValueError("must be at most 16 printable ASCII characters without spaces ('' = any device)")
    return v


def _host_port(v: str, allow_zero: bool = False) -> tuple[str, int]:
    host, sep, port = v.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not host or not host.isprintable() or " " in host:
        raise ValueError("must be HOST:PORT (e.g. 192.168.10.21:23)")
    p = int(port)
    if not (0 if allow_zero else 1) <= p <= 65535:
        raise ValueError(f"port must be in {0 if allow_zero else 1}..65535")
    return host, p


def _address(v: str) -> str:
    _host_port(v)
    return v


def _control_address(v: str) -> str:
    _host_port(v, allow_zero=True)  # :0 = any free port (the bound one is logged)
    return v


def _grade(v):
    from serialine.host.verdicts import grade_value

    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError("must be a grade A, B, C, D, F or a number 0..4")
    try:
        grade_value(v)
    except ValueError:
        raise ValueError("must be a grade A, B, C, D, F or a number 0..4") from None
    return v.strip().upper() if isinstance(v, str) else float(v)


def _credentials(v: str) -> str:
    from serialine.host.epcis.sinks import credentials

    if v in ("", "env"):
        return v
    if v.startswith("env:"):
        names = v[4:].split(",")
        bad = [n for n in names if n not in credentials.NAMES]
        if bad or not names:
            raise ValueError(f"env:NAME[,NAME…] with NAME one of {', '.join(credentials.NAMES)}")
        return v
    if v.startswith("file:/"):
        return v
    raise ValueError('must be "env", "env:NAME[,NAME…]" or "file:/absolute/path" (never the secret itself)')


@dataclass(frozen=True)
class Identity:
    line_id: str = _k("", doc="the line's id (names it in logs and the control interface)", check=_line_id,
                      required=True)
    name: str = _k("", doc="a person's name for the line", check=_printable)
    site_sgln: str | None = _k(None, doc="SGLN URN of the site", kind=str, check=_sgln)
    read_point: str | None = _k(None, doc="SGLN URN of the line (EPCIS readPoint)", kind=str, check=_sgln)
    biz_location: str | None = _k(None, doc="SGLN URN of the business location (default: the site)", kind=str,
                                  check=_sgln)
    time_zone: str = _k("UTC", doc="the plant's IANA time zone (events carry its offset, DST included)",
                        check=_time_zone)
    market: str | None = _k(None, doc="EU_FMD or US_DSCSA (checked against the batch's product)", kind=str,
                            check=_market)


@dataclass(frozen=True)
class DeviceSettings:
    port: str = _k("", doc="pyserial URL: /dev/ttyACM0, socket://HOST:PORT, rfc2217://HOST:PORT",
                   check=_serial_url, required=True)
    baud: int = _k(115200, doc="serial speed", choices=BAUDS)
    board: str = _k("rpi_pico", doc="the board the firmware runs on", choices=BOARDS)
    device_id: str = _k("", doc="the device this line expects (HELLO), ≤ 16 ASCII; '' = any", check=_device_id)


@dataclass(frozen=True)
class CoderSettings:
    driver: str = _k("serialine", doc="coder driver (host/devices/registry.py CODERS)", required=True)
    address: str = _k("", doc="HOST:PORT", check=_address, required=True)
    options: dict = _k({}, doc="driver options (docs/devices.md)")


@dataclass(frozen=True)
class CameraSettings:
    driver: str = _k("serialine", doc="reader driver (host/devices/registry.py READERS)", required=True)
    address: str = _k("", doc="HOST:PORT", check=_address, required=True)
    options: dict = _k({}, doc="driver options (docs/devices.md)")
    min_grade: str | float = _k("C", doc="lowest ISO/IEC 15415 grade passed: A–F or 0–4", kind=(str, float),
                                check=_grade)


@dataclass(frozen=True)
class AgentSettings:
    fill_ahead: int = _k(8, 1, 1000, "jobs", "codes kept queued in the coder ahead of the packs")
    start_on_boot: bool = _k(False, doc="START the line after configuring each new device boot "
                             "(the simulator; a real line waits for the operator)")
    correlation_window_ms: float = _k(500.0, 1.0, 60_000.0, "ms", "a camera result pairs with an inspected "
                                      "unit within this time")


@dataclass(frozen=True)
class Target:
    kind: str = _k("dir", doc="a directory sink, an EPCIS capture interface, an MQTT broker",
                   choices=("dir", "http", "mqtt"), required=True)
    where: str = _k("", doc="dir: a directory; http: http(s)://HOST[:PORT]/BASE; "
                    "mqtt: mqtt(s)://HOST[:PORT][/SITE/LINE]", required=True)
    credentials: str = _k("", doc='"env", "env:NAME[,NAME…]" or "file:/path" (NAME=VALUE lines, chmod 600)',
                          check=_credentials)
    ca_file: str = _k("", doc="TLS: CA bundle path")
    cert_file: str = _k("", doc="TLS: client certificate path")
    key_file: str = _k("", doc="TLS: client key path (a file only the service user can read)")

    @property
    def spec(self) -> str:
        """The sink address `serialine epcis` takes (host/epcis/cli.py sink_from_spec)."""
        return f"directory:{self.where}" if self.kind == "dir" else self.where

    @property
    def credentials_file(self) -> str | None:
        return self.credentials[len("file:"):] if self.credentials.startswith("file:") else None


@dataclass(frozen=True)
class LedgerSettings:
    path: str = _k("", doc="the SQLite ledger (relative to the service's working directory)", check=_path,
                   required=True)


@dataclass(frozen=True)
class ControlSettings:
    address: str = _k("127.0.0.1:8765", doc="HOST:PORT of the control interface (:0 = any free port)",
                      check=_control_address)
    allow_remote: bool = _k(False, doc="allow a non-loopback address (anyone on that network can stop the line)")

    @property
    def host(self) -> str:
        return _host_port(self.address, allow_zero=True)[0]

    @property
    def port(self) -> int:
        return _host_port(self.address, allow_zero=True)[1]


def _opcua_endpoint(v: str) -> str:
    from urllib.parse import urlparse
    u = urlparse(v)
    if u.scheme != "opc.tcp" or not u.hostname or u.port is None:
        raise ValueError("must be opc.tcp://HOST:PORT")
    return v


@dataclass(frozen=True)
class OpcuaSettings:
    """[opcua]: the service also serves OPC UA (PackML for the line, OPEN-SCS pools; docs/opcua.md)."""
    endpoint: str = _k("", doc="opc.tcp://HOST:PORT to listen on", check=_opcua_endpoint, required=True)
    users: str = _k("", doc="users file (serialine opcua user add) for a ledger without users; a ledger with "
                    "users: they log in, the file is not used", check=_path)
    pki: str = _k("", doc="folder of the application certificate (default: LEDGER.opcua-pki)")
    anonymous: bool = _k(False, doc="let anonymous clients in, as viewers")


@dataclass(frozen=True)
class ConsoleSettings:
    """[console]: the service also serves the operator and QA console (docs/console.md)."""
    address: str = _k("127.0.0.1:8780", doc="HOST:PORT of the web console (:0 = any free port)",
                      check=_control_address)
    allow_remote: bool = _k(False, doc="allow a non-loopback address (give tls_cert and tls_key then)")
    tls_cert: str = _k("", doc="certificate chain PEM file: the console serves HTTPS")
    tls_key: str = _k("", doc="its private key PEM file")


@dataclass(frozen=True)
class PolicySettings:
    """[policy]: what the site asks before a batch may start (host/challenge.py, docs/commissioning.md)."""
    challenge: str = _k("none", doc="a passed challenge test before `serialine batch start`: none, on_change (since "
                        "the last configuration change), per_batch (also since the last batch start), per_shift",
                        choices=("none", "on_change", "per_batch", "per_shift"))
    shift_hours: float = _k(8.0, 0.5, 24.0, "h", "per_shift: a passed challenge at most this long ago")


@dataclass(frozen=True)
class LineConfig:
    path: str
    identity: Identity
    device: DeviceSettings
    geometry: Geometry
    coder: CoderSettings
    camera: CameraSettings
    agent: AgentSettings = field(default_factory=AgentSettings)
    upstream: tuple[Target, ...] = ()
    ledger: str = ""  # the ledger's path ([ledger] path)
    control: ControlSettings = field(default_factory=ControlSettings)
    opcua: OpcuaSettings | None = None  # [opcua] given: the service serves OPC UA
    console: ConsoleSettings | None = None  # [console] given: the service serves the web console
    policy: PolicySettings = field(default_factory=PolicySettings)


SECTIONS = {"identity": Identity, "device": DeviceSettings, "line": Geometry, "coder": CoderSettings,
            "camera": CameraSettings, "agent": AgentSettings, "upstream": Target, "ledger": LedgerSettings,
            "control": ControlSettings, "opcua": OpcuaSettings, "console": ConsoleSettings,
            "policy": PolicySettings}
REQUIRED_SECTIONS = ("identity", "device", "line", "coder", "camera", "ledger")
# Keys that would hold a secret: refused wherever they appear (only references to one are allowed).
_SECRET = re.compile(r"(?i)(^|[_.-])(pass(word|wd|phrase)?|token|secret|api_?key|auth(orization)?|bearer|"
                     r"private_?key|pin|credential)$")


# --- reading ---------------------------------------------------------------------------------------

def _n(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _show(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _plain(v, depth=0) -> bool:
    """A driver option's value: a string, number, boolean, or a list or table of them (no dates)."""
    if isinstance(v, (str, bool, int)):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list) and depth == 0:
        return all(_plain(x, 1) for x in v)
    if isinstance(v, dict) and depth == 0:
        return all(not _SECRET.search(k) and _plain(x, 1) for k, x in v.items())
    return False


def range_problem(name: str, v, minval=None, maxval=None, unit: str = "") -> str | None:
    """`name = v must be in lo..hi unit` when v is outside the inclusive range (nan and inf are), else None."""
    if (minval is None or v >= minval) and (maxval is None or v <= maxval):
        return None
    if minval is not None and maxval is not None:
        allowed = f"in {_n(minval)}..{_n(maxval)}"
    else:
        allowed = f"at least {_n(minval)}" if minval is not None else f"at most {_n(maxval)}"
    return f"{name} = {_show(v)} must be {allowed}{' ' + unit if unit else ''}"


REQUIRED = object()  # a getter's default: the key must be given


class Section:
    """One TOML table, read Klipper style: `sec.getint("fill_ahead", 8, minval=1, maxval=1000)`.
    Every getter types and range-checks the value given (a default is taken as it is) and raises
    `err` in one line naming the file, `[section] key`, the value and what is allowed;
    `refuse_unknown` refuses a key no getter reads, so a typo never silently runs the default.
    `type_errors` rewords a value of the wrong type, by type ({name}, {value})."""

    TYPE_ERRORS = {bool: "{name} = {value} must be true or false", int: "{name} = {value} must be an integer",
                   float: "{name} = {value} must be a number", str: "{name} = {value} must be a string"}

    def __init__(self, table, where: str, section: str = "", *, err=LineFileError, type_errors=None):
        self.where, self.section, self.err = where, section, err
        self.type_errors = {**self.TYPE_ERRORS, **(type_errors or {})}
        if not isinstance(table, dict):
            self.fail(f"{section} must be a table")
        self.table = table

    def name(self, key: str) -> str:
        return f"{self.section} {key}" if self.section else key

    def fail(self, text: str):
        raise self.err(f"{self.where}: {text}")

    def refuse_unknown(self, known) -> None:
        known = list(known)
        where = f"{self.section} " if self.section else ""
        for key in self.table:
            if key not in known:
                self.fail(f"{where}unknown key {key!r} (known: {', '.join(known)})")

    def _given(self, key: str, default, kind=None):
        """(value, given) for `key`; a value of the wrong `kind` (bool is no number) is refused here."""
        if key not in self.table:
            if default is REQUIRED:
                self.fail(f"{self.name(key)} is required")
            return default, False
        v = self.table[key]
        if kind is not None and kind is not bool and isinstance(v, bool):
            self.fail(f"{self.name(key)} = {_show(v)} must not be a boolean")
        if kind is not None and not isinstance(v, (int, float) if kind is float else kind):
            self.fail(self.type_errors[kind].format(name=self.name(key), value=_show(v)))
        return v, True

    def _ranged(self, key: str, v, minval, maxval, unit: str):
        why = range_problem(self.name(key), v, minval, maxval, unit)
        if why:
            self.fail(why)
        return v

    def getint(self, key: str, default=REQUIRED, *, minval=None, maxval=None, unit: str = ""):
        v, given = self._given(key, default, int)
        return self._ranged(key, v, minval, maxval, unit) if given else v

    def getfloat(self, key: str, default=REQUIRED, *, minval=None, maxval=None, unit: str = ""):
        v, given = self._given(key, default, float)
        if not given:
            return v
        try:
            v = float(v)
        except OverflowError:  # an integer beyond any float: out of every range
            v = math.inf
        return self._ranged(key, v, minval, maxval, unit)

    def getboolean(self, key: str, default=REQUIRED):
        return self._given(key, default, bool)[0]

    def get(self, key: str, default=REQUIRED, *, check=None):
        """A string, through `check` (value -> value, ValueError says why) when given."""
        v, given = self._given(key, default, str)
        return self.getwith(key, check, default) if given and check else v

    def getchoice(self, key: str, choices, default=REQUIRED):
        v, given = self._given(key, default, type(choices[0]))
        if given and v not in choices:
            self.fail(f"{self.name(key)} = {_show(v)} must be one of {', '.join(map(str, choices))}")
        return v

    def getwith(self, key: str, check, default=REQUIRED):
        """Any value, typed and checked by `check` (value -> value, ValueError says why)."""
        v, given = self._given(key, default)
        if not given:
            return v
        try:
            return check(v)
        except ValueError as exc:
            self.fail(f"{self.name(key)} = {_show(v)} {exc}")


def _options(sec: Section, key: str) -> dict:
    """A driver's options table: plain values, never a secret (its value is not shown)."""
    name, v = sec.name(key), sec.table[key]
    if not isinstance(v, dict):
        sec.fail(f"{name} must be a table")
    for k, x in v.items():
        if _SECRET.search(k):
            sec.fail(f"{name}.{k}: a secret is never kept in the line file; "
                     "give the driver a reference (environment or a file only the service user reads)")
        if not _plain(x):
            sec.fail(f"{name}.{k} must be a string, number, boolean, or a list or table of them "
                     "(no secrets, no dates)")
    return dict(v)


def _get(sec: Section, f, default):
    """Field `f` of a section's dataclass through the getter its metadata names."""
    m, key = f.metadata, f.name
    kind = m["kind"]
    if kind is dict:
        return _options(sec, key) if key in sec.table else default
    if m["choices"] is not None:
        return sec.getchoice(key, m["choices"], default)
    if kind is bool:
        return sec.getboolean(key, default)
    if kind is int:
        return sec.getint(key, default, minval=m["lo"], maxval=m["hi"], unit=m["unit"])
    if kind is float:
        return sec.getfloat(key, default, minval=m["lo"], maxval=m["hi"], unit=m["unit"])
    if kind is str:
        return sec.get(key, default, check=m["check"])
    return sec.getwith(key, m["check"], default)  # min_grade: a letter or a number, the check types it


def read_section(cls, table, where: str, section: str, *, err=LineFileError, required: bool = True):
    """One section's table → `cls`: every key known, typed and in range; with `required`, the keys a
    line file must give (a scenario gives none of them)."""
    sec = Section(table, where, f"[[{section}]]" if cls is Target else f"[{section}]", err=err)
    fields = dataclasses.fields(cls)
    for key in table:
        if _SECRET.search(key):
            sec.fail(f"{sec.name(key)}: a secret is never kept in the line file; "
                     'use credentials = "env" or "file:/path" (a file only the service user can read)')
    sec.refuse_unknown(f.name for f in fields)
    if required:
        for f in fields:
            if f.metadata["required"] and f.name not in table:
                sec.fail(f"{sec.name(f.name)} is required ({f.metadata['doc']})")
    return cls(**{f.name: _get(sec, f, f.default if f.default is not dataclasses.MISSING else f.default_factory())
                  for f in fields})


def read_geometry(table, where: str, *, err=LineFileError, required: bool = True) -> Geometry:
    """The [line] section of a line file (required keys) or of a scenario (none required), checked on
    its own (ranges, station order)."""
    g = read_section(Geometry, table, where, "line", err=err, required=required)
    problems = geometry_problems(g, simulated=not required)
    if problems:
        raise err(f"{where}: " + "; ".join(problems))
    return g


def _driver_check(where: str, section: str, kind: str, s) -> None:
    try:
        from serialine.host.devices import registry
    except ImportError:  # pragma: no cover - before the registry existed
        registry = None
    names = sorted((registry.READERS if kind == "reader" else registry.CODERS) if registry else FALLBACK_DRIVERS)
    if s.driver not in names:
        raise LineFileError(f"{where}: [{section}] driver = {s.driver!r} must be one of {', '.join(names)}")
    if registry is None:
        return
    try:
        registry.check_options(kind, s.driver, s.options)
    except ImportError:  # the driver's module is not in this build yet: its name is known, options unchecked
        return
    except (ValueError, TypeError, re.error) as exc:
        raise LineFileError(f"{where}: [{section}] options: {exc}") from None


def _target_check(where: str, i: int, t: Target) -> None:
    import urllib.parse

    from serialine.host.epcis import sinks

    sect = f"[[upstream]] #{i + 1}"
    if t.kind == "dir":
        if not t.where or not t.where.isprintable() or "://" in t.where:
            raise LineFileError(f"{where}: {sect} where = {_show(t.where)} must be a directory path")
        if t.credentials:
            raise LineFileError(f"{where}: {sect} credentials: a directory target takes none")
        return
    schemes = ("http", "https") if t.kind == "http" else ("mqtt", "mqtts")
    try:
        parts = urllib.parse.urlsplit(t.where)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in schemes or not parts.hostname:
        raise LineFileError(f"{where}: {sect} where = {_show(sinks.redact(t.where))} must be a "
                            f"{' or '.join(s + '://' for s in schemes)}HOST[:PORT]/… URL")
    try:
        sinks.check_address(t.where, parts.scheme.endswith("s"), bool(t.credentials), t.kind)
    except ValueError as exc:
        raise LineFileError(f"{where}: {sect} where: {exc}") from None
    if t.kind == "mqtt" and parts.scheme == "mqtt" and (t.ca_file or t.cert_file):
        raise LineFileError(f"{where}: {sect} ca_file/cert_file given for a plain mqtt:// target: use mqtts://")


def _control_check(where: str, c: ControlSettings) -> None:
    from serialine.host.epcis.sinks import is_loopback

    if not c.allow_remote and not is_loopback(c.host):
        raise LineFileError(f"{where}: [control] address = {c.address!r} is not a loopback address "
                            "(127.0.0.1, ::1, localhost); set [control] allow_remote = true to listen on it")


def _console_check(where: str, c: ConsoleSettings) -> None:
    from serialine.host.epcis.sinks import is_loopback

    host = _host_port(c.address, allow_zero=True)[0]
    if not c.allow_remote and not is_loopback(host):
        raise LineFileError(f"{where}: [console] address = {c.address!r} is not a loopback address; set "
                            "[console] allow_remote = true (with tls_cert and tls_key) to serve it on the network")
    if c.allow_remote and not is_loopback(host) and not (c.tls_cert and c.tls_key):
        raise LineFileError(f"{where}: [console] address = {c.address!r} is on the network: give tls_cert and "
                            "tls_key (passwords must not cross a plant network in clear)")
    if bool(c.tls_cert) != bool(c.tls_key):
        raise LineFileError(f"{where}: [console] tls_cert and tls_key go together")


def _identity_defaults(ident: Identity) -> Identity:
    if ident.biz_location is None and ident.site_sgln is not None:
        return dataclasses.replace(ident, biz_location=ident.site_sgln)
    return ident


def parse(text: str, where: str = "line.toml") -> LineConfig:
    """A line file's text → LineConfig, or LineFileError (one line) naming `where` and the key."""
    table = read_toml(text, where)
    for name in table:
        if name not in SECTIONS:
            raise LineFileError(f"{where}: unknown section [{name}] (known: {', '.join(SECTIONS)})")
    for name in REQUIRED_SECTIONS:
        if name not in table:
            raise LineFileError(f"{where}: [{name}] is required")
    kw = {}
    for name, cls in SECTIONS.items():
        if name not in table or name in ("upstream", "line"):
            continue
        kw[name] = read_section(cls, table[name], where, name)
    g = read_geometry(table["line"], where)
    kw["geometry"] = resolve(g)
    ups = table.get("upstream", [])
    if not isinstance(ups, list):
        raise LineFileError(f"{where}: upstream must be [[upstream]] tables")
    kw["upstream"] = tuple(read_section(Target, t, where, "upstream") for t in ups)
    for i, t in enumerate(kw["upstream"]):
        _target_check(where, i, t)
    kw["identity"] = _identity_defaults(kw["identity"])
    kw["ledger"] = kw["ledger"].path
    _driver_check(where, "coder", "coder", kw["coder"])
    _driver_check(where, "camera", "reader", kw["camera"])
    if "control" in kw:
        _control_check(where, kw["control"])
    if "console" in kw:
        _console_check(where, kw["console"])
    return LineConfig(path=where, **kw)


def read_toml(text: str, where: str, err=LineFileError) -> dict:
    """A TOML document's tables, or `err` in one line naming `where`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise err(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:
        raise err(f"{where}: not valid TOML: nested too deep") from None


def read_text(path, err=LineFileError) -> str:
    """A TOML file's text, or `err` in one line naming the file (missing, unreadable, not UTF-8)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise err(f"{path}: no such file") from None
    except OSError as exc:
        raise err(f"{path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise err(f"{path}: not a TOML text file (byte {exc.start} is not UTF-8)") from None


def load(path) -> LineConfig:
    return parse(read_text(path), str(path))


# --- mm/ms → ConfigFields: the one conversion --------------------------------------------------------

def device_fields(cfg: LineConfig, config_id: int = 1) -> dict:
    """The device's ConfigFields (construct names; counts, µs, counts/s) for the line file's [line]."""
    g = cfg.geometry if isinstance(cfg, LineConfig) else cfg
    if g.max_speed_mm_s is None or g.min_host_budget_ms is None:
        g = resolve(g)
    c = g.counts_per_mm
    gate_at = round(g.gate_at_mm * c)
    return dict(
        config_id=config_id,
        coder_at=round(g.coder_at_mm * c),
        camera_at=round(g.camera_at_mm * c),
        gate_at=gate_at,
        confirm_from=gate_at,
        confirm_to=round(gate_at + g.confirm_window_mm * c),
        counts_per_mm_milli=round(c * 1000),
        gate_lead_us=round(g.gate_lead_ms * 1000),
        dwell=round(g.gate_dwell_mm * c),
        dwell_unit=int(DwellUnit.COUNTS),
        debounce_us=round(g.debounce_ms * 1000),
        min_pitch=round(g.min_pitch_mm * c),
        deadline_margin=round(g.deadline_margin_mm * c),
        max_speed_cps=round(g.max_speed_mm_s * c),
        min_host_budget_us=round(g.min_host_budget_ms * 1000),
        reject_streak_limit=g.reject_streak_limit,
        link_timeout_ms=g.link_timeout_ms,
        link_stop_ms=g.link_stop_ms,
        purge_counts=round(gate_at + g.gate_window_mm * c),
        virtual_speed_cps=round(g.virtual_speed_mm_s * c),
        stall_ms=g.stall_ms,
        policy=(POLICY_STOP_ON_LINK_LOSS if g.stop_on_link_loss else 0)
        | (POLICY_STOP_ON_DOUBLE_DETECT if g.stop_on_double_detect else 0),
    )


# Each ConfigFields field: the line-file key it comes from, its unit there, and the value there.
def _mm(key):
    return key, "mm", lambda g, f, v: v / g.counts_per_mm


FIELD_KEYS = {
    "config_id": ("config_id", "", lambda g, f, v: v),
    "coder_at": _mm("coder_at_mm"),
    "camera_at": _mm("camera_at_mm"),
    "gate_at": _mm("gate_at_mm"),
    "confirm_from": _mm("gate_at_mm"),
    "confirm_to": ("confirm_window_mm", "mm", lambda g, f, v: (v - f["gate_at"]) / g.counts_per_mm),
    "counts_per_mm_milli": ("counts_per_mm", "counts/mm", lambda g, f, v: v / 1000),
    "gate_lead_us": ("gate_lead_ms", "ms", lambda g, f, v: v / 1000),
    "dwell": _mm("gate_dwell_mm"),
    "dwell_unit": ("gate_dwell_mm", "", lambda g, f, v: "counts" if v == DwellUnit.COUNTS else "µs"),
    "debounce_us": ("debounce_ms", "ms", lambda g, f, v: v / 1000),
    "min_pitch": _mm("min_pitch_mm"),
    "deadline_margin": _mm("deadline_margin_mm"),
    "max_speed_cps": ("max_speed_mm_s", "mm/s", lambda g, f, v: v / g.counts_per_mm),
    "min_host_budget_us": ("min_host_budget_ms", "ms", lambda g, f, v: v / 1000),
    "reject_streak_limit": ("reject_streak_limit", "packs", lambda g, f, v: v),
    "link_timeout_ms": ("link_timeout_ms", "ms", lambda g, f, v: v),
    "link_stop_ms": ("link_stop_ms", "ms", lambda g, f, v: v),
    "purge_counts": ("gate_window_mm", "mm", lambda g, f, v: (v - f["gate_at"]) / g.counts_per_mm),
    "virtual_speed_cps": ("virtual_speed_mm_s", "mm/s", lambda g, f, v: v / g.counts_per_mm),
    "stall_ms": ("stall_ms", "ms", lambda g, f, v: v),
    "policy": ("stop_on_link_loss, stop_on_double_detect", "",
               lambda g, f, v: f"{str(bool(v & POLICY_STOP_ON_LINK_LOSS)).lower()}, "
                               f"{str(bool(v & POLICY_STOP_ON_DOUBLE_DETECT)).lower()}"),
}


def _shown(v, unit: str = "") -> str:
    text = f"{v:.6g}" if isinstance(v, float) else str(v)
    return text + (f" {unit}" if unit and not isinstance(v, str) else "")


def _in_file(g: Geometry, fields: dict, name: str) -> str:
    """`[line] key = value unit` (the file's own value) for ConfigFields field `name`."""
    key, unit, back = FIELD_KEYS[name]
    if name == "config_id":
        return f"config_id = {fields[name]}"
    if name == "dwell_unit":
        return f"[line] {key} is travel: dwell in {back(g, fields, fields[name])}"
    v = getattr(g, key) if hasattr(g, key) else back(g, fields, fields[name])
    return f"[line] {key} = {_shown(v, unit)}"


# --- the firmware's own rules, offline --------------------------------------------------------------

_FIRMWARE = None


def firmware_config():
    """firmware/config.py, run in CPython: its RANGES and validate(), with the generated constants
    of firmware/wire.py (the schema's) — the very rules the device applies, nothing copied."""
    global _FIRMWARE
    if _FIRMWARE is not None:
        return _FIRMWARE
    import ast
    import builtins
    import types

    from serialine.host.resources import firmware_dir

    fw = firmware_dir()
    wire = types.ModuleType("wire")
    for node in ast.parse((fw / "wire.py").read_text()).body:  # the generated constants only
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            val = node.value
            if isinstance(val, ast.Call) and getattr(val.func, "id", "") == "const" and len(val.args) == 1:
                val = val.args[0]
            try:
                setattr(wire, node.targets[0].id, ast.literal_eval(val))
            except ValueError:
                continue
    micropython = types.ModuleType("micropython")
    micropython.const = lambda x: x
    stubs = {"wire": wire, "micropython": micropython}

    def _import(name, *a, **kw):
        return stubs[name] if name in stubs else builtins.__import__(name, *a, **kw)

    mod = types.ModuleType("firmware_config")
    mod.__dict__["__builtins__"] = {**builtins.__dict__, "__import__": _import}
    exec(compile((fw / "config.py").read_text(), str(fw / "config.py"), "exec"), mod.__dict__)
    _FIRMWARE = mod
    return mod


def _as_list(fields: dict) -> list[int]:
    return [int(fields[name]) for name in firmware_config().FIELDS]


def device_verdict(fields: dict) -> tuple[ConfigResult, int]:
    """(result, bad_field) the device's CONFIG_SET validation gives these ConfigFields."""
    res, bad = firmware_config().validate(_as_list(fields))
    return ConfigResult(res), bad


def decision_budget_ms(cfg: LineConfig | Geometry) -> float:
    """The host's verdict budget at max speed: camera trigger to the decision deadline, ms (the
    device's own arithmetic, firmware/config.py budget_us)."""
    fields = device_fields(cfg)
    if fields["max_speed_cps"] <= 0:
        return math.inf
    return firmware_config().budget_us(_as_list(fields)) / 1000


def _result(v) -> ConfigResult:
    if isinstance(v, ConfigResult):
        return v
    if isinstance(v, str) and not v.isdigit():
        return ConfigResult[v]
    return ConfigResult(int(v))


def explain_refusal(report_fields: dict, cfg: LineConfig, *, head: str = "device refused the configuration: ") -> str:
    """A CONFIG_REPORT (result ≠ OK) → one line in the line file's keys and units."""
    res = _result(report_fields.get("result", 0))
    bad = int(report_fields.get("bad_field", 255))
    g = cfg.geometry if isinstance(cfg, LineConfig) else cfg
    sent = device_fields(cfg, int(report_fields.get("config_id", 1) or 1))
    names = list(firmware_config().FIELDS)
    name = names[bad] if 0 <= bad < len(names) else None
    if res == ConfigResult.OK:
        return "device accepted the configuration"
    if res == ConfigResult.BUSY:
        return head + "units are in flight (BUSY): stop the line, let the packs clear, then configure again"
    if res == ConfigResult.STORAGE:
        return head + "it could not store it (STORAGE): nothing applied; check the board's flash"
    if res == ConfigResult.BUDGET_TOO_SMALL:
        budget = decision_budget_ms(cfg)
        return (head + f"the host's decision budget at max speed ([line] max_speed_mm_s = "
                f"{g.max_speed_mm_s:.6g} mm/s) is {budget:.3f} ms ([line] camera_at_mm = {g.camera_at_mm:g} "
                f"to gate_at_mm = {g.gate_at_mm:g} mm, less gate_lead_ms = {g.gate_lead_ms:g} ms and "
                f"deadline_margin_mm = {g.deadline_margin_mm:.6g} mm), below [line] min_host_budget_ms = "
                f"{g.min_host_budget_ms:g} ms")
    if name is None:
        return head + f"{res.name} (no field named)"
    if res == ConfigResult.BAD_ORDER:
        before = {"camera_at": "coder_at", "gate_at": "camera_at", "confirm_from": "gate_at",
                  "confirm_to": "confirm_from"}.get(name)
        if name == "confirm_to":
            return head + f"{_in_file(g, sent, name)} leaves no confirm window after the gate (BAD_ORDER)"
        if before is not None:
            return (head + f"{_in_file(g, sent, name)} puts the {name.removesuffix('_at')} before or at the "
                    f"{before.removesuffix('_at')} ({_in_file(g, sent, before).removeprefix('[line] ')}) (BAD_ORDER)")
        return head + f"{_in_file(g, sent, name)} is out of order (BAD_ORDER)"
    lo, hi = firmware_config().RANGES[bad]
    key, unit, back = FIELD_KEYS[name]
    span = ""
    if name not in ("dwell_unit", "policy", "config_id"):
        span = f" ({_shown(back(g, sent, lo))}..{_shown(back(g, sent, hi), unit)} at this counts_per_mm)"
    return (head + f"{_in_file(g, sent, name)} gives {name} = {sent[name]}, outside the device's range "
            f"{lo}..{hi}{span} (BAD_RANGE)")


def check(cfg: LineConfig | Geometry) -> str | None:
    """None if the device will accept this configuration; else why not, as `explain_refusal` says it."""
    fields = device_fields(cfg)
    res, bad = device_verdict(fields)
    if res == ConfigResult.OK:
        return None
    return explain_refusal({"result": res, "bad_field": bad, "config_id": fields["config_id"]}, cfg,
                           head="the device would refuse it: ")


# --- the simulator's line file ------------------------------------------------------------------------

def scenario_geometry(scenario) -> Geometry:
    """A scenario's [line], resolved at its speed (ppm × pitch): what the simulator's device gets."""
    from serialine.host.sim.scenario import full_speed_cps

    return resolve(scenario.line, full_speed_cps(scenario))


def from_scenario(scenario, *, port: str, coder_addr, camera_addr, ledger, control="127.0.0.1:0",
                  identity: Identity | None = None, device_id: str = "sim-line-1", upstream=()) -> LineConfig:
    """The line file the simulator runs `serialine agent run` with: the scenario's [line] resolved at its
    speed (so the device gets what it always got), the sim board on `port`, the simulated coder and
    camera on loopback, START after every boot."""
    def addr(a) -> str:
        return a if isinstance(a, str) else "%s:%d" % tuple(a)

    g = scenario_geometry(scenario)
    return LineConfig(
        path=f"<scenario {scenario.name}>",
        identity=identity or Identity(line_id="sim-line-1", name=f"simulated line ({scenario.name})"),
        device=DeviceSettings(port=str(port), baud=115200, board="sim", device_id=device_id),
        geometry=g,
        coder=CoderSettings(driver="serialine", address=addr(coder_addr)),
        camera=CameraSettings(driver="serialine", address=addr(camera_addr)),
        agent=AgentSettings(start_on_boot=True),
        upstream=tuple(upstream),
        ledger=str(ledger),
        control=ControlSettings(address=addr(control)),
    )


def _toml_value(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_table(obj) -> list[str]:
    out = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if v is None:
            continue
        out.append(f"{f.name} = {_toml_value(v)}")
    return out


def to_toml(cfg: LineConfig) -> str:
    """The line file for `cfg` (every key written out): parse(to_toml(cfg), cfg.path) == cfg."""
    parts = [f"# line file for {cfg.identity.line_id}, written by serialine (docs/line-file.md)"]
    sections = [("identity", cfg.identity), ("device", cfg.device), ("line", cfg.geometry),
                ("coder", cfg.coder), ("camera", cfg.camera), ("agent", cfg.agent)]
    for name, obj in sections:
        parts += ["", f"[{name}]", *_toml_table(obj)]
    for t in cfg.upstream:
        parts += ["", "[[upstream]]", *_toml_table(t)]
    parts += ["", "[ledger]", f"path = {_toml_value(cfg.ledger)}"]
    parts += ["", "[control]", *_toml_table(cfg.control)]
    if cfg.opcua is not None:
        parts += ["", "[opcua]", *_toml_table(cfg.opcua)]
    if cfg.console is not None:
        parts += ["", "[console]", *_toml_table(cfg.console)]
    if cfg.policy != PolicySettings():
        parts += ["", "[policy]", *_toml_table(cfg.policy)]
    return "\n".join(parts) + "\n"


def _credentials_state(t: Target) -> str:
    """Whether the target's credentials can be read here (names only, never a value)."""
    import os

    from serialine.host.epcis.sinks import credentials

    if t.credentials_file is not None:
        try:
            found = credentials.read_file(t.credentials_file)
        except ValueError as exc:
            return f"not usable here: {exc}"
        return f"readable, {', '.join(sorted(found)) or 'no names set'}"
    names = credentials.NAMES if t.credentials == "env" else t.credentials[4:].split(",")
    unset = [n for n in names if not os.environ.get(n)]
    if t.credentials == "env":
        return f"set here: {', '.join(n for n in names if n not in unset) or 'none'}"
    return "all set here" if not unset else f"not set here: {', '.join(unset)}"


# --- serialine agent check ------------------------------------------------------------------------------

def check_main(argv=None) -> int:
    """`serialine agent check --config line.toml`: what the device will get and the host's budget."""
    import argparse

    p = argparse.ArgumentParser(prog="serialine agent check",
                                description="Validate a line file offline: what the device will get, "
                                            "the host's decision budget at maximum speed, and whether "
                                            "the device would refuse it.")
    p.add_argument("--config", required=True, help="the line file (line.toml)")
    args = p.parse_args(argv)
    try:
        cfg = load(args.config)
    except LineFileError as exc:
        print(f"serialine agent check: {exc}", file=sys.stderr)
        return 1
    g, fields = cfg.geometry, device_fields(cfg)
    ident, dev = cfg.identity, cfg.device
    print(f"{cfg.path}: line {ident.line_id}" + (f" ({ident.name})" if ident.name else "")
          + f", {dev.board} on {dev.port} at {dev.baud} baud"
          + (f", device {dev.device_id}" if dev.device_id else ""))
    if ident.time_zone:
        import datetime
        import zoneinfo

        now = datetime.datetime.now(zoneinfo.ZoneInfo(ident.time_zone))
        print(f"time zone {ident.time_zone} (now UTC{now.strftime('%z')[:3]}:{now.strftime('%z')[3:]})"
              + (f"; market {ident.market}" if ident.market else "")
              + (f"; read point {ident.read_point}" if ident.read_point else ""))
    print(f"coder {cfg.coder.driver} at {cfg.coder.address}; camera {cfg.camera.driver} at "
          f"{cfg.camera.address} (min grade {cfg.camera.min_grade}); ledger {cfg.ledger}; "
          f"control {cfg.control.address}")
    for t in cfg.upstream:
        print(f"upstream {t.kind} {t.where}" + (f" (credentials {t.credentials}: {_credentials_state(t)})"
                                                 if t.credentials else ""))
    print("the device gets (ConfigFields):")
    width = max(map(len, fields))
    for name, v in fields.items():
        print(f"  {name:<{width}} = {v:<10} {_in_file(g, fields, name) if name != 'config_id' else ''}".rstrip())
    budget = decision_budget_ms(cfg)
    print(f"host decision budget at max speed ({g.max_speed_mm_s:.6g} mm/s): {budget:.3f} ms "
          f"(the device requires ≥ {g.min_host_budget_ms:g} ms)")
    why = check(cfg)
    if why is not None:
        print(f"serialine agent check: {cfg.path}: {why}", file=sys.stderr)
        return 1
    print("OK: the device will accept this configuration")
    return 0


# --- docs/line-file.md's key table ---------------------------------------------------------------------

def key_table() -> str:
    """Every key with its unit, range and default, from the dataclasses above (docs/line-file.md)."""
    rows = ["| section | key | default | range / values | unit | meaning |", "|---|---|---|---|---|---|"]
    for name, cls in SECTIONS.items():
        sect = "[[upstream]]" if cls is Target else f"[{name}]"
        for f in dataclasses.fields(cls):
            m = f.metadata
            if f.default is not dataclasses.MISSING:
                d = f.default
            else:
                d = f.default_factory()
            shown = ("derived" if cls is Geometry else "none") if d is None else \
                ("{}" if d == {} else _toml_value(d))
            default = (f"required (scenario: {shown})" if cls is Geometry else "required") if m["required"] else shown
            if m["lo"] is not None:
                rng = f"{_n(m['lo'])}–{_n(m['hi'])}"
            elif m["choices"]:
                rng = ", ".join(map(str, m["choices"]))
            elif m["kind"] is bool:
                rng = "true, false"
            else:
                rng = ""
            doc = m["doc"] + (" *(simulator)*" if m["sim"] and "simulator" not in m["doc"] else "")
            cells = [f"`{sect}`", f"`{f.name}`", default, rng, m["unit"], doc]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--key-table"]:  # regenerates docs/line-file.md's table
        print(key_table())
        sys.exit(0)
    sys.exit(check_main(sys.argv[1:]))
