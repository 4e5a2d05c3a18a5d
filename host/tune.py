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
import sqlite3
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
    from . import linefile
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
    hello = service.link.hello or {}
    device_id = str(hello.get("device_id", "")).rstrip("\x00").strip()
    try:
        _record_change(service, ch, device_id)
    except sqlite3.Error as exc:  # not recorded: the device goes back to what it had, nothing half-applied
        back = dict(service._config_fields or linefile.device_fields(service.cfg))
        service.config_id += 1
        back["config_id"] = service.config_id
        service.link.send("CONFIG_SET", back)
        ch.req.refuse(f"the ledger could not record the change ({exc}); the device was given its previous"
                      " configuration back")
        return
    service.cfg, service._config_fields = ch.cfg, ch.fields
    log.info("device configuration %d by %s (%s): %s", ch.fields["config_id"], ch.req.user, ch.req.reason,
             ", ".join(f"{k} {ch.before[k]} → {ch.after[k]}" for k in ch.after))
    ch.req.reply({"config_id": ch.fields["config_id"], "before": ch.before, "after": ch.after})


def _record_change(service, ch, device_id: str) -> None:
    from . import audit, challenge
    from .db import transaction
    with transaction(service.conn):
        audit.append(service.conn, ch.req.user, ACTION,
                     {"line_id": challenge.line_id(ch.cfg), "device_id": device_id, "boot_id": service.boot_id,
                      "config_id": ch.fields["config_id"], "before": ch.before, "after": ch.after,
                      "reason": ch.req.reason})
        challenge.record_configuration(service.conn, ch.cfg, ch.fields, user=ch.req.user, device_id=device_id,
                                       boot_id=service.boot_id, config_id=ch.fields["config_id"], how="changed")


_VIEW: dict = {}


def view(service) -> dict | None:
    """The device's last CONFIG_REPORT in the line file's keys and units (for GET /device/config)."""
    link = getattr(service, "link", None)
    rep = getattr(link, "last_config_report", None) if link is not None else None
    if rep is None:
        return None
    if _VIEW.get("rep") is not rep:  # the report itself is held: a new one is never mistaken for it
        _VIEW.clear()
        _VIEW.update(rep=rep, value=report_values(rep))
    return _VIEW["value"]


def report_values(rep: dict) -> dict | None:
    from . import linefile
    from serialine.protocol.schema import ConfigResult
    cpm = int(rep.get("counts_per_mm_milli") or 0) / 1000
    if cpm <= 0:
        return {"config_id": int(rep.get("config_id", 0)), "values": {}, "units": {}, "configured": False}

    class G:  # what FIELD_KEYS' conversions read
        counts_per_mm = cpm

    values: dict[str, object] = {}
    units: dict[str, str] = {}
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


def command_as(client, name: str, user: str, reason: str, **args) -> dict:
    """A changing control command; on a ledger with users the agent asks for the user's password
    (users.read_password: $SERIALINE_PASSWORD, a prompt, or stdin) and it is sent once."""
    from .control import ControlError
    try:
        return client.command(name, user, reason, **args)
    except ControlError as exc:
        if exc.need != "password":
            raise
        from . import users
        return client.command(name, user, reason, password=users.read_password(f"password for {user}: "), **args)


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
        got = command_as(client, "device.config.set", a.user, a.reason, values=";".join(a.values))
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


# --- serialine tune: the live view ------------------------------------------------------------------

def figures(conn, cfg, n: int = 50) -> dict:
    """The last `n` unit outcomes of the ledger as a line engineer tunes by them: per unit the gate
    error (mm) and, for confirmed rejects, where the confirm sensor saw it (mm past the gate); the
    rejects by reason."""
    from . import devevents
    g = cfg.geometry
    cpm = g.counts_per_mm
    rows = list(devevents.events(conn, names=("UNIT_OUTCOME",), order=f"{devevents.received_sql()} DESC, e.event_seq DESC", limit=n))
    units: list[dict] = []
    for device_id, boot_id, _, _, unit_seq, f, _ in reversed(rows):
        det = next((e.fields for e in devevents.events(conn, device_id=device_id, boot_id=boot_id,
                                                        names=("UNIT_DETECTED",), unit_seq=unit_seq)), None)
        outcome, reason = _name("Outcome", f.get("outcome")), _name("Reason", f.get("reason"))
        fired = outcome.startswith("REJECTED")
        confirm = None
        if outcome == "REJECTED_CONFIRMED" and det is not None:
            confirm = round((int(f["pos"]) - int(det["pos"])) / cpm - g.gate_at_mm, 2)
        units.append({"unit": f"{boot_id}/{unit_seq}", "outcome": outcome, "reason": reason,
                      "gate_error_mm": round(int(f.get("gate_error", 0)) / cpm, 2) if fired else None,
                      "confirm_mm": confirm})
    by_reason: dict[str, int] = {}
    for u in units:
        if u["outcome"] != "PASSED":
            by_reason[u["reason"].lower()] = by_reason.get(u["reason"].lower(), 0) + 1
    errs = [abs(u["gate_error_mm"]) for u in units if u["gate_error_mm"] is not None]
    return {"units": units, "rejects_by_reason": by_reason, "gate_window_mm": g.gate_window_mm,
            "confirm_window_mm": g.confirm_window_mm, "gate_error_max_mm": max(errs) if errs else None,
            "outside_window": sum(e > g.gate_window_mm for e in errs)}


def _name(enum_name: str, v) -> str:
    from serialine.protocol import schema
    try:
        return getattr(schema, enum_name)(int(v)).name
    except (TypeError, ValueError):
        return str(v)


def render(status: dict, fig: dict):
    """One frame of the live view (rich renderables)."""
    from rich.console import Group
    from rich.table import Table
    speed = status.get("speed_mm_s")
    lat = status.get("verdict_latency_ms") or {}
    budget = status.get("budget_ms")
    head = Table.grid(padding=(0, 2))
    head.add_row("line", str(status.get("line_id")), "batch", str(status.get("batch")),
                 "device", str((status.get("device") or {}).get("state")))
    head.add_row("speed", f"{speed:g} mm/s" if speed is not None else "-",
                 "verdict latency", f"p50 {lat.get('p50', '-')} ms, p99 {lat.get('p99', '-')} ms, max {lat.get('max', '-')} ms"
                 f" (n {lat.get('n', 0)})",
                 "budget", f"{budget:g} ms" if budget is not None else "-")
    w = fig["gate_window_mm"]
    t = Table(title=f"last {len(fig['units'])} units: gate error vs ±{w:g} mm, confirm within {fig['confirm_window_mm']:g} mm")
    for col in ("unit", "outcome", "reason", "gate error mm", "confirm mm past gate"):
        t.add_column(col)
    for u in fig["units"][-20:]:
        ge = u["gate_error_mm"]
        shown = "-" if ge is None else (f"[red]{ge:+.2f}[/red]" if abs(ge) > w else f"{ge:+.2f}")
        t.add_row(u["unit"], u["outcome"], u["reason"].lower(), shown,
                  "-" if u["confirm_mm"] is None else f"{u['confirm_mm']:.1f}")
    rej = ", ".join(f"{k} {v}" for k, v in sorted(fig["rejects_by_reason"].items())) or "none"
    mx = fig["gate_error_max_mm"]
    tail = (f"rejects by reason: {rej}; gate error max {'-' if mx is None else f'{mx:.2f} mm'},"
            f" {fig['outside_window']} outside the window")
    warn = ""
    worst = lat.get("max", lat.get("p99"))
    if budget and worst and worst > budget:
        warn = f"\n[red]verdict latency up to {worst} ms: over the decision budget {budget:g} ms[/red]"
    pq = status.get("print_quality") or {}  # host/trend.py
    grades = ", ".join(f"{k} {v['grade']} ({v['mean']:.2f})" for k, v in sorted((pq.get("parameters") or {}).items()))
    if grades:
        tail += f"\nprint quality, last {pq.get('window')} reads: {grades}"
    if pq.get("drifting"):
        warn += f"\n[red]print quality drifting ({', '.join(pq['drifting'])}): clean the printhead[/red]"
    return Group(head, t, tail + warn)


def plot_figures(fig: dict, status: dict, path: str) -> None:
    """--plot: gate error per unit against the window (symlog scale so outliers show), verdict
    latency p50/p99/max against the decision budget (log scale), the rejects by reason."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    w = fig["gate_window_mm"]
    units = fig["units"]
    f, (ax, lx, bx) = plt.subplots(1, 3, figsize=(13, 4), dpi=110, gridspec_kw={"width_ratios": [3, 1, 1]})
    xs = [i for i, u in enumerate(units) if u["gate_error_mm"] is not None]
    ax.axhspan(-w, w, color="tab:green", alpha=0.15, label=f"gate window ±{w:g} mm")
    for y in (-w, w):
        ax.axhline(y, color="tab:red", ls="--", lw=0.8)
    ax.plot(xs, [units[i]["gate_error_mm"] for i in xs], "o", color="tab:blue", label="gate error at opening")
    ax.set_yscale("symlog", linthresh=max(1.0, w))
    ax.set_xlabel(f"unit (last {len(units)})")
    ax.set_ylabel("pack − gate when the gate opened (mm)")
    lat, budget = status.get("verdict_latency_ms") or {}, status.get("budget_ms")
    ax.set_title(f"speed {status.get('speed_mm_s')} mm/s; verdict p50 {lat.get('p50', '-')} / p99 {lat.get('p99', '-')}"
                 f" / max {lat.get('max', '-')} ms"
                 f" vs budget {budget} ms", fontsize=8)
    ax.legend(fontsize=7)
    names = [k for k in ("p50", "p99", "max") if isinstance(lat.get(k), (int, float))]
    lx.bar(names, [max(float(lat[k]), 0.01) for k in names], color="tab:blue")
    if budget:
        lx.axhline(float(budget), color="tab:red", ls="--", label=f"decision budget {budget:g} ms")
        lx.legend(fontsize=7)
    lx.set_yscale("log")
    lx.set_ylabel("verdict latency (ms, log)")
    lx.set_title(f"verdict latency (n {lat.get('n', 0)})", fontsize=8)
    r = fig["rejects_by_reason"]
    bx.bar(list(r), list(r.values()), color="tab:red")
    bx.set_title("rejects by reason", fontsize=8)
    bx.tick_params(axis="x", labelrotation=45, labelsize=7)
    f.tight_layout()
    f.savefig(path)
    plt.close(f)


# --- serialine tune calibrate ---------------------------------------------------------------------

CAL_PACKS = 8  # test packs, half at each of two line speeds
MIN_SPREAD = 0.2  # the two speeds differ by at least this fraction of their mean


class CalibrationError(ValueError):
    """One line: the packs cannot tell the gate's lead from the confirm delay."""


def calibration(packs: list[dict], *, counts_per_mm: float, gate_at_mm: float, gate_lead_ms: float,
                gate_window_mm: float, max_speed_mm_s: float) -> dict:
    """The gate's real lead time and the confirm delay from test packs' device timing.

    The device fires a reject `gate_lead_ms` (configured) before the pack reaches gate_at, at the
    measured speed v; the paddle acts after its real lead L; the confirm sensor sees the pack d mm
    of travel after it was struck. So per pack, from the photo-eye edge to the confirm edge,
    T = (confirm position − gate_at) / v + configured lead = L + d / v: a line in 1/v, two speeds
    give both L (intercept) and d (slope). A scan that fired late by e/v is in the pack's gate_error
    e (where it was a configured lead after the actual firing), so e/v is taken off T."""
    xs, ys, vs, rows = [], [], [], []
    gate = gate_at_mm * counts_per_mm
    lead_us = gate_lead_ms * 1000
    for p in packs:
        if p.get("outcome") != "REJECTED_CONFIRMED" or p.get("outcome_t_us") is None or p.get("detected_t_us") is None:
            continue
        rel = (int(p["outcome_pos"]) - int(p["detected_pos"])) & 0xFFFFFFFF  # counts, u32 wrap
        dt = (int(p["outcome_t_us"]) - int(p["detected_t_us"])) & 0xFFFFFFFF  # us
        if rel <= 0 or dt <= 0:
            continue
        v = rel / dt  # counts/us, the pack's speed from the photo-eye to the confirm
        late = float(p.get("gate_error_mm") or 0.0) * counts_per_mm  # counts the firing scan was late
        xs.append(1 / v)
        ys.append((rel - gate - late) / v + lead_us)
        vs.append(v)
        rows.append((p, rel - late, v))
    if len(xs) < 4:
        raise CalibrationError(f"{len(xs)} test pack(s) confirmed in the bin; calibration needs at least 4 "
                               "(run it again and feed every pack)")
    speeds = [v * 1e6 / counts_per_mm for v in vs]  # mm/s
    mean = sum(speeds) / len(speeds)
    if (max(speeds) - min(speeds)) / mean < MIN_SPREAD:
        raise CalibrationError(f"every pack ran at about {mean:.0f} mm/s: at one speed the gate's lead and the confirm"
                               " delay cannot be told apart; feed half the packs at a lower line speed")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    d = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx  # counts
    lead = my - d * mx  # us
    resid = [y - (lead + d * x) for x, y in zip(xs, ys)]
    d_mm = d / counts_per_mm
    # where each confirm would fall past gate_at with the measured lead (the pack struck at the gate)
    at = [(rel - gate - v * (lead - lead_us)) / counts_per_mm for _p, rel, v in rows]
    window = _up(max(at) + gate_window_mm, 5.0)
    return {
        "packs": len(xs), "speeds_mm_s": [round(min(speeds), 1), round(max(speeds), 1)],
        "gate_lead_ms": {"configured": gate_lead_ms, "measured": round(lead / 1000, 2),
                         "spread_ms": round(max(abs(r) for r in resid) / 1000, 2)},
        "confirm_delay_mm": round(d_mm, 1),
        "confirm_delay_ms": {f"{s:.0f} mm/s": round(d_mm / s * 1000, 1)
                             for s in sorted({round(min(speeds)), round(max(speeds)), round(max_speed_mm_s)})},
        "confirm_past_gate_mm_max": round(max(at), 1),
        "proposal": {"gate_lead_ms": round(lead / 1000, 1), "confirm_window_mm": window},
    }


def _up(v: float, step: float) -> float:
    import math
    return math.ceil(v / step) * step


def calibrate_main(argv: list[str]) -> int:
    """`serialine tune calibrate --config line.toml --user U --reason R [--packs N] [--apply]`."""
    import json
    from . import challenge
    from .control import ControlError
    ap = argparse.ArgumentParser(prog="serialine tune calibrate",
                                 description="measure the gate's real lead time and the confirm delay with test packs;"
                                             " propose [line] gate_lead_ms and confirm_window_mm")
    ap.add_argument("--config", required=True, help="the line file ([control] address)")
    ap.add_argument("--control", metavar="ADDR", help="the agent's control address (default: the line file's)")
    ap.add_argument("--user", required=True)
    ap.add_argument("--reason", required=True)
    ap.add_argument("--packs", type=int, default=CAL_PACKS, help=f"test packs, half at each speed (default {CAL_PACKS})")
    ap.add_argument("--timeout", type=float, default=challenge.TIMEOUT_S, help="seconds for every pack's outcome")
    ap.add_argument("--apply", action="store_true", help="set the proposal on the device (audited: device.config)")
    ap.add_argument("--json", action="store_true", help="print the measurement as JSON")
    a = ap.parse_args(argv)
    try:
        if not 4 <= a.packs <= challenge.MAX_PACKS:
            raise ValueError(f"--packs {a.packs}: 4..{challenge.MAX_PACKS}")
        cfg, client = _client(a.config, a.control)
        dev = (client.device_config() or {}).get("values") or {}
        g = cfg.geometry
        now = {k: float(dev.get(k, getattr(g, k))) for k in ("gate_at_mm", "gate_lead_ms", "confirm_window_mm")}
        got = command_as(client, "challenge.run", a.user, a.reason, plan=",".join(["no_code"] * a.packs),
                         timeout_s=f"{a.timeout:g}", purpose="calibrate")
        token, half = got["token"], a.packs // 2
        print(f"calibration {token} armed on line {cfg.identity.line_id}: feed {half} pack(s) at the line's speed,"
              f" then {a.packs - half} at a lower speed (about half)", flush=True)
        end = time.monotonic() + a.timeout + 30
        told = False
        while True:
            view = client.status().get("challenge")
            if view and view.get("token") == token and view.get("state") != "armed":
                break
            done = sum(p.get("outcome") is not None for p in (view or {}).get("packs", []))
            if not told and done >= half and view and view.get("token") == token:
                told = True
                print(f"{done} pack(s) done: lower the line speed (about half), then feed the other"
                      f" {a.packs - half}", flush=True)
            if time.monotonic() > end:
                raise ControlError(f"no result from the agent within {a.timeout + 30:g} s")
            time.sleep(0.3)
        if view["state"] != "passed":
            raise CalibrationError("calibration run failed: " + "; ".join(view.get("problems") or ["?"]))
        m = calibration(view["packs"], counts_per_mm=g.counts_per_mm, gate_at_mm=now["gate_at_mm"],
                        gate_lead_ms=now["gate_lead_ms"], gate_window_mm=g.gate_window_mm,
                        max_speed_mm_s=g.max_speed_mm_s)
    except (ControlError, ValueError) as exc:  # CalibrationError, LineFileError
        print(f"serialine tune calibrate: {exc}", file=sys.stderr)
        return 1
    lead, prop = m["gate_lead_ms"], m["proposal"]
    if a.json:
        print(json.dumps(m, sort_keys=True))
    print(f"{m['packs']} test packs at {m['speeds_mm_s'][0]:g}..{m['speeds_mm_s'][1]:g} mm/s")
    print(f"gate lead: measured {lead['measured']:g} ms (± {lead['spread_ms']:g} ms), configured {lead['configured']:g} ms")
    print(f"confirm delay: {m['confirm_delay_mm']:g} mm past the gate ("
          + ", ".join(f"{v:g} ms at {k}" for k, v in m["confirm_delay_ms"].items()) + ")")
    print("proposal for the line file:\n[line]")
    print(f"gate_lead_ms = {prop['gate_lead_ms']:g}  # ms (now {now['gate_lead_ms']:g})")
    print(f"confirm_window_mm = {prop['confirm_window_mm']:g}  # mm (now {now['confirm_window_mm']:g})")
    if not a.apply:
        print("not applied: run again with --apply to set it on the device (audited)")
        return 0
    values = f"gate_lead_ms={prop['gate_lead_ms']:g};confirm_window_mm={prop['confirm_window_mm']:g}"
    return config_main(["set", "--config", a.config, *(["--control", a.control] if a.control else []),
                        *values.split(";"), "--user", a.user, "--reason", a.reason])


def main(argv: list[str]) -> int:
    """`serialine tune --config line.toml [--units N] [--plot FILE.png] [--once]`;
    `serialine tune calibrate ...` (calibrate_main)."""
    if argv[:1] == ["calibrate"]:
        return calibrate_main(argv[1:])
    from . import linefile
    from .control import ControlError
    from .ledgerfile import LedgerFileError, open_ledger
    ap = argparse.ArgumentParser(prog="serialine tune", description="live view of a running line for tuning;"
                                 " serialine tune calibrate --help: measure the gate's lead and the confirm delay")
    ap.add_argument("--config", required=True, help="the line file ([control] address, [ledger] path)")
    ap.add_argument("--control", metavar="ADDR", help="the agent's control address (default: the line file's)")
    ap.add_argument("--units", type=int, default=50, help="how many of the last units (default 50)")
    ap.add_argument("--plot", metavar="FILE.png", help="write the plot of the same and exit")
    ap.add_argument("--once", action="store_true", help="print one frame and exit")
    ap.add_argument("--every", type=float, default=1.0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    try:
        cfg, client = _client(a.config, a.control)
        conn = open_ledger(cfg.ledger, schema=False)
    except (ControlError, LedgerFileError, ValueError) as exc:
        print(f"serialine tune: {exc}", file=sys.stderr)
        return 1
    conn.execute("PRAGMA query_only = ON")

    def frame():
        return client.status(), figures(conn, cfg, a.units)

    try:
        if a.plot or a.once:
            status, fig = frame()
            if a.plot:
                plot_figures(fig, status, a.plot)
                print(f"plot: {a.plot}")
            if a.once:
                from rich.console import Console
                Console(width=120).print(render(status, fig))
            return 0
        from rich.live import Live
        with Live(render(*frame()), refresh_per_second=4) as live:
            while True:
                time.sleep(a.every)
                live.update(render(*frame()))
    except ControlError as exc:
        print(f"serialine tune: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        conn.close()
