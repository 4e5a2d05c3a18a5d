"""Scenarios: TOML files that set the line, its speed, its defects and its faults.

A scenario is read with `tomllib`, checked field by field against the defaults below (an unknown key
or a value of the wrong type is an error, so a typo never silently runs the default), every number
against its key's range in `RANGES` (finite, so no inf or nan), and returned as a frozen `Scenario`.
Nothing is created before that. Lengths are in mm, times in ms unless a name says otherwise; the
line model turns them into encoder counts and µs."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from serialine.host import linefile
from serialine.host.linefile import Geometry
from serialine.host.resources import scenarios_dir

from . import emulators

SCENARIO_DIR = scenarios_dir()  # a package resource: the same in the checkout and a wheel


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the offending key."""


# The [line] section is the line file's Geometry (host/linefile.py): one reader, one set of ranges.
Line = Geometry


@dataclass(frozen=True)
class Speed:
    profile: str = "constant"  # constant | ramp | stop-start
    ramp_from: float = 0.3  # fraction of ppm at the start of the ramp
    ramp_to: float = 1.0
    ramp_units: int = 200  # the ramp lasts as long as this many units take at full speed
    run_units: int = 100  # stop-start: run this many units' time, then stop
    stop_ms: float = 400.0
    accel_ms: float = 100.0  # time to go from standstill to full speed (and back)


@dataclass(frozen=True)
class ScenarioDefects:  # [defects]
    misprint: float = 0.0  # coder prints a wrong code
    skip: float = 0.0  # coder prints nothing
    smear: float = 0.0  # the print is unreadable / low grade


@dataclass(frozen=True)
class ScenarioPrint:  # [print]: images of the prints (host/verify/imager.py); off keeps the string model
    images: bool = False  # the coder's print is an image the camera decodes (zxing-cpp) and grades (ISO/IEC 15415)
    width: int = 640  # camera image, pixels
    height: int = 480
    module_px: float = 6.0  # pixels per module
    dot_gain: float = 0.0  # the print's defects: host/verify/render.py Defects, same names and units
    missing_dots: int = 0
    smear: float = 0.0
    contrast: float = 1.0
    skew_deg: float = 0.0
    rotation_deg: float = 0.0
    quiet_zone: float = 0.0
    noise: float = 0.0
    clogged: float = 0.0  # per print: a nozzle clogs for that print, `clogged_rows` more rows of dots missing
    clogged_rows: int = 12
    smeared_by: float = 3.0  # a [defects] smear print is this many modules of motion blur
    wear: str = ""  # one defect (a name above) growing linearly per print, printhead wear
    wear_to: float = 0.0  # its value at the last unit


@dataclass(frozen=True)
class ScenarioCoder:  # [coder]
    driver: str = "serialine"  # the agent's coder driver; the simulator runs its emulator (host/sim/emulators.py)


@dataclass(frozen=True)
class ScenarioCamera:  # [camera]
    driver: str = "serialine"  # the agent's reader driver; the simulator runs its emulator (host/sim/emulators.py)
    latency_ms: float = 6.0
    latency_jitter_ms: float = 2.0
    no_read: float = 0.0  # a good print the camera fails to read
    misread: float = 0.0  # a good print read as something else
    low_grade: float = 0.0  # a good print graded below the minimum
    missed_trigger: float = 0.0  # the camera misses a trigger: no result, so later results slip a unit


@dataclass(frozen=True)
class Faults:
    link_corrupt: float = 0.0  # per byte, each direction
    link_loss: float = 0.0  # per byte, each direction
    link_outages: tuple[tuple[int, float], ...] = ()  # (at unit, duration ms)
    device_reboot_at: tuple[int, ...] = ()
    host_kill_at: tuple[int, ...] = ()  # SIGKILL the agent service, start it again
    host_term_at: tuple[int, ...] = ()  # SIGTERM the agent service (it stops in order), start it again
    camera_drop_at: tuple[int, ...] = ()  # the camera drops its TCP connection
    bin_full_at: int = -1  # the reject bin reports full from this unit on (-1 = never)


@dataclass(frozen=True)
class Scenario:
    name: str = "nominal"
    description: str = ""
    units: int = 600
    ppm: float = 600.0
    seed: int = 1
    line: Geometry = field(default_factory=Geometry)
    speed: Speed = field(default_factory=Speed)
    defects: ScenarioDefects = field(default_factory=ScenarioDefects)
    coder: ScenarioCoder = field(default_factory=ScenarioCoder)
    camera: ScenarioCamera = field(default_factory=ScenarioCamera)
    faults: Faults = field(default_factory=Faults)
    print: ScenarioPrint = field(default_factory=ScenarioPrint)

    @property
    def has_faults(self) -> bool:
        f = self.faults
        return bool(f.link_corrupt or f.link_loss or f.link_outages or f.device_reboot_at
                    or f.host_kill_at or f.host_term_at or f.camera_drop_at or f.bin_full_at >= 0)

    def with_overrides(self, **kw) -> "Scenario":
        kw = {k: v for k, v in kw.items() if v is not None}
        out = dataclasses.replace(self, **kw)
        validate(out, f"{self.name} with overrides")
        return out


_SECTIONS = {"line": Geometry, "speed": Speed, "defects": ScenarioDefects, "coder": ScenarioCoder,
             "camera": ScenarioCamera, "faults": Faults, "print": ScenarioPrint}
_PROFILES = ("constant", "ramp", "stop-start")
_RATE = (0.0, 1.0)
# (lo, hi) inclusive for every number; unit numbers of faults are checked against `units`.
RANGES = {
    "units": (1, 200_000), "ppm": (1.0, 20_000.0), "seed": (0, 2**31 - 1),
    **linefile.RANGES,  # line.*: the line file's, checked by linefile.geometry_problems
    "speed.ramp_from": (0.0, 1.0), "speed.ramp_to": (0.05, 1.0),  # a ramp to standstill never ends
    "speed.ramp_units": (1, 10**6), "speed.run_units": (1, 10**6), "speed.stop_ms": (0.0, 60_000.0),
    "speed.accel_ms": (1.0, 60_000.0),
    "defects.misprint": _RATE, "defects.skip": _RATE, "defects.smear": _RATE,
    "camera.latency_ms": (0.0, 10_000.0), "camera.latency_jitter_ms": (0.0, 10_000.0),
    "camera.no_read": _RATE, "camera.misread": _RATE, "camera.low_grade": _RATE, "camera.missed_trigger": _RATE,
    "faults.link_corrupt": (0.0, 0.1), "faults.link_loss": (0.0, 0.1),
    "faults.outage_ms": (1.0, 600_000.0),  # each link outage's duration
    "print.width": (64, 4096), "print.height": (64, 4096), "print.module_px": (1.0, 50.0),
    "print.clogged": _RATE, "print.clogged_rows": (0, 400), "print.smeared_by": (0.0, 10.0),
}
FAULTS_AT = ("device_reboot_at", "host_kill_at", "host_term_at", "camera_drop_at")  # [faults] unit lists
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # it names the batch and the report file


def full_speed_cps(s: Scenario) -> float:
    return s.ppm / 60.0 * s.line.pitch_mm * s.line.counts_per_mm


def deadline_margin_counts(s: Scenario) -> int:
    return linefile.deadline_margin_counts(s.line, full_speed_cps(s))


def host_budget_counts(s: Scenario) -> float:
    """What is left for the host's verdict at 125 % speed (linefile.host_budget_counts). The device
    refuses a configuration that leaves nothing."""
    return linefile.host_budget_counts(s.line, full_speed_cps(s))


# A scenario's older wording of a wrong type, kept while tests name it ("units must be int, got 'many'").
_TYPE_ERRORS = {bool: "{name} must not be a boolean", int: "{name} must be int, got {value}",
                float: "{name} must be float, got {value}", str: "{name} must be str, got {value}"}


def _unit_numbers(v) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(type(x) is int for x in v):
        raise ValueError("must be a list of unit numbers")
    return tuple(v)


def _outages(v) -> tuple[tuple[int, float], ...]:
    if not isinstance(v, list) or not all(isinstance(p, list) and len(p) == 2 and type(p[0]) is int
                                          and type(p[1]) in (int, float) and -2**53 < p[1] < 2**53 for p in v):
        raise ValueError("must be a list of [at_unit, duration_ms]")
    return tuple((a, float(d)) for a, d in v)


def _build(cls, where: str, table, section: str = ""):
    """A table → `cls` through the line file's getters (linefile.Section), each number in its RANGES."""
    sec = linefile.Section(table, where, f"[{section}]" if section else "", err=ScenarioError,
                           type_errors=_TYPE_ERRORS)
    sec.refuse_unknown(f.name for f in dataclasses.fields(cls))
    defaults, kw = cls(), {}
    for key in table:
        if cls is Scenario and key == "line":  # the line file's reader: same keys, types, ranges
            kw[key] = linefile.read_geometry(table[key], where, err=ScenarioError, required=False)
            continue
        if cls is Scenario and key in _SECTIONS:
            kw[key] = _build(_SECTIONS[key], where, table[key], key)
            continue
        default = getattr(defaults, key)
        lo, hi = RANGES.get(f"{section}.{key}" if section else key, (None, None))
        if isinstance(default, bool):
            kw[key] = sec.getboolean(key)
        elif isinstance(default, float):
            kw[key] = sec.getfloat(key, minval=lo, maxval=hi)
        elif isinstance(default, int):
            kw[key] = sec.getint(key, minval=lo, maxval=hi)
        elif isinstance(default, str):
            kw[key] = sec.get(key)
        else:
            kw[key] = sec.getwith(key, _outages if key == "link_outages" else _unit_numbers)
    return cls(**kw)


def _n(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _key(name: str) -> str:
    section, _, key = name.rpartition(".")
    return f"[{section}] {key}" if section else key


def validate(s: Scenario, where: str) -> None:
    L, problems = s.line, []
    for name, (lo, hi) in RANGES.items():
        section, _, key = name.rpartition(".")
        if key == "outage_ms" or section == "line":
            continue
        why = linefile.range_problem(_key(name), getattr(getattr(s, section) if section else s, key), lo, hi)
        if why:
            problems.append(why)
    problems += linefile.geometry_problems(L)
    if not _NAME.fullmatch(s.name):
        problems.append(f"name {s.name!r} must be 1-64 of A-Z a-z 0-9 _ . - (it names the batch and the report)")
    if len(s.description) > 500:
        problems.append("description is longer than 500 characters")
    f, last = s.faults, s.units - 1  # a fault strikes before pack N: N in 1..units-1, or it never does
    lo, hi = RANGES["faults.outage_ms"]
    for at, ms in f.link_outages:
        if not 1 <= at <= last:
            problems.append(f"[faults] link_outages: at unit {at} must be in 1..{last}")
        if not lo <= ms <= hi:
            problems.append(f"[faults] link_outages: duration {ms!r} ms at unit {at} must be in {_n(lo)}..{_n(hi)}")
    for key in FAULTS_AT:
        for at in getattr(f, key):
            if not 1 <= at <= last:
                problems.append(f"[faults] {key}: unit {at} must be in 1..{last}")
    for kind, section in (("coder", s.coder), ("reader", s.camera)):
        if section.driver not in emulators.NAMES[kind]:
            problems.append(f"[{'camera' if kind == 'reader' else kind}] driver = {section.driver!r}: the simulator"
                            f" emulates {', '.join(emulators.NAMES[kind])}")
    problems += _print_problems(s.print)
    if f.bin_full_at != -1 and not 0 <= f.bin_full_at <= last:
        problems.append(f"[faults] bin_full_at = {f.bin_full_at} must be -1 (never) or in 0..{last}")
    if problems:  # the checks below compute with these numbers
        raise ScenarioError(f"{where}: " + "; ".join(problems))
    if s.speed.profile not in _PROFILES:
        problems.append(f"speed.profile must be one of {', '.join(_PROFILES)}")
    if not problems and host_budget_counts(s) <= 0:
        problems.append("[line] camera_at_mm to gate_at_mm is too short for the gate's lead "
                        f"(gate_lead_ms {L.gate_lead_ms:g}) at {s.ppm:g} packs/min: no time is left for a verdict")
    if not problems:  # what the device gets, judged by the firmware's own rules
        why = linefile.check(linefile.scenario_geometry(s))
        if why:
            problems.append(f"{why} at {s.ppm:g} packs/min")
    if problems:
        raise ScenarioError(f"{where}: " + "; ".join(problems))


def _print_problems(p: ScenarioPrint) -> list[str]:
    """[print]'s defects by the renderer's own ranges (imported only for a scenario that sets them)."""
    if p == ScenarioPrint():
        return []
    from serialine.host.verify.imager import DEFECTS
    from serialine.host.verify.render import Defects, RenderError

    if p.wear and p.wear not in DEFECTS:
        return [f"[print] wear = {p.wear!r}: want one of {', '.join(DEFECTS)}"]
    values = {k: getattr(p, k) for k in DEFECTS}
    ends = [values] + ([{**values, p.wear: type(values[p.wear])(p.wear_to)}] if p.wear else [])
    problems = []
    for i, v in enumerate(ends):
        try:
            Defects(**v)
        except RenderError as exc:
            problems.append(f"[print] {'wear_to: ' if i else ''}{exc}")
    return problems


def parse(text: str, where: str = "<scenario>") -> Scenario:
    s = _build(Scenario, where, linefile.read_toml(text, where, ScenarioError))
    validate(s, where)
    return s


def names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load(name_or_file: str) -> Scenario:
    """A shipped scenario by name (`nominal`) or a TOML file by path."""
    path = Path(name_or_file)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{name_or_file}.toml"
        if not path.exists():
            raise ScenarioError(f"no scenario {name_or_file!r}; shipped: {', '.join(names())}")
    return parse(linefile.read_text(path, ScenarioError), str(path))
