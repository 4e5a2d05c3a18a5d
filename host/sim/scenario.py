"""Scenarios: TOML files that set the line, its speed, its defects and its faults.

A scenario is read with `tomllib`, checked field by field against the defaults below (an unknown key
or a value of the wrong type is an error, so a typo never silently runs the default) and returned as
a frozen `Scenario`. Lengths are in mm, times in ms unless a name says otherwise; the line model
turns them into encoder counts and µs."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the offending key."""


@dataclass(frozen=True)
class Line:
    pitch_mm: float = 100.0  # mean distance between pack leading edges
    pitch_spread: float = 0.1  # ± fraction of the pitch, uniform
    pack_length_mm: float = 60.0
    counts_per_mm: float = 4.0
    coder_at_mm: float = 250.0
    camera_at_mm: float = 500.0
    gate_at_mm: float = 1000.0
    gate_window_mm: float = 15.0  # a pack is pushed off if the gate is open while |offset| <= this
    gate_lead_ms: float = 8.0  # actuator delay from the output edge to the paddle being out
    gate_dwell_mm: float = 20.0
    confirm_delay_mm: float = 40.0  # travel from the gate to the confirm sensor in the chute
    confirm_window_mm: float = 80.0  # the device accepts the confirm within this after the gate
    bin_capacity: int = 100_000


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
class Defects:
    misprint: float = 0.0  # coder prints a wrong code
    skip: float = 0.0  # coder prints nothing
    smear: float = 0.0  # the print is unreadable / low grade


@dataclass(frozen=True)
class Camera:
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
    host_kill_at: tuple[int, ...] = ()
    bin_full_at: int = -1  # the reject bin reports full from this unit on (-1 = never)


@dataclass(frozen=True)
class Scenario:
    name: str = "nominal"
    description: str = ""
    units: int = 600
    ppm: float = 600.0
    seed: int = 1
    line: Line = field(default_factory=Line)
    speed: Speed = field(default_factory=Speed)
    defects: Defects = field(default_factory=Defects)
    camera: Camera = field(default_factory=Camera)
    faults: Faults = field(default_factory=Faults)

    @property
    def has_faults(self) -> bool:
        f = self.faults
        return bool(f.link_corrupt or f.link_loss or f.link_outages or f.device_reboot_at
                    or f.host_kill_at or f.bin_full_at >= 0)

    def with_overrides(self, **kw) -> "Scenario":
        kw = {k: v for k, v in kw.items() if v is not None}
        out = dataclasses.replace(self, **kw)
        validate(out, "overrides")
        return out


_SECTIONS = {"line": Line, "speed": Speed, "defects": Defects, "camera": Camera, "faults": Faults}
_PROFILES = ("constant", "ramp", "stop-start")


def _coerce(where: str, key: str, default, value):
    if isinstance(default, bool) or isinstance(value, bool):
        raise ScenarioError(f"{where}: {key} must not be a boolean")
    if isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    if isinstance(default, int) and isinstance(value, int):
        return value
    if isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list):
            raise ScenarioError(f"{where}: {key} must be a list")
        if key == "link_outages":
            if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, (int, float)) for x in p)
                       for p in value):
                raise ScenarioError(f"{where}: link_outages must be a list of [at_unit, duration_ms]")
            return tuple((int(a), float(d)) for a, d in value)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            raise ScenarioError(f"{where}: {key} must be a list of unit numbers")
        return tuple(value)
    raise ScenarioError(f"{where}: {key} must be {type(default).__name__}, got {value!r}")


def _build(cls, where: str, table: dict):
    defaults = cls()
    names = {f.name for f in dataclasses.fields(cls)} - set(_SECTIONS if cls is Scenario else ())
    kw = {}
    for key, value in table.items():
        if cls is Scenario and key in _SECTIONS:
            if not isinstance(value, dict):
                raise ScenarioError(f"{where}: [{key}] must be a table")
            kw[key] = _build(_SECTIONS[key], f"{where} [{key}]", value)
        elif key in names:
            kw[key] = _coerce(where, key, getattr(defaults, key), value)
        else:
            raise ScenarioError(f"{where}: unknown key {key!r}")
    return cls(**kw)


def validate(s: Scenario, where: str) -> None:
    L, problems = s.line, []
    if s.units < 1:
        problems.append("units must be >= 1")
    if not 1 <= s.ppm <= 20_000:
        problems.append("ppm must be in 1..20000")
    if s.speed.profile not in _PROFILES:
        problems.append(f"speed.profile must be one of {', '.join(_PROFILES)}")
    if not 0 <= L.pitch_spread < 0.5:
        problems.append("line.pitch_spread must be in [0, 0.5)")
    if not 0 < L.pack_length_mm < L.pitch_mm * (1 - L.pitch_spread):
        problems.append("line.pack_length_mm must be positive and leave a gap at the smallest pitch")
    if not 0 < L.coder_at_mm < L.camera_at_mm < L.gate_at_mm:
        problems.append("stations must be in order: 0 < coder_at_mm < camera_at_mm < gate_at_mm")
    if L.counts_per_mm <= 0 or L.gate_window_mm <= 0 or L.gate_dwell_mm <= 0:
        problems.append("line.counts_per_mm, gate_window_mm, gate_dwell_mm must be positive")
    if L.confirm_delay_mm >= L.confirm_window_mm:
        problems.append("line.confirm_delay_mm must be inside confirm_window_mm")
    for sect in (s.defects, s.camera):
        for f in dataclasses.fields(sect):
            v = getattr(sect, f.name)
            if f.name not in ("latency_ms", "latency_jitter_ms") and not 0 <= v <= 1:
                problems.append(f"{f.name} is a rate and must be in [0, 1]")
    if s.camera.latency_ms < 0 or s.camera.latency_jitter_ms < 0:
        problems.append("camera latency must be >= 0")
    if not (0 <= s.faults.link_corrupt <= 0.1 and 0 <= s.faults.link_loss <= 0.1):
        problems.append("link_corrupt and link_loss are per-byte rates in [0, 0.1]")
    if problems:
        raise ScenarioError(f"{where}: " + "; ".join(problems))


def parse(text: str, where: str = "<scenario>") -> Scenario:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML: {exc}") from None
    s = _build(Scenario, where, table)
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
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror}") from None
    return parse(text, str(path))
