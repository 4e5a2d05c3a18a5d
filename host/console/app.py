"""The operator and QA console (docs/console.md): Starlette + Jinja2 pages rendered on the server,
htmx (shipped in static/) for the operator screen's live part. It reads the ledger and talks to
the agent only through its control interface (host/control.py), as `serialine line` does; who
may do what is host/users.py's `may`, signatures are host/signatures.py's through host/release.py.

Every page needs a login. Every POST carries the session's CSRF token. Nothing is loaded from
anywhere but this server (Content-Security-Policy says so to the browser)."""

from __future__ import annotations

import collections
import datetime as _dt
import functools
import logging
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import audit, devevents, users
from ..db import transaction
from . import alarms, charts, record
from .sessions import COOKIE, Session, Sessions, same

log = logging.getLogger("serialine.console")

HERE = Path(__file__).resolve().parent
MAX_FORM = 16 * 1024
AUDIT_ROWS = 500  # the newest shown; the filters narrow it
SAMPLES = 1200  # latency samples kept for the trend (10 min at the operator screen's 0.5 s)
COMMANDS = {"start": "line.start", "stop": "line.stop", "clear": "line.clear"}
MEANINGS = {"reviewed": "batch.review", "released": "batch.release"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
       " form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class Refused(Exception):
    """A request the console will not do: one line for the person."""


def page(*, touch: bool = True):
    """A page behind the login: the handler gets (request, session, user); no login, the login page.
    `touch=False` for a poll (not a person's activity: the session still times out)."""
    def wrap(fn):
        @functools.wraps(fn)
        def handler(self: "Console", request: Request) -> Response:
            got = self.login_required(request, touch=touch)
            return got if isinstance(got, Response) else fn(self, request, *got)
        return handler
    return wrap


def form_action(refused):
    """A POST behind the login and the session's CSRF token: the handler gets (request, session, user,
    fields) and runs in the thread pool; a Refused from the form or the handler is answered by
    `refused(self, request, session, user, text)`, its one line for the person."""
    def wrap(fn):
        @functools.wraps(fn)
        async def handler(self: "Console", request: Request) -> Response:
            got = await run_in_threadpool(self.login_required, request)
            if isinstance(got, Response):
                return got
            s, u = got
            try:
                fields = await self.form(request, s)
                return await run_in_threadpool(fn, self, request, s, u, fields)
            except Refused as exc:
                return await run_in_threadpool(refused, self, request, s, u, str(exc))
        return handler
    return wrap


class Console:
    def __init__(self, db_path: str, control: str | None = None, *, secure_cookie: bool = False,
                 gate_window_counts: float | None = None) -> None:
        from ..ledgerfile import open_ledger
        self.db_path = str(db_path)
        self.gate_window_counts = gate_window_counts  # from a line file, for the gate chart
        self.control = control
        self.secure_cookie = secure_cookie
        self._local = threading.local()
        conn = open_ledger(self.db_path)  # one line if it is not a ledger
        self.sessions = Sessions(60 * users.setting(conn, "session.timeout_minutes"))
        conn.close()
        self.samples: collections.deque = collections.deque(maxlen=SAMPLES)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.globals.update(not_sections=record.NOT_SECTIONS, label=record.label, scalar=record.scalar, rows_of=record.rows_of, explain=alarms.explain)
        env.filters["when"] = _when

    # --- plumbing ---------------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's ledger connection (Starlette runs sync work in a thread pool)."""
        c = getattr(self._local, "conn", None)
        if c is None:  # the schema was applied once at start: a thread's connection never waits to apply it
            from ..ledgerfile import open_ledger
            c = open_ledger(self.db_path, schema=False)
            c.execute("PRAGMA foreign_keys=ON")
            self._local.conn = c
        return c

    def client(self, timeout: float = 7.0):
        """The agent's control interface: a command waits for the agent's answer (≤ 5 s there)."""
        from ..control import Client
        if not self.control:
            raise Refused("this console was started without --control: it cannot reach an agent")
        return Client(self.control, timeout=timeout)

    def session(self, request: Request, *, touch: bool = True) -> Session | None:
        try:  # the site setting as it is now (an admin may change it while the console runs)
            self.sessions.timeout_s = 60 * users.setting(self.conn(), "session.timeout_minutes")
        except sqlite3.Error:
            pass
        s, timed_out = self.sessions.get(request.cookies.get(COOKIE), touch=touch)
        if timed_out:
            self._ended(timed_out, "timeout")
        for name in self.sessions.sweep():
            self._ended(name, "timeout")
        return s

    def _ended(self, name: str, why: str) -> None:
        try:
            with transaction(self.conn()):
                audit.append(self.conn(), name, "user.logout", {"name": name, "why": why, "for": "console"})
        except sqlite3.Error as exc:
            log.warning("console: logout of %s not audited: %s", name, exc)

    def user(self, s: Session | None) -> users.User | None:
        """The session's user as the ledger has it now (a disabled user is logged out)."""
        if s is None or s.user is None:
            return None
        u = users.get(self.conn(), s.user)
        return u if u is not None and u.enabled else None

    def render(self, request: Request, name: str, ctx: dict, *, status: int = 200,
               session: Session | None = None) -> Response:
        s = session if session is not None else self.session(request, touch=False)
        page = {"request": request, "session": s, "me": self.user(s), "nav": name.split(".")[0]}
        page.update(ctx)
        resp = self.templates.TemplateResponse(request, name, page, status_code=status)
        return self._headers(resp)

    def _headers(self, resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def set_cookie(self, resp: Response, s: Session) -> Response:
        resp.set_cookie(COOKIE, s.token, httponly=True, samesite="strict", secure=self.secure_cookie, path="/")
        return resp

    async def form(self, request: Request, s: Session | None) -> dict:
        """The POSTed form, once its CSRF token matches the session's; Refused otherwise."""
        body = await request.body()
        if len(body) > MAX_FORM:
            raise Refused("form too large")
        try:
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50))
        except (UnicodeDecodeError, ValueError):
            raise Refused("the form could not be read") from None
        token = fields.pop("csrf", None) or request.headers.get("X-CSRF-Token")
        if s is None or not same(token, s.csrf):
            raise Refused("the form's security token does not match this session: reload the page and try again")
        return fields

    def login_required(self, request: Request, *, touch: bool = True) -> tuple[Session, users.User] | Response:
        s = self.session(request, touch=touch)
        u = self.user(s)
        if s is None or u is None:
            nxt = quote(request.url.path)
            if request.headers.get("HX-Request"):  # a poll: back to the page it polls for, after the login
                from urllib.parse import urlsplit
                nxt = quote(_safe_next(urlsplit(request.headers.get("HX-Current-URL", "")).path))
                return Response("", headers={"HX-Redirect": f"/login?next={nxt}"}, status_code=401)
            return RedirectResponse(f"/login?next={nxt}", status_code=303)
        return s, u

    # --- login --------------------------------------------------------------------------------
    def login_page(self, request: Request) -> Response:
        s = self.session(request)
        message = ""
        if s is None:
            s = self.sessions.new()
        elif s.message:
            message, s.message = s.message, ""
        ctx = {"next": _safe_next(request.query_params.get("next")), "error": "", "message": message,
               "no_users": not users.present(self.conn())}
        return self.set_cookie(self.render(request, "login.html", ctx, session=s), s)

    async def login(self, request: Request) -> Response:
        s = self.session(request)
        try:
            fields = await self.form(request, s)
        except Refused as exc:
            s = self.sessions.new()
            ctx = {"next": "/", "error": str(exc), "message": "", "no_users": False}
            return self.set_cookie(self.render(request, "login.html", ctx, status=400, session=s), s)
        assert s is not None
        name, password = fields.get("user", "").strip(), fields.get("password", "")
        nxt = _safe_next(fields.get("next"))
        try:
            u = await run_in_threadpool(lambda: users.authenticate(self.conn(), name, password, purpose="console login"))
        except users.AuthError as exc:
            ctx = {"next": nxt, "error": str(exc), "message": "", "no_users": not users.present(self.conn())}
            return self.render(request, "login.html", ctx, status=401, session=s)
        self.sessions.end(s.token)
        fresh = self.sessions.new(u.name)  # a new token at login: a token seen before login is worthless
        log.info("console: %s logged in", u.name)
        return self.set_cookie(RedirectResponse(nxt, status_code=303), fresh)

    async def logout(self, request: Request) -> Response:
        s = self.session(request)
        try:
            await self.form(request, s)
        except Refused:
            return RedirectResponse("/login", status_code=303)
        assert s is not None
        self.sessions.end(s.token)
        if s.user:
            self._ended(s.user, "logout")
        fresh = self.sessions.new(message="logged out")
        return self.set_cookie(RedirectResponse("/login", status_code=303), fresh)

    # --- operator screen ------------------------------------------------------------------------
    def status(self) -> tuple[dict | None, str]:
        if not self.control:
            return None, "no agent: this console was started without --control"
        from ..control import ControlError
        try:
            st = self.client(timeout=2.0).status()  # the status is a snapshot: a slow one is stale
        except ControlError as exc:
            return None, str(exc)
        lat = st.get("verdict_latency_ms") or {}
        if lat.get("n"):
            self.samples.append((time.time(), float(lat.get("p50", 0)), float(lat.get("p99", 0)),
                                 float(st.get("budget_ms") or 0)))
        return st, ""

    def live_context(self) -> dict:
        st, error = self.status()
        batch = (st or {}).get("batch") or self.current_batch()
        c = self.conn()
        counts = dict((st or {}).get("counts") or {})
        reasons: list = []
        ppm = None
        if batch:
            if not counts:
                counts = dict(c.execute("SELECT COALESCE(outcome, 'in_flight'), COUNT(*) FROM unit_row WHERE batch_id=?"
                                        " GROUP BY outcome", (batch,)).fetchall())  # unit_batch's order: no sort
                counts["detected"] = sum(counts.values())
            reasons = c.execute("SELECT COALESCE(reason, 'unknown'), COUNT(*) FROM unit_row WHERE batch_id=? AND outcome"
                                " IN ('REJECTED_CONFIRMED', 'REJECTED_UNCONFIRMED', 'PURGED') GROUP BY 1"
                                " ORDER BY 2 DESC", (batch,)).fetchall()
            dev = (st or {}).get("device") or {}
            if dev.get("device_id") and dev.get("boot_id") is not None:
                ppm = _packs_per_minute(c, dev["device_id"], dev["boot_id"])
        rejected = sum(n for k, n in counts.items() if k.startswith("REJECTED") or k == "PURGED")
        shown = []
        for a in reversed((st or {}).get("alarms") or []):
            meaning, todo = alarms.explain(a.get("alarm"))
            shown.append({**a, "meaning": meaning, "todo": todo})
        return {"st": st, "error": error, "batch": batch, "counts": counts, "good": counts.get("PASSED", 0),
                "rejected": rejected, "reasons": reasons, "ppm": ppm, "alarms": shown[:10],
                "now": _dt.datetime.now(_dt.timezone.utc).strftime("%H:%M:%S")}

    def current_batch(self) -> str | None:
        row = self.conn().execute("SELECT batch_id FROM batch WHERE state='running' ORDER BY created_at DESC"
                                  " LIMIT 1").fetchone()
        return row[0] if row else None

    @page()
    def operator(self, request: Request, s: Session, u: users.User) -> Response:
        ctx = self.live_context()
        ctx["may"] = {k: users.may(u, v) for k, v in COMMANDS.items()}
        return self.render(request, "operator.html", ctx, session=s)

    @page(touch=False)
    def live(self, request: Request, s: Session, u: users.User) -> Response:
        return self.render(request, "_live.html", self.live_context(), session=s)

    def _message(self, request: Request, s: Session, u: users.User, text: str, ok: bool = False) -> Response:
        # 200 either way: htmx swaps in only a 2xx answer, and the refusal is what the operator must read
        return self.render(request, "_message.html", {"ok": ok, "text": text}, session=s)

    @form_action(_message)
    def command(self, request: Request, s: Session, u: users.User, fields: dict) -> Response:
        which = fields.get("command", "")
        action = self._allowed(u, COMMANDS, which, f"unknown command {which[:20]!r}")
        reason = " ".join(fields.get("reason", "").split())
        try:
            audit.check_reason(reason)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        from ..control import ControlError
        password = fields.get("password") or None  # an agent on a ledger with users wants it (host/control.py)
        try:
            reply = self.client().command(action, u.name, reason, password=password)
        except ControlError as exc:
            if getattr(exc, "need", None) == "password":
                raise Refused(f"the agent wants your password for {which}: enter it and press {which} again") from None
            raise Refused(str(exc)) from None
        held = " (held until the agent's resume is done)" if reply.get("held") else ""
        return self._message(request, s, u, f"{which} sent by {u.name}{held}", ok=True)

    # --- batch record ---------------------------------------------------------------------------
    @page()
    def batches(self, request: Request, s: Session, u: users.User) -> Response:
        rows = self.conn().execute("SELECT b.batch_id, b.gtin, p.name, b.lot, b.expiry, b.planned, b.state,"
                                   " b.created_at, b.closed_at FROM batch b JOIN product p USING (gtin)"
                                   " ORDER BY b.created_at DESC LIMIT 200").fetchall()
        from .. import release
        stage = {b[0]: release.status(self.conn(), b[0])["stage"] for b in rows}
        return self.render(request, "batches.html", {"rows": rows, "stage": stage}, session=s)

    def batch_record(self, batch_id: str) -> dict:
        from .. import release
        try:
            return release.batch_record(self.conn(), batch_id)
        except (KeyError, LookupError, ValueError) as exc:
            raise Refused(str(exc).strip("'\"")) from None

    @page()
    def batch(self, request: Request, s: Session, u: users.User) -> Response:
        return self._batch_page(request, s, u)

    def _batch_page(self, request, s, u, message: str = "", ok: bool = True, status: int = 200):
        batch_id = request.path_params["batch"]
        try:
            rec = self.batch_record(batch_id)
        except Refused as exc:
            return self.render(request, "error.html", {"text": str(exc)}, status=404, session=s)
        sigs = rec.get("signatures") or []
        may = {m: users.may(u, a) for m, a in MEANINGS.items()}
        return self.render(request, "batch.html", {"batch_id": batch_id, "rec": rec, "sigs": sigs, "may": may,
                                                   "message": message, "ok": ok}, status=status, session=s)

    @page()
    def batch_pdf(self, request: Request, s: Session, u: users.User) -> Response:
        batch_id = request.path_params["batch"]
        try:
            rec = self.batch_record(batch_id)
        except Refused as exc:
            return Response(str(exc), status_code=404, media_type="text/plain")
        from . import pdf
        data = pdf.batch_record(batch_id, rec, generated_by=f"{u.full_name} ({u.name})")
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in batch_id)
        return Response(data, media_type="application/pdf", headers={
            "Content-Disposition": f'inline; filename="batch-record-{safe}.pdf"', "Cache-Control": "no-store"})

    def _sign_refused(self, request: Request, s: Session, u: users.User, text: str) -> Response:
        return self._batch_page(request, s, u, text, ok=False, status=409)

    @form_action(_sign_refused)
    def sign(self, request: Request, s: Session, u: users.User, fields: dict) -> Response:
        batch_id, meaning = request.path_params["batch"], fields.get("meaning", "")
        self._allowed(u, MEANINGS, meaning, f"a batch is signed as reviewed or released, not {meaning[:20]!r}")
        self._sign(u.name, fields.get("password", ""), meaning, batch_id, fields.get("reason", ""))
        log.info("console: batch %s signed %s by %s", batch_id, meaning, u.name)
        return self._batch_page(request, s, u, f"signed as {meaning} by {u.full_name}")

    def _allowed(self, u: users.User, actions: dict, which: str, unknown: str) -> str:
        """The action `which` names in `actions`, once the user may do it (a refusal is audited)."""
        action = actions.get(which)
        if action is None:
            raise Refused(unknown)
        self._may(u, action)
        return action

    def _may(self, u: users.User, action: str) -> None:
        """users.refuse: a refused action is audited (`user.refused`) and said in one line."""
        try:
            users.refuse(self.conn(), u, action)
        except users.AuthError as exc:
            raise Refused(str(exc)) from None

    def _sign(self, name: str, password: str, meaning: str, batch_id: str, reason: str) -> None:
        from .. import release
        fn = release.review if meaning == "reviewed" else release.release
        try:
            fn(self.conn(), batch_id, name, password, **({"reason": reason} if reason.strip() else {}))
        except (users.AuthError, ValueError, LookupError) as exc:  # B4's refusals are one line
            raise Refused(" ".join(str(exc).split())) from None

    # --- audit trail -----------------------------------------------------------------------------
    @page()
    def audit_page(self, request: Request, s: Session, u: users.User) -> Response:
        q = {k: (request.query_params.get(k) or "").strip() for k in ("batch", "user", "kind", "since", "until")}
        error = ""
        rows: list = []
        try:
            rows = audit.records(self.conn(), q["batch"] or None, q["since"] or None, q["user"] or None,
                                 q["kind"] or None)
            if q["until"]:
                until = audit._since(q["until"])
                rows = [r for r in rows if _dt.datetime.fromisoformat(r[1]) <= until]
        except audit.AuditError as exc:
            error = str(exc).replace("--since", "since")
        total = len(rows)
        ok, n, verdict = audit.verify(self.conn())
        return self.render(request, "audit.html", {"q": q, "rows": rows[-AUDIT_ROWS:][::-1], "total": total,
                                                   "error": error, "verify_ok": ok, "verify_n": n,
                                                   "verify": verdict}, session=s)

    # --- trends --------------------------------------------------------------------------------
    @page()
    def trends(self, request: Request, s: Session, u: users.User) -> Response:
        batch = request.query_params.get("batch") or self.current_batch() or self._last_batch()
        all_batches = [r[0] for r in self.conn().execute("SELECT batch_id FROM batch ORDER BY created_at DESC LIMIT 50")]
        return self.render(request, "trends.html", {"batch": batch, "batches": all_batches}, session=s)

    def _last_batch(self) -> str | None:
        row = self.conn().execute("SELECT batch_id FROM batch ORDER BY created_at DESC LIMIT 1").fetchone()
        return row[0] if row else None

    @page(touch=False)
    def chart(self, request: Request, s: Session, u: users.User) -> Response:
        name = request.path_params["name"]
        batch = request.query_params.get("batch") or ""
        if name == "rejects":
            data = charts.rejects(self.conn(), batch)
        elif name == "grades":
            data = charts.grades(self.conn(), batch)
        elif name == "gate":
            data = charts.gate(self.conn(), batch, self.gate_window_counts)
        elif name == "latency":
            data = charts.latency(list(self.samples))
        else:
            return Response("no such chart", status_code=404, media_type="text/plain")
        return Response(data, media_type="image/svg+xml", headers={"Cache-Control": "no-store",
                                                                    "X-Content-Type-Options": "nosniff"})

    def index(self, request: Request) -> Response:
        return RedirectResponse("/operator", status_code=303)


def _packs_per_minute(conn, device_id: str, boot_id: int, window_s: float = 10.0) -> int | None:
    """Packs detected in the last `window_s`, as packs per minute (the newest 2000 events looked at)."""
    since = time.time() - window_s
    (n,) = conn.execute(f"SELECT COUNT(*) FROM (SELECT e.msg AS msg, {devevents.received_sql()} AS t FROM device_event e"
                        " JOIN device_boot_ref r ON r.ref = e.boot_ref WHERE r.device_id=? AND r.boot_id=?"
                        f" ORDER BY e.event_seq DESC LIMIT 2000) WHERE msg={devevents.MSG['UNIT_DETECTED']} AND t >= ?",
                        (device_id, boot_id, since)).fetchone()
    return round(n * 60 / window_s)


def _safe_next(value: str | None) -> str:
    """Only a path on this server (an open redirect elsewhere is refused)."""
    v = (value or "").strip()
    return v if v.startswith("/") and not v.startswith("//") and "\\" not in v else "/operator"


def _when(value, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    """An epoch or an ISO time as UTC text (`fmt`); anything else as it is."""
    if isinstance(value, (int, float)):
        return _dt.datetime.fromtimestamp(value, _dt.timezone.utc).strftime(fmt)
    try:
        t = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value or "")
    return (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)).astimezone(_dt.timezone.utc).strftime(fmt)


def create_app(db_path: str, control: str | None = None, *, secure_cookie: bool = False,
               gate_window_counts: float | None = None) -> Starlette:
    c = Console(db_path, control, secure_cookie=secure_cookie, gate_window_counts=gate_window_counts)
    routes = [
        Route("/", c.index),
        Route("/login", c.login_page, methods=["GET"]),
        Route("/login", c.login, methods=["POST"]),
        Route("/logout", c.logout, methods=["POST"]),
        Route("/operator", c.operator),
        Route("/operator/live", c.live),
        Route("/operator/command", c.command, methods=["POST"]),
        Route("/batches", c.batches),
        Route("/batch/{batch:path}.pdf", c.batch_pdf),
        Route("/batch/{batch:path}/sign", c.sign, methods=["POST"]),
        Route("/batch/{batch:path}", c.batch),
        Route("/audit", c.audit_page),
        Route("/trends", c.trends),
        Route("/trends/{name}.svg", c.chart),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.console = c
    return app
