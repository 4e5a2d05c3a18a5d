"""People in the ledger: who may do what, proved by a password (21 CFR Part 11 §11.300).

A ledger without users keeps the free-text `--user` of before (docs/part11.md, "Turning users on");
once the first user (an admin) is added, every changing command names an enabled user and proves it.
Passwords are kept only as scrypt hashes (memory-hard, a salt per user, the parameters stored with
the hash) and never logged or audited. Every login, failure and change is an audit record written
in the same transaction as its effect; a failed login is committed even though it raises."""

from __future__ import annotations

import base64
import datetime as _dt
import enum
import getpass
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import sys
import time
from dataclasses import dataclass

from . import audit
from .db import transaction


class Role(str, enum.Enum):
    OPERATOR = "operator"
    ENGINEER = "engineer"
    QA = "qa"
    ADMIN = "admin"


_ALL = frozenset(Role)
# THE table of who may do what (the CLI, the console and the control interface ask `may`).
# Stopping a line is a safety action: anyone. An admin manages people and settings, not batches.
PERMISSIONS: dict[str, frozenset[Role]] = {
    "line.start": frozenset({Role.OPERATOR, Role.ENGINEER}),
    "line.stop": _ALL,
    "line.clear": frozenset({Role.OPERATOR, Role.ENGINEER}),
    "batch.select": frozenset({Role.OPERATOR, Role.ENGINEER}),
    "batch.create": frozenset({Role.ENGINEER}),
    "batch.start": frozenset({Role.OPERATOR, Role.ENGINEER}),
    "batch.close": frozenset({Role.ENGINEER, Role.QA}),
    "batch.abort": frozenset({Role.ENGINEER, Role.QA}),
    "batch.reopen": frozenset({Role.QA}),
    "batch.resolve": frozenset({Role.ENGINEER, Role.QA}),
    "batch.review": frozenset({Role.QA}),
    "batch.release": frozenset({Role.QA}),
    "rework": frozenset({Role.ENGINEER, Role.QA}),
    "ship": frozenset({Role.ENGINEER}),
    "masterdata.change": frozenset({Role.ENGINEER}),  # products, sites, serial pools
    "audit.checkpoint": _ALL,
    "users.admin": frozenset({Role.ADMIN}),
    "config.change": frozenset({Role.ENGINEER, Role.ADMIN}),  # site settings, line configuration
    "line.challenge": frozenset({Role.ENGINEER, Role.QA}),  # run the challenge test (host/challenge.py)
    "challenge.waive": frozenset({Role.QA}),  # start a batch without the challenge its policy wants
}

# Site settings: name -> (default, lowest, highest). Changed with `serialine users setting`.
SETTINGS = {
    "login.max_failures": (5, 1, 100),       # wrong passwords in a row before a lockout
    "login.lockout_minutes": (15, 1, 24 * 60),
    "session.timeout_minutes": (15, 1, 12 * 60),  # the console's idle session (B5)
    "password.min_length": (10, 8, 128),
}

# scrypt N=2**14, r=8, p=1: 16 MiB per hash, Percival's figure for interactive logins; stored with
# each hash, so raising them later leaves existing passwords valid (they move up at the next reset).
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2 ** 14, 8, 1, 32


class AuthError(ValueError):
    """A login or a permission refused: one line (unknown user, wrong password, locked out until …,
    disabled, may not …)."""


class UserError(ValueError):
    """A user change refused (one line); nothing changed."""


@dataclass(frozen=True)
class User:
    name: str
    full_name: str
    role: Role
    enabled: bool
    failures: int = 0
    locked_until: float | None = None
    created_at: str = ""
    changed_at: str = ""


def _now_text() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_LEN, maxmem=_maxmem(n, r, p))
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(key).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n_, r_, p_, salt_, key_ = stored.split("$")
        n, r, p = int(n_), int(r_), int(p_)
        salt, key = base64.b64decode(salt_), base64.b64decode(key_)
    except ValueError:
        return False
    if kind != "scrypt" or not key or n > 2 ** 20 or r > 64 or p > 16:  # a forged row must not exhaust memory
        return False
    try:
        got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(key), maxmem=_maxmem(n, r, p))
    except (ValueError, OverflowError):  # n not a power of 2, parameters out of range
        return False
    return hmac.compare_digest(got, key)


def credential(stored: str) -> str:
    """What the audit trail keeps of a password: the SHA-256 of its stored scrypt hash (salted, so it
    says nothing about the password) — so a hash swapped behind the ledger's back fails verify."""
    return hashlib.sha256(stored.encode()).hexdigest()


def verify(conn: sqlite3.Connection) -> str | None:
    """Each user's full name, role, enabled state and password hash are what their audit records
    (user.add, user.role, user.disable/enable, user.reset_password) say; else one line naming the first
    that differs (a role raised or a hash replaced by editing the file)."""
    trail: dict[str, dict] = {}
    for seq, action, text in conn.execute(
            "SELECT seq, action, detail FROM audit WHERE action IN ('user.add', 'user.role', 'user.disable',"
            " 'user.enable', 'user.reset_password') ORDER BY seq"):
        d = json.loads(text)
        if not isinstance(d, dict) or "name" not in d:
            return f"record {seq} ({action}): unreadable"
        if action == "user.add":
            trail[d["name"]] = {"full_name": d.get("full_name"), "role": d.get("role"), "enabled": True,
                                "credential": d.get("credential_sha256"), "seq": seq}
            continue
        t = trail.get(d["name"])
        if t is None:
            return f"record {seq} ({action}): user {d['name']} was never added"
        t["seq"] = seq
        if action == "user.role":
            t["role"] = d.get("role")
        elif action in ("user.disable", "user.enable"):
            t["enabled"] = action == "user.enable"
        else:
            t["credential"] = d.get("credential_sha256")
    for name, full_name, role, stored, enabled in conn.execute(
            "SELECT name, full_name, role, password, enabled FROM users ORDER BY name"):
        t = trail.pop(name, None)
        if t is None:
            return f"user {name}: no audit record added it"
        now = {"full_name": full_name, "role": role, "enabled": bool(enabled)}
        for key, value in now.items():
            if t[key] != value:
                return f"user {name}: {key.replace('_', ' ')} is {value!r}, its audit trail says {t[key]!r} (record {t['seq']})"
        if t["credential"] is not None and t["credential"] != credential(stored):
            return f"user {name}: the password hash is not the one its audit trail set (record {t['seq']})"
    if trail:
        return f"user {next(iter(trail))}: added in the audit trail, missing from the ledger"
    return None


def _maxmem(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2) + (1 << 20)


def setting(conn: sqlite3.Connection, name: str) -> int:
    default, _, _ = SETTINGS[name]
    row = conn.execute("SELECT value FROM setting WHERE name=?", (name,)).fetchone()
    return int(row[0]) if row else default


def set_setting(conn: sqlite3.Connection, name: str, value, *, by: str, reason: str) -> int:
    if name not in SETTINGS:
        raise UserError(f"unknown setting {name!r} (known: {', '.join(SETTINGS)})")
    _, low, high = SETTINGS[name]
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UserError(f"setting {name}: want a whole number {low}..{high}, got {value!r}") from None
    if not low <= number <= high:
        raise UserError(f"setting {name}: want {low}..{high}, got {number}")
    with transaction(conn):
        old = setting(conn, name)
        conn.execute("INSERT INTO setting VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value=excluded.value",
                     (name, str(number)))
        audit.append(conn, by, "setting.change", {"name": name, "old": old, "new": number, "reason": reason})
    return number


def present(conn: sqlite3.Connection) -> bool:
    """Whether this ledger has users (then every changing command must prove one)."""
    return conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None


def _row(row) -> User:
    name, full_name, role, _pw, enabled, failures, locked_until, created_at, changed_at = row
    return User(name, full_name, Role(role), bool(enabled), failures, locked_until, created_at, changed_at)


def get(conn: sqlite3.Connection, name: str) -> User | None:
    row = conn.execute("SELECT * FROM users WHERE name=?", (name,)).fetchone()
    return _row(row) if row else None


def _existing(conn: sqlite3.Connection, name: str) -> User:
    user = get(conn, name)
    if user is None:
        raise UserError(f"no user {name}")
    return user


def all_users(conn: sqlite3.Connection) -> list[User]:
    return [_row(r) for r in conn.execute("SELECT * FROM users ORDER BY name")]


def may(user: User | None, action: str) -> bool:
    """Whether `user` (enabled) may do `action` (a key of PERMISSIONS)."""
    if action not in PERMISSIONS:
        raise KeyError(f"no such action {action!r} in users.PERMISSIONS")
    return user is not None and user.enabled and user.role in PERMISSIONS[action]


def require(user: User, action: str) -> None:
    """`may`, or AuthError naming who may."""
    if not may(user, action):
        who = " or ".join(sorted(r.value for r in PERMISSIONS[action]))
        raise AuthError(f"{user.name} ({user.role.value}) may not do {action}: it takes the role {who}")


def _role(role) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise UserError(f"unknown role {role!r} (roles: {', '.join(r.value for r in Role)})") from None


def _check_password(conn, name: str, password: str) -> None:
    least = setting(conn, "password.min_length")
    if not isinstance(password, str) or len(password) < least:
        raise UserError(f"a password needs at least {least} characters")
    if name.lower() in password.lower():
        raise UserError("a password must not contain the user name")
    if not password.isprintable():
        raise UserError("a password must be printable characters (no control characters)")


def add(conn: sqlite3.Connection, name: str, role, password: str, *, by: str, reason: str,
        full_name: str | None = None) -> User:
    """Add a user. The first user of a ledger must be an admin (else nobody could manage users);
    after that `by` must be an admin (the caller proved it, e.g. with `authenticate`)."""
    role = _role(role)
    name = (name or "").strip()
    full_name = " ".join((full_name or "").split())
    if not full_name:
        raise UserError(f"user {name}: the full (printed) name is required: it appears on every signature")
    _check_password(conn, name, password)
    hashed = hash_password(password)  # outside the write lock: it takes a while on purpose
    with transaction(conn):
        first = not present(conn)
        if first and role is not Role.ADMIN:
            raise UserError("the first user of a ledger must be an admin (--role admin): someone must manage users")
        if not first:
            _acting_admin(conn, by)
        if get(conn, name) is not None:
            raise UserError(f"user {name} already exists (users are disabled, never removed or renamed)")
        now = _now_text()
        try:
            conn.execute("INSERT INTO users (name, full_name, role, password, created_at, changed_at)"
                         " VALUES (?,?,?,?,?,?)", (name, full_name, role.value, hashed, now, now))
        except sqlite3.IntegrityError as exc:
            if "CHECK" in str(exc) and "name" in str(exc):
                raise UserError(f"user name {name!r}: 2 to 32 characters of a-z 0-9 . _ -") from None
            raise
        audit.append(conn, by, "user.add", {"name": name, "full_name": full_name, "role": role.value,
                                            "first": first, "credential_sha256": credential(hashed),
                                            "reason": reason})
    return _existing(conn, name)


def _acting_admin(conn, by: str) -> None:
    actor = get(conn, by)
    if actor is None or not actor.enabled:
        raise AuthError(f"{by} is not an enabled user of this ledger")
    require(actor, "users.admin")


def _change(conn, name: str, by: str, action: str, detail: dict, sql: str, args: tuple) -> User:
    with transaction(conn):
        _acting_admin(conn, by)
        user = get(conn, name)
        if user is None:
            raise UserError(f"no user {name}")
        conn.execute(sql + ", changed_at=? WHERE name=?", (*args, _now_text(), name))
        audit.append(conn, by, action, {"name": name, **detail})
        return _existing(conn, name)


def disable(conn: sqlite3.Connection, name: str, *, by: str, reason: str) -> User:
    if name == by:
        raise UserError("an admin cannot disable themselves (another admin must)")
    with transaction(conn):
        user = get(conn, name)
        if user is not None and user.role is Role.ADMIN and user.enabled and conn.execute(
                "SELECT count(*) FROM users WHERE role='admin' AND enabled=1").fetchone()[0] < 2:
            raise UserError(f"{name} is the last enabled admin: add another admin first")
        return _change(conn, name, by, "user.disable", {"reason": reason}, "UPDATE users SET enabled=0", ())


def enable(conn: sqlite3.Connection, name: str, *, by: str, reason: str) -> User:
    return _change(conn, name, by, "user.enable", {"reason": reason},
                   "UPDATE users SET enabled=1, failures=0, locked_until=NULL", ())


def reset_password(conn: sqlite3.Connection, name: str, password: str, *, by: str, reason: str) -> User:
    """A new password (also lifts a lockout)."""
    _check_password(conn, name, password)
    hashed = hash_password(password)
    return _change(conn, name, by, "user.reset_password", {"credential_sha256": credential(hashed), "reason": reason},
                   "UPDATE users SET password=?, failures=0, locked_until=NULL", (hashed,))


def set_role(conn: sqlite3.Connection, name: str, role, *, by: str, reason: str) -> User:
    role = _role(role)
    return _change(conn, name, by, "user.role", {"role": role.value, "reason": reason},
                   "UPDATE users SET role=?", (role.value,))


def _until(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def authenticate(conn: sqlite3.Connection, name: str, password: str, *, purpose: str = "login") -> User:
    """The enabled user `name` whose password this is, or AuthError (one line). Every attempt is an
    audit record (`user.login` / `user.login_failed`, never the password), committed here: call it
    outside a transaction. `purpose` says what for ("login", "command", "signature", …)."""
    if conn.in_transaction:
        raise RuntimeError("authenticate outside a transaction: a refused login must still be recorded")
    name = (name or "").strip()
    row = conn.execute("SELECT password FROM users WHERE name=?", (name,)).fetchone()
    ok = check_password(password or "", row[0]) if row else False  # the slow part, outside the lock
    now = time.time()
    with transaction(conn):
        user = get(conn, name)
        if user is None:
            shown = name if name.isprintable() and len(name) <= 32 else name[:32].encode("unicode_escape").decode()
            audit.append(conn, "(unknown)", "user.login_failed", {"name": shown, "why": "unknown user", "for": purpose})
            error = f"unknown user {shown!r}"
        elif user.locked_until is not None and user.locked_until > now:
            audit.append(conn, name, "user.login_failed", {"name": name, "why": "locked out", "for": purpose})
            error = f"{name} is locked out until {_until(user.locked_until)} (too many wrong passwords; an admin can reset it)"
        elif not ok:
            failures = user.failures + 1
            limit = setting(conn, "login.max_failures")
            locked = now + 60 * setting(conn, "login.lockout_minutes") if failures >= limit else None
            conn.execute("UPDATE users SET failures=?, locked_until=? WHERE name=?",
                         (0 if locked else failures, locked, name))
            audit.append(conn, name, "user.login_failed", {"name": name, "why": "wrong password", "for": purpose,
                                                           "failures": failures})
            if locked:
                audit.append(conn, name, "user.locked", {"name": name, "failures": failures,
                                                         "until": _until(locked)})
                error = f"wrong password for {name}: locked out until {_until(locked)} after {failures} failures"
            else:
                error = f"wrong password for {name} ({failures} of {limit} before a lockout)"
        elif not user.enabled:
            audit.append(conn, name, "user.login_failed", {"name": name, "why": "disabled", "for": purpose})
            error = f"{name} is disabled"
        else:
            conn.execute("UPDATE users SET failures=0, locked_until=NULL WHERE name=?", (name,))
            audit.append(conn, name, "user.login", {"name": name, "for": purpose})
            error = None
    if error:
        raise AuthError(error)
    return _existing(conn, name)


# --- the CLI's side: --user names an enabled user and proves it -------------------------------------

PASSWORD_ENV = "SERIALINE_PASSWORD"
_said_not_set_up = False


def read_password(prompt: str, *, confirm: bool = False, env: bool = True) -> str:
    """A password: $SERIALINE_PASSWORD (scripts; `env`), a prompt on a terminal (twice with
    `confirm`), else one line of stdin."""
    if env and os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if sys.stdin.isatty():
        try:
            first = getpass.getpass(prompt)
            if confirm and getpass.getpass("again: ") != first:
                raise UserError("the two passwords differ; nothing changed")
        except EOFError:  # Ctrl-D at the prompt
            raise AuthError(f"{prompt.rstrip(': ')}: none given; nothing changed") from None
        return first
    line = sys.stdin.readline()
    if not line:
        raise AuthError(f"{prompt.rstrip(': ')}: no password on stdin (or set {PASSWORD_ENV}, or run on a terminal)")
    return line.rstrip("\r\n")


def act(conn: sqlite3.Connection, name: str, action: str) -> User | None:
    """What a changing command does first: on a ledger with users, `name` must be an enabled user who
    proves it (password) and may do `action`; AuthError otherwise. A ledger without users: None
    (the name is taken as given, as before users), said once per process on a terminal."""
    global _said_not_set_up
    if not present(conn):
        if not _said_not_set_up and sys.stderr.isatty():
            print("note: this ledger has no users yet: --user is taken as given; add an admin with"
                  " `serialine users add NAME --role admin --full-name ...` (docs/part11.md)", file=sys.stderr)
        _said_not_set_up = True
        return None
    if get(conn, name) is None:  # audited as a failed login, without asking for a password
        authenticate(conn, name, "", purpose=action)
    return prove(conn, name, read_password(f"password for {name}: "), action)


def prove(conn: sqlite3.Connection, name: str, password: str, action: str) -> User:
    """`authenticate`, then `require(user, action)`; a refused action is audited too (`user.refused`).
    For any front end that receives a name and a password (CLI, console, control interface)."""
    user = authenticate(conn, name, password, purpose=action)
    refuse(conn, user, action)
    return user


def refuse(conn: sqlite3.Connection, user: User, action: str) -> None:
    """Nothing if `user` may do `action`; else its `user.refused` record (committed) and AuthError."""
    if not may(user, action):
        if not conn.in_transaction:
            with transaction(conn):
                audit.append(conn, user.name, "user.refused", {"name": user.name, "role": user.role.value,
                                                               "action": action})
        require(user, action)
