"""Append-only audit log: each record carries the hash of the one before, so any edit, deletion or
reordering breaks the chain at a record `verify` can name. The table's triggers refuse UPDATE and
DELETE; the chain catches what is done behind SQLite's back."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sqlite3

GENESIS = "0" * 64


def _digest(prev_hash: str, seq: int, at: str, user: str, action: str, detail: str) -> str:
    body = json.dumps([prev_hash, seq, at, user, action, detail], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def append(conn: sqlite3.Connection, user: str, action: str, detail: dict) -> str:
    """Add one record inside the caller's transaction; returns its hash."""
    if not user:
        raise ValueError("audit records need a user")
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
    text = json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    h = _digest(prev, seq, at, user, action, text)
    conn.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?)", (seq, at, user, action, text, prev, h))
    return h


def verify(conn: sqlite3.Connection) -> tuple[bool, int, str]:
    """→ (ok, records checked, message naming the first broken record)."""
    prev, expected_seq, n = GENESIS, 1, 0
    for seq, at, user, action, detail, prev_hash, h in conn.execute("SELECT * FROM audit ORDER BY seq"):
        if seq != expected_seq:
            return False, n, f"record {expected_seq} is missing (next is {seq})"
        if prev_hash != prev:
            return False, n, f"record {seq}: previous-hash link broken"
        if _digest(prev_hash, seq, at, user, action, detail) != h:
            return False, n, f"record {seq}: content does not match its hash"
        prev, expected_seq, n = h, seq + 1, n + 1
    return True, n, f"audit log intact: {n} records"
