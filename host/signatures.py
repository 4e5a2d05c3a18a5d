"""Electronic signatures (21 CFR Part 11): §11.50 — the signer's printed name, the date and time, the
meaning; §11.70 — linked to the signed record by the SHA-256 of its content, kept in the audit chain,
so a record changed after signing fails `serialine audit verify`; §11.200 — the password is entered
again at every signing (`users.authenticate`), even by a user logged in already.

A signature is one audit record (action `signature`) and one row of the `signature` table with the
same fields; `verify` checks both agree and that each signed record's content still hashes to what
was signed. A record kind names the module that builds its content (RECORDS); a later audit record
in VOIDED_BY (a batch's reopen) ends the signatures before it: the record may change, and must be
signed again."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import json
import sqlite3
import zoneinfo
from dataclasses import dataclass

from . import audit, users
from .db import transaction

MEANINGS = ("reviewed", "approved", "released", "performed")
ACTION = "signature"
# record kind -> module with record_content(conn, id) -> dict and record_zone(conn, id) -> str | None
RECORDS = {"batch": "serialine.host.release"}
VOIDED_BY = {"batch": ("batch.reopen", "batch_id")}  # kind -> (audit action, its detail key naming the record)
_FIELDS = ("record_kind", "record_id", "meaning", "user", "full_name", "at", "local_at", "tz", "content_sha256")


class SignatureError(ValueError):
    pass


@dataclass(frozen=True)
class Signature:
    signature_id: int
    record_kind: str
    record_id: str
    meaning: str
    user: str
    full_name: str
    at: str          # UTC, ISO 8601
    local_at: str    # the same instant in the site's zone, ISO 8601 with its offset
    tz: str          # the site's IANA zone ("UTC" without a site)
    content_sha256: str
    audit_seq: int

    def manifestation(self) -> str:
        """§11.50(a) as printed on the record: name, date and time, meaning."""
        utc = _dt.datetime.fromisoformat(self.at)
        local = _dt.datetime.fromisoformat(self.local_at)
        zone = "" if self.tz == "UTC" else f" ({local:%Y-%m-%d %H:%M:%S} {self.tz})"
        return f"{self.meaning.capitalize()} by {self.full_name} ({self.user}) on {utc:%Y-%m-%d %H:%M:%S} UTC{zone}"


def content_sha256(content: dict) -> str:
    """The hash a signature binds: canonical JSON (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _module(kind: str):
    if kind not in RECORDS:
        raise SignatureError(f"no signable record kind {kind!r} (known: {', '.join(RECORDS)})")
    return importlib.import_module(RECORDS[kind])


def record_hash(conn: sqlite3.Connection, kind: str, record_id: str) -> str:
    return content_sha256(_module(kind).record_content(conn, record_id))


def sign(conn: sqlite3.Connection, user_name: str, password: str, meaning: str, record_kind: str, record_id: str,
         *, reason: str | None = None, action: str | None = None, check=None) -> Signature:
    """Authenticate `user_name` again with `password` (a failure is audited and raises AuthError),
    check the role may do `action` (users.PERMISSIONS; a refusal is audited), then, in one
    transaction, `check(conn, user, content_sha256)` (may raise to refuse), the audit record and the
    signature row. Call outside a transaction."""
    if meaning not in MEANINGS:
        raise SignatureError(f"meaning {meaning!r}: one of {', '.join(MEANINGS)}")
    module = _module(record_kind)
    if reason is not None:
        reason = audit.check_reason(reason)
    user = users.authenticate(conn, user_name, password, purpose=f"signature {meaning} {record_kind} {record_id}")
    if action is not None:
        users.refuse(conn, user, action)
    with transaction(conn):
        digest = content_sha256(module.record_content(conn, record_id))
        if check is not None:
            check(conn, user, digest)
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        tz = module.record_zone(conn, record_id) or "UTC"
        local = now.astimezone(zoneinfo.ZoneInfo(tz))
        fields = {"record_kind": record_kind, "record_id": record_id, "meaning": meaning, "user": user.name,
                  "full_name": user.full_name, "at": now.isoformat(), "local_at": local.isoformat(), "tz": tz,
                  "content_sha256": digest}
        key = VOIDED_BY.get(record_kind, (None, None))[1]
        detail = {**fields, **({key: record_id} if key else {}), **({"reason": reason} if reason else {})}
        audit.append(conn, user.name, ACTION, detail)
        seq = int(audit.head(conn).split(":")[0])
        cur = conn.execute(f"INSERT INTO signature ({', '.join(_FIELDS)}, audit_seq) VALUES ({', '.join('?' * 10)})",
                           (*fields.values(), seq))
        return Signature(int(cur.lastrowid or 0), **fields, audit_seq=seq)


def _voids(conn) -> dict:
    """(kind, record id) -> seq of the latest audit record that voids its earlier signatures."""
    out = {}
    for kind, (action, key) in VOIDED_BY.items():
        for seq, record_id in conn.execute(
                "SELECT seq, json_extract(detail, '$.' || ?) FROM audit WHERE action=? ORDER BY seq", (key, action)):
            out[(kind, str(record_id))] = seq
    return out


def of(conn: sqlite3.Connection, record_kind: str, record_id: str, *, current: bool = True) -> list[Signature]:
    """The record's signatures, oldest first; `current`: only those no later reopen voided."""
    rows = conn.execute(f"SELECT signature_id, {', '.join(_FIELDS)}, audit_seq FROM signature"
                        " WHERE record_kind=? AND record_id=? ORDER BY signature_id", (record_kind, record_id))
    found = [Signature(*r) for r in rows]
    if current:
        void = _voids(conn).get((record_kind, record_id), 0)
        found = [s for s in found if s.audit_seq > void]
    return found


def verify(conn: sqlite3.Connection) -> str | None:
    """None if every signature row agrees with its audit record and every signature not voided
    still matches its record's content; else one line naming the first that does not."""
    rows = {r[-1]: r for r in conn.execute(f"SELECT signature_id, {', '.join(_FIELDS)}, audit_seq FROM signature")}
    voids, hashes = _voids(conn), {}
    for seq, user, text in conn.execute("SELECT seq, user, detail FROM audit WHERE action=? ORDER BY seq", (ACTION,)):
        try:
            d = json.loads(text)
            signed = tuple(str(d[f]) for f in _FIELDS)
        except (ValueError, KeyError, TypeError):
            return f"record {seq} ({ACTION}): unreadable"
        row = rows.pop(seq, None)
        if row is None:
            return f"record {seq} ({ACTION}): its signature row is missing"
        if tuple(map(str, row[1:-1])) != signed or user != d["user"]:
            return f"signature {row[0]}: differs from its audit record {seq}"
        kind, record_id = d["record_kind"], d["record_id"]
        if voids.get((kind, record_id), 0) > seq:
            continue
        if (kind, record_id) not in hashes:
            try:
                hashes[(kind, record_id)] = record_hash(conn, kind, record_id)
            except (ValueError, LookupError) as exc:
                return f"{kind} {record_id}: signed in record {seq}, but its record cannot be built ({exc})"
        if hashes[(kind, record_id)] != d["content_sha256"]:
            return (f"{kind} {record_id}: its record changed after {d['full_name']} ({user}) signed it"
                    f" '{d['meaning']}' in record {seq}")
    if rows:
        row = next(iter(rows.values()))
        return f"signature {row[0]}: no audit record vouches for it (record {row[-1]} is another)"
    return None
