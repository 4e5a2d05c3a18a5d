"""The challenge test (`serialine challenge`, docs/commissioning.md): test packs of each failure kind
and good packs through the running line; each bad pack must get the host's FAIL for its kind and be
rejected AND confirmed in the bin, each good pack must pass. The result is an audit record
(`line.challenge`) with the line's settings, and `serialine batch start` refuses a batch when the
line file's `[policy] challenge` asks for a passed challenge that is not there.

How a run goes (in the service loop, `Run.step`): with no units in flight the service sends the
device TEST_UNIT for the bad packs, so the next N detected units are test units (the device rejects
them whatever the host says: a prepared bad pack never reaches the market even when the host misses
it); the packs after them are ordinary units. The operator (on the simulator: the rig, using
`sim_read`) feeds the packs in the plan's order. Every pack's unit, verdict, outcome and gate timing
is then read from the ledger."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import random
import time

from serialine.protocol.schema import Reason

from . import devevents

log = logging.getLogger("serialine.service")

# kind -> the host FAIL reasons that prove it was caught (None: a good pack, it must pass)
KINDS: dict[str, frozenset[str] | None] = {
    "no_code": frozenset({"NO_READ"}),
    "unreadable": frozenset({"NO_READ", "NOT_GS1"}),
    "wrong_code": frozenset({"CODE_MISMATCH", "UNKNOWN_SERIAL"}),
    "wrong_gtin": frozenset({"WRONG_BATCH"}),
    "duplicate": frozenset({"DUPLICATE"}),
    "low_grade": frozenset({"LOW_GRADE"}),
    "good": None,
}
BAD = tuple(k for k, v in KINDS.items() if v is not None)
PLAN = (*BAD, "good", "good")  # wrong_code before duplicate: the duplicate repeats a code already read
MAX_PACKS = 32
TIMEOUT_S = 120.0  # from arming to the last pack's outcome
ACTION = "line.challenge"
CONFIGURE = "line.configure"
WAIVED = "challenge.waived"
REFUSED = "challenge.refused"  # a line.start refused for want of a passed challenge
POLICIES = ("none", "on_change", "per_batch", "per_shift")


class ChallengeError(ValueError):
    """One line: a plan or a policy that cannot be."""


def parse_plan(text: str | None) -> tuple[str, ...]:
    """"no_code,low_grade,good" → kinds; the bad packs first (they are the device's next test units)."""
    if not text:
        return PLAN
    kinds = tuple(k.strip() for k in str(text).split(",") if k.strip())
    for k in kinds:
        if k not in KINDS:
            raise ChallengeError(f"unknown pack kind {k!r}; there are {', '.join(KINDS)}")
    if not kinds or len(kinds) > MAX_PACKS:
        raise ChallengeError(f"a challenge plan has 1..{MAX_PACKS} packs")
    n_bad = sum(k != "good" for k in kinds)
    if any(k == "good" for k in kinds[:n_bad]):
        raise ChallengeError("the bad packs come first in a plan (they are the device's next test units), then the good")
    return kinds


# --- the simulator's packs -------------------------------------------------------------------------

def sim_read(kind: str, printed: str | None, *, earlier: str | None, other: str | None
             ) -> tuple[str | None, str]:
    """What the reader reports for a simulated pack of this kind: (code as read or None, grade).
    `printed` is the code the coder printed on it, `earlier` a code already read on another pack,
    `other` a code of this batch printed on another pack (not read yet)."""
    if kind in ("no_code", "unreadable") or printed is None:
        return None, ""
    if kind == "wrong_code":
        return (other or _other_serial(printed)), "A"
    if kind == "wrong_gtin":
        return _other_gtin(printed), "A"
    if kind == "duplicate":
        return (earlier or printed), "A"
    if kind == "low_grade":
        return printed, "D"
    return printed, "A"


def _other_gtin(code: str) -> str:
    from . import gs1
    if code.startswith("01") and len(code) >= 16:
        body = str((int(code[2:15]) + 1) % 10**13).zfill(13)
        return "01" + body + str(gs1.check_digit(body)) + code[16:]
    return code


def _other_serial(code: str) -> str:
    i = code.find("21")
    return code[: i + 2] + "X" + code[i + 3:] if i >= 0 else code


# --- line settings and the audit log ------------------------------------------------------------

def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_sha256(path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def settings(cfg, fields: dict | None = None) -> dict:
    """The line's settings as a challenge and a configuration record carry them: the device's
    fields (without the config_id tag), the line file's hash, what decides a verdict, the policy."""
    from . import linefile
    f = dict(fields if fields is not None else linefile.device_fields(cfg))
    f.pop("config_id", None)
    cam = cfg.camera
    judge = {"min_grade": str(getattr(cam, "min_grade", "")), "camera": cam.driver, "coder": cfg.coder.driver}
    return {"device_fields": f, "line_file_sha256": file_sha256(cfg.path), "judge": judge,
            "settings_sha256": _sha({"device_fields": f, "judge": judge}), "policy": policy(cfg)}


def policy(cfg) -> dict:
    p = getattr(cfg, "policy", None)
    return {"challenge": getattr(p, "challenge", "none") or "none",
            "shift_hours": float(getattr(p, "shift_hours", 8.0) or 8.0)}


def line_id(cfg) -> str:
    return getattr(getattr(cfg, "identity", None), "line_id", "") or ""


def record_configuration(conn, cfg, fields: dict, *, user: str, device_id, boot_id, config_id, how: str) -> bool:
    """A `line.configure` record when the settings applied differ from the line's last one (a
    configuration change), inside the caller's transaction; True if one was written."""
    s = settings(cfg, fields)
    last = _last(conn, CONFIGURE, line_id(cfg))
    if last is not None and last[2].get("settings_sha256") == s["settings_sha256"] \
            and last[2].get("line_file_sha256") == s["line_file_sha256"] and last[2].get("policy") == s["policy"]:
        return False
    from . import audit
    audit.append(conn, user, CONFIGURE, {"line_id": line_id(cfg), "device_id": device_id, "boot_id": boot_id,
                                         "config_id": config_id, "how": how, **s})
    return True


def _records(conn, action: str, line: str):
    for seq, at, user, text in conn.execute("SELECT seq, at, user, detail FROM audit WHERE action=? ORDER BY seq",
                                            (action,)):
        try:
            d = json.loads(text)
        except ValueError:
            continue
        if d.get("line_id") == line:
            yield seq, at, d, user


def _last(conn, action: str, line: str):
    out = None
    for seq, at, d, _ in _records(conn, action, line):
        out = (seq, at, d)
    return out


def lines_with_policy(conn) -> dict[str, dict]:
    """line_id -> the policy of its latest configuration record, for lines that ask for a challenge."""
    latest: dict[str, dict] = {}
    for _seq, _at, text in conn.execute("SELECT seq, at, detail FROM audit WHERE action=? ORDER BY seq", (CONFIGURE,)):
        try:
            d = json.loads(text)
        except ValueError:
            continue
        latest[d.get("line_id", "")] = d.get("policy") or {}
    return {k: v for k, v in latest.items() if v.get("challenge", "none") != "none"}


def missing(conn, line: str, now: _dt.datetime | None = None) -> str | None:
    """None if the line may start a batch under its policy; else what is missing (one line)."""
    configs = list(_records(conn, CONFIGURE, line))
    if not configs:
        return None
    seq, at, d, _ = configs[-1]
    pol = d.get("policy") or {}
    kind = pol.get("challenge", "none")
    if kind == "none":
        return None
    change_seq, change_at = _change_point(configs)
    passed = [(s, a, c.get("settings_sha256")) for s, a, c, _ in _records(conn, ACTION, line)
              if c.get("result") == "passed"]
    after = [(s, a) for s, a, h in passed if s > change_seq and h == d.get("settings_sha256")]
    if not after:
        last = f"; the last passed one was at {passed[-1][1][:19]}Z" if passed else ""
        return (f"line {line} has no passed challenge since its configuration changed at {change_at[:19]}Z"
                f" ([policy] challenge = \"{kind}\"){last}: run serialine challenge --config LINE.toml")
    if kind == "per_batch":
        (start_seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit WHERE action='batch.start'").fetchone()
        if after[-1][0] < start_seq:
            return (f"line {line} has no passed challenge since the last batch start ([policy] challenge ="
                    f" \"per_batch\"): run serialine challenge --config LINE.toml")
    if kind == "per_shift":
        hours = float(pol.get("shift_hours", 8.0))
        now = now or _dt.datetime.now(_dt.timezone.utc)
        at_last = _dt.datetime.fromisoformat(after[-1][1])
        if now - at_last > _dt.timedelta(hours=hours):
            return (f"line {line} has no passed challenge in the last {hours:g} h ([policy] challenge = \"per_shift\","
                    f" last at {after[-1][1][:19]}Z): run serialine challenge --config LINE.toml")
    return None


def _change_point(configs) -> tuple[int, str]:
    """The record where the line's settings (or line file) last changed: every record here is one."""
    seq, at, _, _ = configs[-1]
    return seq, at


def check_batch_start(conn, batch_id: str, line: str | None = None, *, waive: str | None = None,
                      user: str | None = None) -> None:
    """`serialine batch start`: raise ChallengeError (one line) when a line's policy refuses it. With
    `waive` (a reason) the missing challenge is a deviation: a `challenge.waived` record, then go on."""
    lines = lines_with_policy(conn)
    if line is not None:
        names = [line]
    elif len(lines) > 1:
        raise ChallengeError(f"batch {batch_id}: lines {', '.join(sorted(lines))} ask for a challenge: say which"
                             " runs it (serialine batch start B --line LINE)")
    else:
        names = list(lines)
    for name in names:
        why = missing(conn, name)
        if why and waive is None:
            raise ChallengeError(f"batch {batch_id} not started: {why}")
        if why:
            from . import audit, masterdata
            from .db import transaction
            if masterdata.get_batch(conn, batch_id).state != "created":
                return  # start_batch refuses it: no waiver for a start that does not happen
            with transaction(conn):
                audit.append(conn, user or "?", WAIVED, {"line_id": name, "batch_id": batch_id, "missing": why,
                                                         "reason": waive})


# --- one run, in the service loop --------------------------------------------------------------------

class Run:
    """A challenge being run by the service (`step` each loop turn); `view()` goes in the status."""

    def __init__(self, service, req, plan: tuple[str, ...], timeout_s: float = TIMEOUT_S, purpose: str = "challenge"):
        self.svc, self.user, self.reason, self.plan = service, req.user, req.reason, plan
        self.purpose = purpose  # "calibrate" (serialine tune calibrate): test packs timed, no challenge record
        self.token = random.SystemRandom().randrange(1, 2**32)
        self.n_bad = sum(k != "good" for k in plan)
        self.state = "armed"
        self.started_at = _now()
        self.deadline = time.monotonic() + timeout_s
        agent = service.agent
        self.device_id, self.boot_id = agent.device_id, agent.boot_id
        self.batch_id = agent.ledger.batch.batch_id
        st = service.link.last_status or {}
        (top,) = service.conn.execute("SELECT COALESCE(MAX(unit_seq) + 1, 0) FROM unit WHERE device_id=? AND boot_id=?",
                                      (self.device_id, self.boot_id)).fetchone()
        self.first = max(int(top), int(st.get("units_detected", 0)))
        self.packs: list[dict] = []
        self.problems: list[str] = []
        self.record_hash: str | None = None
        self._look_at = 0.0
        if self.n_bad:
            service.link.send("TEST_UNIT", {"count": self.n_bad, "token": self.token})

    def view(self) -> dict:
        return {"state": self.state, "token": self.token, "purpose": self.purpose, "plan": list(self.plan), "first_unit": self.first,
                "user": self.user, "started_at": self.started_at, "packs": self.packs, "problems": self.problems,
                "record": self.record_hash, "seen": len(self.packs)}

    def step(self) -> None:
        if self.state != "armed":
            return
        now = time.monotonic()
        if now < self._look_at:
            return
        self._look_at = now + 0.2
        a = self.svc.agent
        if a is None or a.boot_id != self.boot_id:
            return self._finish(f"the device rebooted (boot {self.boot_id} → {a.boot_id if a else '?'}) during the challenge")
        rows = self._units()
        self.packs = [self._pack(i, r) for i, r in enumerate(rows)]
        done = len(rows) == len(self.plan) and all(r["outcome"] is not None for r in rows)
        if done:
            return self._finish(None)
        if now > self.deadline:
            return self._finish("timed out")

    def _units(self) -> list[dict]:
        c = self.svc.conn
        rows = c.execute("SELECT unit_seq, test, verdict, verdict_reason, outcome, reason, serial, read_serial, grade"
                         " FROM unit WHERE device_id=? AND boot_id=? AND unit_seq>=? ORDER BY unit_seq LIMIT ?",
                         (self.device_id, self.boot_id, self.first, len(self.plan))).fetchall()
        keys = ("unit_seq", "test", "verdict", "verdict_reason", "outcome", "reason", "serial", "read_serial", "grade")
        out = [dict(zip(keys, r)) for r in rows]
        for u in out:
            u.update(self._events(u["unit_seq"]))
        return out

    def _events(self, unit_seq: int) -> dict:
        got = {}
        for e in devevents.events(self.svc.conn, device_id=self.device_id, boot_id=self.boot_id,
                                  names=("UNIT_DETECTED", "UNIT_OUTCOME"), unit_seq=unit_seq):
            f = e.fields
            if e.msg_name == "UNIT_DETECTED":
                got["detected_pos"], got["detected_t_us"] = f.get("pos"), f.get("t_us")
            else:
                got["gate_error"] = f.get("gate_error")
                got["outcome_pos"], got["outcome_t_us"] = f.get("pos"), f.get("t_us")
        return got

    def _pack(self, i: int, u: dict) -> dict:
        kind = self.plan[i]
        cpm = self.svc.cfg.geometry.counts_per_mm
        ge = u.get("gate_error")
        p = {"pack": i + 1, "kind": kind, "unit_seq": u["unit_seq"], "test": bool(u["test"]),
             "verdict": u["verdict"], "verdict_reason": u["verdict_reason"], "outcome": u["outcome"],
             "reason": u["reason"], "grade": u["grade"],
             "gate_error_mm": None if ge is None or u["outcome"] == "PASSED" else round(ge / cpm, 2)}  # 0: not fired
        if self.purpose == "calibrate":  # the device's timing of the pack (tune.calibration reads it)
            p.update({k: u.get(k) for k in ("detected_pos", "detected_t_us", "outcome_pos", "outcome_t_us")})
            p["problem"] = None if u["outcome"] in (None, "REJECTED_CONFIRMED") else \
                f"{u['outcome']} ({u['reason']}): not confirmed in the bin"
        else:
            p["problem"] = judge(kind, p) if u["outcome"] is not None else None
        p["ok"] = u["outcome"] is not None and p["problem"] is None
        return p

    def _finish(self, why: str | None) -> None:
        from .db import transaction
        for i in range(len(self.packs), len(self.plan)):
            self.packs.append({"pack": i + 1, "kind": self.plan[i], "unit_seq": None, "ok": False,
                               "problem": "never came past the photo-eye"})
        for p in self.packs:
            if p.get("problem") is None and not p.get("ok"):
                p["problem"] = "no outcome"
        self.problems = [f"pack {p['pack']} {p['kind']}"
                         + (f" (unit {p['unit_seq']})" if p.get("unit_seq") is not None else "") + f": {p['problem']}"
                         for p in self.packs if not p["ok"]]
        if why:
            self.problems.insert(0, why)
        state = "passed" if not self.problems else "failed"
        if self.purpose == "calibrate":  # a measurement: what it proposes is audited when applied (device.config)
            self.state = state
            log.info("calibration run %d %s by %s (%s)", self.token, state, self.user, self.reason)
            return
        with transaction(self.svc.conn):  # busy: raised, the service logs it and the next step writes it
            self.record_hash = record(self.svc.conn, self.svc.cfg, self.svc._config_fields or None, user=self.user,
                                      reason=self.reason, result=state, packs=self.packs, problems=self.problems,
                                      token=self.token, plan=list(self.plan), started_at=self.started_at,
                                      device_id=self.device_id, boot_id=self.boot_id, batch_id=self.batch_id,
                                      first_unit=self.first)
        self.state = state
        log.info("challenge %d %s: %s", self.token, self.state, "; ".join(self.problems) or "every pack handled right")


def record(conn, cfg, fields: dict | None, *, user: str, reason: str, result: str, packs: list, problems: list,
           **more) -> str:
    """The `line.challenge` audit record (inside the caller's transaction): who, when (the record's
    time), the line's settings, every pack's result; returns its hash."""
    from . import audit
    g = cfg.geometry
    detail = {"line_id": line_id(cfg), "result": result, "packs": packs, "problems": problems, **more,
              "finished_at": _now(),
              "timing": {"gate_window_mm": g.gate_window_mm, "gate_dwell_mm": g.gate_dwell_mm,
                         "counts_per_mm": g.counts_per_mm},
              **settings(cfg, fields), "reason": reason}
    return audit.append(conn, user, ACTION, detail)


def record_content(conn, record_id: str) -> dict:
    """The `line.challenge` record whose token is `record_id`, for a Part 11 signature over it
    (host/signatures.py RECORDS["challenge"] = this module)."""
    for _seq, _at, text in conn.execute("SELECT seq, at, detail FROM audit WHERE action=? ORDER BY seq", (ACTION,)):
        d = json.loads(text)
        if str(d.get("token")) == str(record_id):
            return d
    raise ChallengeError(f"no challenge {record_id} in this ledger")


def record_zone(conn, record_id: str) -> str | None:
    return None  # shown in UTC: a challenge belongs to a line, not to a site's batch


def judge(kind: str, p: dict) -> str | None:
    """None when the pack was handled right; else what went wrong (one phrase)."""
    want = KINDS[kind]
    if want is None:
        if p["test"]:
            return "a good pack became a test unit (the device took more test units than the plan's bad packs)"
        if p["verdict"] != "PASS":
            return f"host verdict {p['verdict']} {p['verdict_reason'] or ''}, expected PASS".rstrip()
        if p["outcome"] != "PASSED":
            return f"{p['outcome']} ({p['reason']}), expected PASSED"
        return None
    if not p["test"]:
        return "not a test unit (TEST_UNIT came too late: feed the packs only once the challenge is armed)"
    if p["verdict"] != "FAIL" or p["verdict_reason"] not in want:
        got = f"{p['verdict'] or 'no verdict'} {p['verdict_reason'] or ''}".strip()
        return f"host verdict {got}, expected FAIL {'/'.join(sorted(want)).lower()}"
    if p["outcome"] != "REJECTED_CONFIRMED":
        return f"{p['outcome']} ({p['reason']}): not confirmed in the bin"
    return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the service's side (host/service.py calls these) -------------------------------------------

def execute(service, req):
    """challenge.run on the loop thread → reply dict, or the refusal (str)."""
    if service.agent is None:
        return "no batch is selected: the challenge's packs are units of the running batch (POST /batch/select)"
    if not service.configured or service.agent.boot_id is None:
        return "challenge refused: the device is not configured yet"
    run = getattr(service, "challenge", None)
    if run is not None and run.state == "armed":
        return f"a challenge is already running (token {run.token}, by {run.user})"
    purpose = req.args.get("purpose") or "challenge"
    if purpose not in ("challenge", "calibrate"):
        return f"purpose {purpose!r}: there are challenge, calibrate"
    try:
        plan = parse_plan(req.args.get("plan"))
        timeout_s = float(req.args.get("timeout_s") or TIMEOUT_S)
    except (ChallengeError, ValueError) as exc:
        return str(exc)
    n_bad = sum(k != "good" for k in plan)
    limit = service.cfg.geometry.reject_streak_limit
    if limit and n_bad >= limit:
        return (f"challenge refused: [line] reject_streak_limit = {limit} would stop the line at the {limit}th of the plan's"
                f" {n_bad} bad packs (rejects in a row); raise it or test in smaller plans (--plan)")
    st = service.link.last_status or {}
    if st.get("in_flight"):
        return (f"challenge refused: {st['in_flight']} unit(s) in flight; stop feeding and let the line clear"
                " (the test units are the next packs detected)")
    if service.agent.line_stop:
        return f"challenge refused: the line stays stopped ({service.agent.line_stop})"
    service.challenge = Run(service, req, plan, timeout_s, purpose)
    log.info("challenge %d armed by %s (%s): feed %d pack(s) in this order: %s", service.challenge.token,
                     req.user, req.reason, len(plan), ", ".join(plan))
    return {"token": service.challenge.token, "plan": list(plan), "first_unit": service.challenge.first}


def start_refusal(service, req) -> str | None:
    """Every command that sets the line running: line.start and line.clear on the control interface
    (PackML Start and Clear are these; the device's CLEAR_ALARM releases a latched stop into
    running) and the service's own start at a new boot ([agent] start_on_boot, a line.start by
    serialine-agent). Refused and audited (`challenge.refused`) while the line's [policy] wants a
    passed challenge that is not there — `missing`, the rule `serialine batch start` applies. Not
    while a challenge is armed: its packs need the line running. None: the command may go on."""
    run = getattr(service, "challenge", None)
    if run is not None and run.state == "armed":
        return None
    why = missing(service.conn, line_id(service.cfg))
    if why is None:
        return None
    from . import audit
    from .db import transaction
    with transaction(service.conn):
        audit.append(service.conn, req.user, REFUSED, service._audit_detail(req, command=req.command, missing=why))
    return f"{req.command} refused: {why}"


def result_lines(view: dict) -> list[str]:
    """One line per pack (the CLI's report)."""
    out = []
    for p in view.get("packs", []):
        mark = "ok  " if p.get("ok") else "FAIL"
        unit = f"unit {p['unit_seq']}" if p.get("unit_seq") is not None else "no unit"
        got = (f"{p.get('verdict') or '-'} {p.get('verdict_reason') or ''}".strip() + f", {p.get('outcome') or '-'}"
               + (f", gate error {p['gate_error_mm']:+.1f} mm" if p.get("gate_error_mm") is not None
                  and p.get("outcome", "").startswith("REJECTED") else ""))
        out.append(f"{mark} pack {p['pack']:>2} {p['kind']:<10} {unit:<9} {got}"
                   + (f"  <- {p['problem']}" if p.get("problem") else ""))
    return out


def plot(view: dict, timing: dict, path: str) -> None:
    """The PNG timing plot: for each pack, where it was against the gate while the gate was open
    (from the gate error at opening to the dwell's end), the tolerance band ± gate_window_mm."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    w, dwell = float(timing["gate_window_mm"]), float(timing["gate_dwell_mm"])
    packs = view.get("packs", [])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(packs) + 2), 4.2), dpi=110)
    ax.axhspan(-w, w, color="tab:green", alpha=0.15, label=f"gate window ±{w:g} mm")
    ax.axhline(0, color="tab:green", lw=0.8)
    for i, p in enumerate(packs):
        x = i + 1
        ge = p.get("gate_error_mm")
        rejected = str(p.get("outcome") or "").startswith("REJECTED")
        colour = "tab:blue" if p.get("ok") else "tab:red"
        if rejected and ge is not None:
            ax.plot([x, x], [ge, ge + dwell], color=colour, lw=6, alpha=0.6, solid_capstyle="butt")
            ax.plot([x], [ge], "o", color=colour)
        else:
            ax.plot([x], [0], "x" if p.get("ok") else "s", color=colour, ms=8)
    ax.set_xticks(range(1, len(packs) + 1))
    ax.set_xticklabels([f"{p['pack']}\n{p['kind']}" for p in packs], fontsize=7)
    ax.set_ylabel("pack centre − gate position while the gate is open (mm)")
    state = view.get("state", "?")
    ax.set_title(f"challenge {view.get('token', '')}: {state} — bars: gate open window (opening ●, dwell {dwell:g} mm);"
                 " × passed", fontsize=8)
    ax.legend(loc="upper right", fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# Reason names a verdict can carry (for docs and checks)
REASONS = {r.name for r in Reason}
