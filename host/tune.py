"""Configure and tune a running line through its agent (docs/commissioning.md):
`serialine device config get|set --config line.toml [KEY=VALUE ...] --user U --reason R`.

Values are the line file's `[line]` keys in mm and ms. A change goes to the device as one
CONFIG_SET: the device's own validation decides (a refusal is said in the line file's keys by
linefile.explain_refusal, and nothing changes); once the CONFIG_REPORT says OK the service runs on
it, and the change is audited (`device.config`: before, after, user, reason) with a
`line.configure` record (a configuration change: a line with `[policy] challenge` needs a new
challenge before the next batch). The line file itself is not rewritten: the change lasts until the
service restarts, so put the value in the line file to keep it."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
import tomllib

log = logging.getLogger("serialine.service")

ANSWER_S = 3.0  # the device's CONFIG_REPORT, within the control interface's 5 s
ACTION = "device.config"


def device_keys() -> tuple[str, ...]:
    """The [line] keys that are device settings (the ones CONFIG_SET carries)."""
    from . import linefile
    keys: list[str] = []
    for name, (key, _unit, _back) in linefile.FIELD_KEYS.items():
        for k in key.split(", "):
            if k != "config_id" and k not in keys:
                keys.append(k)
    return tuple(keys)


def parse_values(text: str) -> dict:
    """"gate_lead_ms=9;gate_dwell_mm=25" → {key: value} (TOML values), or ValueError (one line)."""
    out: dict = {}
    keys = device_keys()
    for part in (p.strip() for p in str(text).split(";")):
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or not raw.strip():
            raise ValueError(f"{part!r}: expected KEY=VALUE, e.g. gate_lead_ms=9")
        if key not in keys:
            raise ValueError(f"[line] {key} is not a device setting; there are {', '.join(keys)}")
        try:
            out[key] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            raise ValueError(f"[line] {key} = {raw.strip()}: not a number or true/false") from None
    if not out:
        raise ValueError("nothing to set: give KEY=VALUE, e.g. gate_lead_ms=9")
    return out


def changed_config(cfg, values: dict):
    """The LineConfig with `values` in [line], checked as the line file would be (LineFileError)."""
    from . import linefile
    g = cfg.geometry
    table = {f.name: getattr(g, f.name) for f in dataclasses.fields(g) if getattr(g, f.name) is not None}
    table.update(values)
    new_g = linefile.resolve(linefile.read_geometry(table, "the change"))
    return dataclasses.replace(cfg, geometry=new_g)


@dataclasses.dataclass
class Change:
    req: object
    cfg: object
    fields: dict
    before: dict
    after: dict
    deadline: float


def execute_change(service, req):
    """device.config.set on the loop thread: send the CONFIG_SET; answered by step_change (None)."""
    from . import linefile
    if service.agent is None or not service.configured or service.link is None:
        return "device.config refused: the device is not configured yet"
    if service.config_change is not None:
        return "device.config refused: another change is waiting for the device's answer"
    run = getattr(service, "challenge", None)
    if run is not None and run.state == "armed":
        return "device.config refused: a challenge is running"
    try:
        values = parse_values(req.args.get("values", ""))
        new = changed_config(service.cfg, values)
    except ValueError as exc:  # LineFileError is one
        return str(exc)
    old_g, new_g = service.cfg.geometry, new.geometry
    before = {k: getattr(old_g, k) for k in values}
    after = {k: getattr(new_g, k) for k in values}
    if before == after:
        return {"config_id": service.config_id, "before": before, "after": after, "unchanged": True}
    service.config_id += 1
    fields = linefile.device_fields(new, service.config_id)
    service.link.last_config_report = None
    service.link.send("CONFIG_SET", fields)
    service.config_change = Change(req, new, fields, before, after, time.monotonic() + ANSWER_S)
    return None


def step_change(service) -> None:
    from . import audit, challenge, linefile
    from .db import transaction
    from serialine.protocol.schema import ConfigResult
    ch = service.config_change
    rep = service.link.last_config_report
    if rep is None:
        if time.monotonic() > ch.deadline:
            service.config_change = None
            ch.req.refuse(f"the device did not answer the configuration within {ANSWER_S:g} s; the service keeps"
                          " the one before (check with serialine device config get)")
        return
    service.config_change = None
    result = int(rep["result"])
    if result != ConfigResult.OK or int(rep["config_id"]) != ch.fields["config_id"]:
        msg = linefile.explain_refusal(rep, ch.cfg) if result != ConfigResult.OK else \
            f"the device reports configuration {rep['config_id']}, not {ch.fields['config_id']}"
        log.warning("device.config by %s refused: %s", ch.req.user, msg)
        ch.req.refuse(msg + "; nothing changed")
        return
    service.cfg, service._config_fields = ch.cfg, ch.fields
    hello = service.link.hello or {}
    device_id = str(hello.get("device_id", "")).rstrip("\x00").strip()
    with transaction(service.conn):
        audit.append(service.conn, ch.req.user, ACTION,
                     {"line_id": challenge.line_id(ch.cfg), "device_id": device_id, "boot_id": service.boot_id,
                      "config_id": ch.fields["config_id"], "before": ch.before, "after": ch.after,
                      "reason": ch.req.reason})
        challenge.record_configuration(service.conn, ch.cfg, ch.fields, user=ch.req.user, device_id=device_id,
                                       boot_id=service.boot_id, config_id=ch.fields["config_id"], how="changed")
    log.info("device configuration %d by %s (%s): %s", ch.fields["config_id"], ch.req.user, ch.req.reason,
             ", ".join(f"{k} {ch.before[k]} → {ch.after[k]}" for k in ch.after))
    ch.req.reply({"config_id": ch.fields["config_id"], "before": ch.before, "after": ch.after})


_VIEW: dict = {}


def view(service) -> dict | None:
    """The device's last CONFIG_REPORT in the line file's keys and units (for GET /device/config)."""
    link = getattr(service, "link", None)
    rep = getattr(link, "last_config_report", None) if link is not None else None
    if rep is None:
        return None
    key = id(rep)
    if _VIEW.get("key") != key:
        _VIEW.clear()
        _VIEW.update(key=key, value=report_values(rep))
    return _VIEW["value"]


def report_values(rep: dict) -> dict | None:
    from . import linefile
    from serialine.protocol.schema import ConfigResult
    cpm = int(rep.get("counts_per_mm_milli") or 0) / 1000
    if cpm <= 0:
        return {"config_id": int(rep.get("config_id", 0)), "values": {}, "units": {}, "configured": False}

    class G:  # what FIELD_KEYS' conversions read
        counts_per_mm = cpm

    values, units = {}, {}
    for name, (key, unit, back) in linefile.FIELD_KEYS.items():
        if name in ("config_id", "dwell_unit", "confirm_from") or name not in rep:
            continue
        v = back(G, rep, int(rep[name]))
        if name == "policy":
            for k, b in zip(key.split(", "), str(v).split(", ")):
                values[k], units[k] = b == "true", ""
            continue
        values[key] = round(v, 6) if isinstance(v, float) else v
        units[key] = unit
    try:
        result = ConfigResult(int(rep.get("result", 0))).name
    except ValueError:
        result = str(rep.get("result"))
    return {"config_id": int(rep.get("config_id", 0)), "result": result, "values": values, "units": units,
            "configured": True}


# --- the CLI -------------------------------------------------------------------------------------

def _client(config: str, control: str | None):
    from . import linefile
    from .control import Client
    cfg = linefile.load(config)
    return cfg, Client(control or cfg.control.address)


def config_main(argv: list[str]) -> int:
    """`serialine device config get|set --config line.toml [KEY=VALUE ...] --user U --reason R`."""
    from . import linefile
    from .control import ControlError
    ap = argparse.ArgumentParser(prog="serialine device config",
                                 description="the running device's configuration, through the agent, in mm and ms")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get", help="what the device reports it runs on")
    g.add_argument("--config", required=True, help="the line file (its [control] address)")
    g.add_argument("--control", metavar="ADDR", help="the agent's control address (default: the line file's)")
    s = sub.add_parser("set", help="change [line] settings on the running device (audited)")
    s.add_argument("--config", required=True, help="the line file (its [control] address)")
    s.add_argument("--control", metavar="ADDR", help="the agent's control address (default: the line file's)")
    s.add_argument("values", nargs="+", metavar="KEY=VALUE", help="[line] keys, e.g. gate_lead_ms=9")
    s.add_argument("--user", required=True)
    s.add_argument("--reason", required=True)
    a = ap.parse_args(argv)
    try:
        cfg, client = _client(a.config, a.control)
        if a.cmd == "get":
            view_ = client.device_config()
            if not view_ or not view_.get("configured"):
                print("serialine device config: the device has reported no configuration yet", file=sys.stderr)
                return 1
            print(f"# configuration {view_['config_id']} on the device of line {cfg.identity.line_id}")
            print("[line]")
            for k, v in view_["values"].items():
                unit = view_["units"].get(k)
                shown = str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)
                print(f"{k} = {shown}" + (f"  # {unit}" if unit else ""))
            return 0
        parse_values(";".join(a.values))  # a bad key or value is said before anything is sent
        got = client.command("device.config.set", a.user, a.reason, values=";".join(a.values))
    except (ControlError, ValueError) as exc:  # LineFileError is a ValueError
        print(f"serialine device config: {exc}", file=sys.stderr)
        return 1
    if got.get("unchanged"):
        print("nothing changed: the device runs on these values already")
        return 0
    for k, after in got["after"].items():
        print(f"[line] {k}: {got['before'][k]} → {after} (configuration {got['config_id']})")
    differs = [k for k, v in got["after"].items() if getattr(cfg.geometry, k, None) != v]
    if differs:
        print(f"the line file {a.config} still says {', '.join(f'{k} = {getattr(cfg.geometry, k)}' for k in differs)}:"
              " put the new value there to keep it after the agent restarts", file=sys.stderr)
    return 0
