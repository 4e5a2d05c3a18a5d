"""The device drivers by name, as a line file names them (`[camera] driver = "dataman"`).

`check_options(kind, name, options)` validates a driver's options offline (ValueError, one line), so
a line file is refused before anything connects; `open_reader` / `open_coder` check again and
connect. A driver module is imported only when its name is used.

Reader interface (what the agent uses): `results() -> (list[CameraResult], list[(kind, detail)])`,
`closed`, `reconnect(why)`, `close()`. Coder interface: `push`, `clear`, `depth`, `buffered`,
`printed`, `empty`, `alarms`, `closed`, `reconnect`, `close`, and `printed_codes()` with its `epoch` for the
print cross-check (docs/devices.md)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Driver:
    """`module` (under serialine.host.devices) has `check_<kind>_options(options) -> dict` (normalised,
    ValueError naming the option) and `open_<kind>(host, port, options)`; or, given `cls`, the driver
    is that class of the module, opened as `cls(host, port, timeout=…)` with option `timeout` only."""

    module: str
    kind: str  # "reader" | "coder"
    cls: str | None = None

    def _mod(self):
        return importlib.import_module(f"{__package__}.{self.module}")

    def check(self, options: dict) -> dict:
        if self.cls is not None:
            return check_timeout(known_options(dict(options or {}), {"timeout": ((int, float), 2.0)}))
        return getattr(self._mod(), f"check_{self.kind}_options")(dict(options or {}))

    def __call__(self, host: str, port: int, options: dict | None = None):
        opts = self.check(options)
        if self.cls is not None:
            return getattr(self._mod(), self.cls)(host, port, timeout=float(opts["timeout"]))
        return getattr(self._mod(), f"open_{self.kind}")(host, port, opts)


READERS: dict[str, Driver] = {
    "serialine": Driver("camera", "reader", "Camera"),
    "dataman": Driver("dataman", "reader"),
    "keyence-sr": Driver("keyence", "reader"),
    "text": Driver("textreader", "reader"),
}

CODERS: dict[str, Driver] = {
    "serialine": Driver("coder", "coder", "Coder"),
    "videojet": Driver("videojet", "coder"),  # Videojet (Zipher) Text Communications Protocol
}

_KINDS = {"reader": READERS, "coder": CODERS}


def _driver(kind: str, name: str) -> Driver:
    table = _KINDS.get(kind)
    if table is None:
        raise ValueError(f"device kind {kind!r}: expected one of {', '.join(_KINDS)}")
    if name not in table:
        raise ValueError(f"{kind} driver {name!r}: expected one of {', '.join(sorted(table))}")
    return table[name]


def check_options(kind: str, name: str, options: dict) -> None:
    """ValueError (one line: driver, option, what is allowed) when `options` would be refused."""
    drv = _driver(kind, name)
    try:
        drv.check(options)
    except ValueError as exc:
        raise ValueError(f"{kind} driver {name!r}: {exc}") from None


def open_reader(name: str, host: str, port: int, options: dict | None = None):
    return _driver("reader", name)(host, port, options)


def open_coder(name: str, host: str, port: int, options: dict | None = None):
    return _driver("coder", name)(host, port, options)


def known_options(options: dict, allowed: dict[str, tuple[type | tuple, object]]) -> dict:
    """Shared option check: `allowed` maps a name to (type(s), default); unknown names and wrong types
    refused (bool is not an int here). Returns the options with defaults filled in."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (allowed: {', '.join(sorted(allowed)) or 'none'})")
    out = {}
    for key, (types, default) in allowed.items():
        value = options.get(key, default)
        tt = types if isinstance(types, tuple) else (types,)
        if isinstance(value, bool) and bool not in tt or not isinstance(value, tt):
            names = " or ".join(t.__name__ for t in tt if t is not type(None))
            raise ValueError(f"option {key!r} = {value!r}: expected {names}")
        out[key] = value
    return out


def check_timeout(opts: dict) -> dict:
    t = opts.get("timeout")
    if t is not None and not 0.1 <= t <= 30:
        raise ValueError(f"option 'timeout' = {t!r}: expected 0.1 to 30 (s)")
    return opts
