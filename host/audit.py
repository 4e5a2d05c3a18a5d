"""Append-only audit log: each record carries the hash of the one before, so any edit, deletion or
reordering breaks the chain at a record `verify` can name. The table's triggers refuse UPDATE and
DELETE; the chain catches what is done behind SQLite's back.

What the chain alone cannot see, and how it is covered:
- truncation, or a record edited and the chain re-hashed: the head (`head`, "SEQ:HASH") is anchored
  outside the file — printed by every batch command, carried by each EPCIS document, appended to
  `<db>.anchors` — and `verify` checks every anchor is still in the chain.
- the ledger rows a QA reviewer relies on: the record of `product.add` seals the product row, of
  `batch.create` the batch's master data (lot, expiry, …), of `batch.close` / `batch.abort` the
  batch's rows that may still change (units, serials, containers, packing, coder jobs). The
  append-only logs (device events, serial history, alarms, outbox bodies) are sealed by one chain
  of links — every `checkpoint` (the running agent makes them: `Checkpointer`) and every close —
  each continuing the one before over only the rows added since. `verify` recomputes each batch's
  latest seals, every link, and every eventID from its outbox body.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time

from . import db, devevents

log = logging.getLogger(__name__)

GENESIS = "0" * 64

# What a seal covers: part -> (table, rows of the key, order, columns left out or None = all,
# bound column). A part with a bound column seals only rows older than the seal (bound < upto):
# rows added afterwards (the same boot's later events, alarms, a shipping event) are not its own.
_BATCH_BOOTS = ("(device_id, boot_id) IN (SELECT device_id, boot_id FROM device_boot WHERE batch_id = :key"
                " UNION SELECT device_id, boot_id FROM unit WHERE batch_id = :key)")
_PARTS = {
    "product": ("product", "gtin = (SELECT gtin FROM batch WHERE batch_id = :key)", "gtin", None, None),
    "product_master": ("product_master", "gtin = (SELECT gtin FROM batch WHERE batch_id = :key)", "gtin", None, None),
    "batch": ("batch", "batch_id = :key", "batch_id", None, None),
    "batch_site": ("batch_site", "batch_id = :key", "batch_id", None, None),
    "unit": ("unit", "batch_id = :key", "device_id, boot_id, unit_seq", None, None),
    "unit_row": ("unit_row", "batch_id = :key", "device_id, boot_id, unit_seq", None, None),  # as stored (serial_id): no join
    "serial": ("serial", "batch_id = :key", "gtin, serial", None, None),
    "serial2": ("serial", "batch_id = :key", "state, gtin, serial", None, None),  # the same rows in serial_batch's order: no sort
    "serial3": ("serial", "batch_id = :key", "state, serial_id", None, None),  # the rowid form's order in serial_batch
    # closes of before sealed the batch's history (batch_id, serial key): the view serial_history_v2 renders it
    "serial_history": ("serial_history_v2", "batch_id = :key", "seq", None, None),
    # the serial history as sealed before it was compact: kept as it was in serial_history_v1 (db.py)
    "serial_history_v1": ("serial_history_v1", "batch_id = :key", "gtin, serial, at, old_state, new_state", None, None),
    # device events as sealed before they were compact: the view device_event_v1 renders them byte for byte
    # (host/devevents.py; boot_ref, event_seq is their old order device_id, boot_id, event_seq)
    "device_event": ("device_event_v1", _BATCH_BOOTS, "boot_ref, event_seq", None, "received_at"),
    "coder_job": ("coder_job", "batch_id = :key", "job_id", None, None),
    # the jobs as stored (code NULL where the batch's template gives it) and that template: half the
    # work of reading the view coder_job, and the same rows (host/db.py)
    "coder_job_row": ("coder_job_row_v1", "batch_id = :key", "job_id", None, None),  # (gtin, serial): the view renders them
    "coder_job_row2": ("coder_job_row", "batch_id = :key", "job_id", None, None),  # by serial_id, as stored
    "coder_template": ("coder_template", "batch_id = :key", "batch_id", None, None),
    "container": ("container", "batch_id = :key", "container_id", None, None),
    "packed": ("packed", "container_id IN (SELECT container_id FROM container WHERE batch_id = :key)",
               "gtin, serial", None, None),
    # the rows as stored (serial_id, container_id), in packed_by_container's order: no sort, no join
    "packed_row": ("packed_row", "container_id IN (SELECT container_id FROM container WHERE batch_id = :key)",
                   "container_id, serial_id", None, None),
    "epcis_outbox": ("epcis_outbox", "batch_id = :key", "seq",
                     ("delivered_at", "attempts", "next_try_at", "last_error"), "enqueued_at"),  # delivery moves on
    "alarm_log": ("alarm_log", "1", "alarm_id", None, "at"),
    # master data at creation (state and closed_at move on)
    "product_row": ("product", "gtin = :key", "gtin", None, None),
    "product_master_row": ("product_master", "gtin = :key", "gtin", None, None),
    "batch_master": ("batch", "batch_id = :key", "batch_id", ("state", "closed_at"), None),
    # the batch's ref and the t0 its history's times count from (db.BATCH_REF; log:serial_history3 hashes them as stored)
    "batch_ref": ("batch_ref", "batch_id = :key", "batch_id", None, None),
    "location_row": ("location", "sgln = :key", "sgln", None, None),
    "shipment_row": ("shipment", "shipment_id = :key", "shipment_id", None, None),
    "shipped_rows": ("shipped", "shipment_id = :key", "sscc", None, None),
    # the append-only logs as a whole, for checkpoints of running batches
    # the compact form's chain, over the view device_event_v2: received_at as ms since 1970 (t0 + at) as
    # the rows stored it before they counted from their boot's t0, so the chain goes on and covers t0
    "log:device_event2": ("device_event_v2", "1", "boot_ref, event_seq", None, "received_at"),
    "log:device_event": ("device_event_v1", "1", "boot_ref, event_seq", None, "received_at"),
    "log:serial_history3": ("serial_history", "1", "seq", None, "rowid"),  # by serial_id, batch ref: its chain's start
    "log:serial_history2": ("serial_history_v2", "1", "seq", None, "seq"),  # the form before, rendered (db.py)
    "log:serial_history": ("serial_history_v1", "1", "at, gtin, serial, old_state, new_state, batch_id", None, "at"),
    # alarms and outbox bodies by their row id (AUTOINCREMENT, never deleted): a link reads only the
    # rows added since, however long the ledger's history (by time, each link scanned the whole table)
    "log:alarm_log2": ("alarm_log", "1", "alarm_id", None, "rowid"),
    "log:epcis_outbox2": ("epcis_outbox", "1", "seq", ("delivered_at", "attempts", "next_try_at", "last_error"),
                          "rowid"),
    "log:alarm_log": ("alarm_log", "1", "alarm_id", None, "at"),
    "log:epcis_outbox": ("epcis_outbox", "1", "seq", ("delivered_at", "attempts", "next_try_at", "last_error"),
                         "enqueued_at"),
}
# A bound column is a time — SQLite's strftime text (_TEXT_BOUNDS), integer ms since 1970 (_MS_BOUNDS),
# or else time.time() — or "rowid", the row's place in an append-only table (rows never deleted).
_TEXT_BOUNDS = ("serial_history_v1",)
_MS_BOUNDS: tuple = ("device_event", "device_event_v2")
# part -> the part that reads its rows as sealed before its table changed form (the old table kept
# as it was): used for a seal whose `cols` the table no longer has
_AS_SEALED: dict = {"serial_history": "serial_history_v1"}
# A log whose tail is read by its key, not by a scan of its time bound (no index on it): per group
# (boot_ref), each link records `next` (1 + the highest key it covers) and the gaps below it (keys
# not stored then, which a late event may fill): the next link reads those ranges and the keys from
# `next` on, filtered by the time bound as before — the same rows, by the primary key (`_key_tail`).
# part -> (group column, key column, SQL of the groups)
_KEY_TAILS = {"log:device_event2": ("boot_ref", "event_seq", "SELECT ref FROM device_boot_ref ORDER BY ref")}
_LOGS = tuple(p for p in _PARTS if p.startswith("log:"))
_FROZEN = ("log:serial_history", "log:serial_history2", "log:device_event", "log:alarm_log", "log:epcis_outbox")  # chains no new link extends (their table no longer grows, or a chain by row id took over): verify reads their links
# A close seals the batch's own rows that may still change, and continues the chain of the logs (as
# a checkpoint does) over the rows added since its last link. (Closes before that sealed the batch's
# rows of each log too: serial_history, device_event, epcis_outbox, alarm_log; verify still reads them.)
_CLOSED = ("product", "product_master", "batch", "batch_site", "batch_ref", "unit_row", "serial3", "coder_job_row2",
           "coder_template", "container", "packed_row", *_LOGS)
# action -> (detail key naming what is sealed, parts): the one place that says what is sealed when
SEALS = {
    "product.add": ("gtin", ("product_row", "product_master_row")),
    "product.master": ("gtin", ("product_master_row",)),  # DSCSA master data added or changed later
    "batch.create": ("batch_id", ("batch_master", "batch_ref")),
    "batch.close": ("batch_id", _CLOSED),
    "batch.abort": ("batch_id", _CLOSED),
    "location.set": ("sgln", ("location_row",)),
    "ship": ("shipment", ("shipment_row", "shipped_rows")),
}
FINAL = ("batch.close", "batch.abort")  # seal a batch as a whole; the others seal one key's rows

REOPENS = ("batch.reopen",)  # after one, a batch may change until its next close seals it again

_ANCHOR = re.compile(r"\b(\d+):([0-9a-f]{64})\b")


class AuditError(ValueError):
    pass


MIN_REASON, MAX_REASON = 4, 500  # the one rule for a reason, wherever a change gives one


def check_reason(reason) -> str:
    """A change's reason, stripped, or ValueError (one line)."""
    text = " ".join(str(reason or "").split())
    if len(text) < MIN_REASON or len(text) > MAX_REASON or not text.isprintable():
        raise ValueError(f"a reason is required: {MIN_REASON} to {MAX_REASON} printable characters,"
                         f" saying why (got {str(reason or '')[:40]!r})")
    return text


def _digest(prev_hash: str, seq: int, at: str, user: str, action: str, detail: str) -> str:
    body = json.dumps([prev_hash, seq, at, user, action, detail], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _columns(conn, table: str, leave_out) -> list[str]:
    cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    return [c for c in cols if c not in (leave_out or ())]


def _as_sealed(conn, part: str, cols: list[str]) -> str:
    if part in _AS_SEALED and not set(cols) <= set(_columns(conn, _PARTS[part][0], None)):
        return _AS_SEALED[part]
    return part


def _part_digest(conn, part: str, key: str, cols: list[str], upto, since=None, start: str = "",
                 boots: dict | None = None, form: int = 1) -> dict:
    """Rows and sha256 of the part's rows (with bound in [since, upto)), their lines in `form`
    (`FORM`); `start` chains a digest onto the previous checkpoint's. A key-tailed log
    (`_KEY_TAILS`) reads only the key ranges the link before left open (`boots`, its "boots"; None
    or {}: every key) and says what it leaves open."""
    part = _as_sealed(conn, part, cols)
    table, where, order, _, bound = _PARTS[part]
    below = f" WHERE ({where})"
    if bound and upto is not None:
        below += f" AND {bound} < :upto"
    cond = below + (f" AND {bound} >= :since" if bound and since is not None else "")
    args = {"key": key, "upto": upto, "since": since}
    pieces, left = _key_tail(conn, part, below, cond, args, boots or {}) if part in _KEY_TAILS else ([(cond, args)], None)
    h, n = hashlib.sha256(start.encode()), 0
    for cond, args in pieces:  # in `order`: the pieces go up the key
        ahead = h.copy()
        rows = _sql_lines(conn, table, cols, cond, order, args, ahead, form=form)
        if rows is None:  # not SQLite's way: Python writes the lines
            ahead, rows = h.copy(), 0
            cur = conn.execute(f"SELECT {', '.join(cols)} FROM {table}{cond} ORDER BY {order}", args)
            while got := cur.fetchmany(4096):
                ahead.update(_rows_json(got, form).encode())
                rows += len(got)
        h, n = ahead, n + rows
    return {"rows": n, "sha256": h.hexdigest(), **({"boots": left} if left is not None else {})}


def _key_tail(conn, part: str, below: str, cond: str, args: dict, boots: dict) -> tuple[list, dict]:
    """The pieces (condition, args) of a key-tailed log's rows in [since, upto) (`cond`) — per
    group, the gaps and the keys from `next` the link before left open; every other key of the
    group was sealed by a link before (so its time is below `since`) — and what this link leaves
    open: the keys of no row below `upto` (`below`: every such row is sealed by it or one before)."""
    table = _PARTS[part][0]
    group, key, groups = _KEY_TAILS[part]
    pieces, left = [], {}
    for (g,) in conn.execute(groups).fetchall():
        (top,) = conn.execute(f"SELECT max({key}) FROM {table} WHERE {group} = ?", (g,)).fetchone()
        if top is None:
            continue
        if str(g) in boots:
            nxt, gaps = boots[str(g)]
        else:  # a group no link has seen: all of it
            (low,) = conn.execute(f"SELECT min({key}) FROM {table} WHERE {group} = ?", (g,)).fetchone()
            nxt, gaps = min(0, low), []
        ranges = [(gaps[i], gaps[i + 1]) for i in range(0, len(gaps), 2)] + ([(nxt, None)] if top >= nxt else [])
        open_ = []
        for lo, hi in ranges:
            span = f" AND {group} = :g AND {key} >= :lo" + ("" if hi is None else f" AND {key} < :hi")
            a = {**args, "g": g, "lo": lo, "hi": hi}
            at = lo
            for first, last in _runs(conn, table, key, below + span, a):
                if first > at:
                    open_ += [at, first]
                at = last + 1
            if hi is None:
                nxt = at
            elif at < hi:
                open_ += [at, hi]
            if at != lo:
                pieces.append((cond + span, a))
        left[str(g)] = [nxt, open_]
    return pieces, left


def _runs(conn, table: str, key: str, cond: str, args: dict) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive keys among the rows of `cond`, ascending."""
    lo, hi, n = conn.execute(f"SELECT min({key}), max({key}), count(*) FROM {table}{cond}", args).fetchone()
    if not n:
        return []
    if hi - lo + 1 == n:
        return [(lo, hi)]
    return conn.execute(f"SELECT min(k), max(k) FROM (SELECT {key} AS k, {key} - row_number() OVER (ORDER BY {key})"
                        f" AS run FROM {table}{cond}) GROUP BY run ORDER BY 1", args).fetchall()


_SQL_ALIKE: dict[str, bool] = {}  # SQLite version -> its json_array writes text, integers, NULL as _row_json


def _sql_writes_alike(conn) -> bool:
    version = sqlite3.sqlite_version
    if version not in _SQL_ALIKE:
        probe = ["".join(map(chr, range(128))) + "é\u2028\U0001F600\ufffd", "", 0, -1, 2 ** 63 - 1, -2 ** 63, None]
        try:
            (got,) = conn.execute(f"SELECT json_array({', '.join('?' * len(probe))})", probe).fetchone()
        except sqlite3.Error:
            got = None
        _SQL_ALIKE[version] = got == _row_json(probe)
    return _SQL_ALIKE[version]


def _sql_writes_hex(conn) -> bool:
    """Whether SQLite writes a BLOB as form 2 does ([its hex]: json_array keeps the inner array's
    JSON through CASE), checked once per SQLite version."""
    version = "hex " + sqlite3.sqlite_version
    if version not in _SQL_ALIKE:
        probe = b"\x00\xff\x7f"
        try:
            (got,) = conn.execute("SELECT json_array(CASE WHEN typeof(?1) = 'blob' THEN json_array(lower(hex(?1)))"
                                  " ELSE ?1 END, ?2)", (probe, "x")).fetchone()
        except sqlite3.Error:
            got = None
        _SQL_ALIKE[version] = got == _rows_json([(probe, "x")], 2)[:-1]
    return _SQL_ALIKE[version]


def _affinity(declared: str) -> str:
    """SQLite's column affinity of a declared type (its rules, in their order)."""
    kind = (declared or "").upper()
    if "INT" in kind:
        return "INTEGER"
    if any(k in kind for k in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in kind or not kind:
        return "BLOB"
    if any(k in kind for k in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _sql_digest(conn, table: str, cols: list[str], cond: str, order: str, args: dict, start: str,
                chunk: int | None = None, form: int = 1) -> dict | None:
    """{rows, sha256} of the rows' lines after `start`, written by SQLite (`_sql_lines`), or None."""
    h = hashlib.sha256(start.encode())
    rows = _sql_lines(conn, table, cols, cond, order, args, h, chunk or CHUNK, form)
    return None if rows is None else {"rows": rows, "sha256": h.hexdigest()}


CHUNK = 4096  # rows SQLite writes into one string (group_concat): one step, one Python object, one update
_REAL_MARKS = ".eEIN"  # a REAL as json_array writes it ("%!.15g": 1.0, 1.0e+20, Inf) holds one; an integer none


def _sql_lines(conn, table: str, cols: list[str], cond: str, order: str, args: dict, h, chunk: int = CHUNK,
               form: int = 1) -> int | None:
    """The rows' lines (`cond` ... ORDER BY `order`) into `h`, each written by SQLite (json_array:
    no Python object per value) where that gives the same lines: text, integers and NULL. A TEXT
    column holds no REAL (SQLite stores a number put there as text), any other may (checked), any
    may hold a BLOB (json_array refuses it): such a row sends the part back to Python. A last REAL
    column (times) is written by float.__repr__, as json does. A table's rows go chunk by chunk
    (`_sql_chunks`). Form 2: a column declared BLOB is written [its hex] by SQLite too (where it
    writes so). → rows, or None: not this way (`h` then holds part of them)."""
    if not _sql_writes_alike(conn):
        return None
    declared = {name: kind for _, name, kind, *_ in conn.execute(f"PRAGMA table_info({table})")}
    kinds = {name: _affinity(kind) for name, kind in declared.items()}
    tail = cols[-1:] if kinds.get(cols[-1]) == "REAL" else []
    head = cols[:len(cols) - len(tail)]
    if not head or any(c not in kinds or kinds[c] == "REAL" for c in head):  # (a view's untyped column: BLOB)
        return None
    hexed = form >= 2 and _sql_writes_hex(conn)
    line = "json_array(" + ", ".join(f"CASE WHEN typeof({c}) = 'blob' THEN json_array(lower(hex({c}))) ELSE {c} END"
                                     if hexed and declared[c].upper() == "BLOB" else c for c in head) + ")"
    numeric = [c for c in head if kinds[c] != "TEXT"]
    guarded = line
    if numeric:
        guarded = f"CASE WHEN {' OR '.join(f'typeof({c}) = {chr(39)}real{chr(39)}' for c in numeric)} THEN NULL ELSE {line} END"
    try:
        if not tail:
            return _sql_chunks(conn, table, line, guarded, numeric, cond, order, args, h, chunk)
        return _sql_rows(conn, guarded, tail, f" FROM {table}{cond} ORDER BY {order}", args, h)
    except sqlite3.OperationalError:  # a BLOB value
        return None


def _sql_rows(conn, line: str, tail: list[str], rest: str, args: dict, h) -> int | None:
    """`_sql_lines` a row at a time (a REAL tail written by Python, or a view's rows)."""
    n = 0
    cur = conn.execute(f"SELECT {line}{''.join(', ' + c for c in tail)}" + rest, args)
    while rows := cur.fetchmany(4096):
        if tail:
            out = []
            for text, value in rows:
                if text is None:
                    return None
                if type(value) is float and value - value == 0:  # finite
                    out.append(f"{text[:-1]},{float.__repr__(value)}]\n")
                elif value is None:
                    out.append(f"{text[:-1]},null]\n")
                elif type(value) is int:
                    out.append(f"{text[:-1]},{int.__repr__(value)}]\n")
                else:
                    return None
            h.update("".join(out).encode())
        else:
            lines = [text for (text,) in rows]
            if None in lines:
                return None
            h.update(("\n".join(lines) + "\n").encode())
        n += len(rows)
    return n


def _sql_chunks(conn, table: str, line: str, guarded: str, numeric: list[str], cond: str, order: str, args: dict,
                h, chunk: int) -> int | None:
    """`_sql_lines` of a table's rows `chunk` at a time, each chunk's lines joined by SQLite (one
    row out, not `chunk`), each chunk after the one before by the order's key: after the end
    (e1, ..., en) come the rows with k1 = e1, ..., kn > en, then those with k1 = e1, ..., k(n-1) >
    e(n-1), ... (each an index seek: `(k1, ..., kn) > (...)` is none once the index has a column
    before them). A chunk's text without a mark of a REAL is taken as is; one with (a text may
    hold "." or "e") has its `numeric` columns' types counted to tell. Every row is counted apart
    first: a key SQLite cannot compare (NULL) or a tie across a chunk's end would fall between the
    chunks (then None). A plan that sorts (no index gives the order), or that would read a chunk
    from the start of the rows, not seek it (a scan, a list IN a subquery walked from its start: a
    view's column may be no index's), goes row by row (`guarded`)."""
    keys = [k.strip() for k in order.split(",")]
    where = cond.removeprefix(" WHERE ")

    def after(i: int) -> str:  # the rows after the end that share its first i key columns
        return (f" WHERE {keys[i]} > :_a{i} AND " + "".join(f"{k} = :_a{j} AND " for j, k in enumerate(keys[:i]))
                + where)  # the bound first: SQLite seeks by the first it is given
    pick = f" FROM {table}{{}} ORDER BY {order} LIMIT {{}}"
    lines = f"SELECT group_concat(l, char(10)), count(*) FROM (SELECT {line} AS l{pick})"
    probe = {**args, **{f"_a{i}": 0 for i in range(len(keys))}}
    for span in (cond, *map(after, range(len(keys)))):
        plan = [r[-1] for r in conn.execute(f"EXPLAIN QUERY PLAN {lines.format(span, 1)}", probe)]
        if any("TEMP B-TREE" in p for p in plan) or (span != cond and any(
                "LIST SUBQUERY" in p or (p.startswith("SCAN ") and not p.startswith("SCAN (subquery")) for p in plan)):
            return _sql_rows(conn, guarded, [], f" FROM {table}{cond} ORDER BY {order}", args, h)
    reals = " OR ".join(f"typeof({c}) = 'real'" for c in numeric)
    (total,) = conn.execute(f"SELECT count(*) FROM {table}{cond}", args).fetchone()
    n, a, level = 0, dict(args), None  # level: None before the first chunk, else the key columns shared + 1
    while n < total:
        need, texts = chunk, []
        while need:
            span = cond if level is None else after(level - 1)
            text, rows = conn.execute(lines.format(span, need), a).fetchone()
            if rows and numeric and any(m in text for m in _REAL_MARKS):
                (real,) = conn.execute(f"SELECT count(*) FROM (SELECT {', '.join(numeric)}{pick.format(span, need)})"
                                       f" WHERE {reals}", a).fetchone()
                if real:
                    return None
            if rows:
                texts.append(text)
                need -= rows
            if need == 0:
                end = conn.execute(f"SELECT {order}{pick.format(span, 1)} OFFSET {rows - 1}", a).fetchone()
                a.update((f"_a{i}", v) for i, v in enumerate(end))
                level = len(keys)
            elif level is None or level == 1:
                break  # no more rows
            else:
                level -= 1
        if not texts:
            break
        h.update(("\n".join(texts) + "\n").encode())
        n += chunk - need
        if need:
            break
    return n if n == total else None


_row_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
# The lines' form a new link writes: 2, a BLOB as a one-element array of its hex (["00ff"]; SQLite can
# write it); 1, the form before (a BLOB as Python's str of it: a link without "form" was written so).
FORM = 2
_row_json2 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                              default=lambda v: [v.hex()] if isinstance(v, bytes) else str(v)).encode


def _rows_json(rows: list, form: int = 1) -> str:
    """Each row as one line of JSON (in `form`). The rows are encoded in one call and split at
    their "],[" joints: a row of plain values has no "],[" outside its strings, so when the count
    is one per joint every one is a joint; otherwise (a string holds one) row by row."""
    encode = _row_json2 if form >= 2 else _row_json
    text = encode(rows)
    if text.count("],[") == len(rows) - 1:
        return text[1:-1].replace("],[", "]\n[") + "\n"
    return "".join([encode(r) + "\n" for r in rows])


def _now_bound(conn, table: str, bound: str):
    """A bound after every row written so far and before any written later (the caller holds the
    write lock): for a time, the clock once it has ticked past the call, as a row stamped in the
    same millisecond (or tick) would otherwise fall outside the seal made in its own transaction."""
    if bound == "rowid":
        return conn.execute(f"SELECT coalesce(max(rowid), 0) + 1 FROM {table}").fetchone()[0]

    def clock():
        if table in _TEXT_BOUNDS:
            now = _dt.datetime.now(_dt.timezone.utc)
            return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        return int(time.time() * 1000) if table in _MS_BOUNDS else time.time()
    first = clock()
    while (now := clock()) == first:
        time.sleep(0.0002)
    return now


def seal(conn: sqlite3.Connection, key: str, parts) -> dict:
    """Digests of the rows `parts` cover for `key` (a batch id or GTIN), as sealed in a record; the
    logs (`log:` parts) as the next link of their chain (`_continue_logs`)."""
    out = {}
    for part in parts:
        if part in _LOGS:
            continue
        table, _, _, leave_out, bound = _PARTS[part]
        cols = _columns(conn, table, leave_out)
        if not cols:  # table absent in this ledger
            continue
        upto = _now_bound(conn, table, bound) if bound else None
        out[part] = {"cols": cols, **({"upto": upto} if bound else {}), **_part_digest(conn, part, key, cols, upto)}
    if any(p in _LOGS for p in parts):
        out.update((p, s) for p, s in _continue_logs(conn).items() if p in parts)
    return out


def append(conn: sqlite3.Connection, user: str, action: str, detail: dict) -> str:
    """Add one record inside the caller's transaction, after its change (the record of an action in
    SEALS carries the digests of what it covers); returns its hash."""
    if not user:
        raise ValueError("audit records need a user")
    if "reason" in detail:
        check_reason(detail["reason"])
    if action in SEALS:
        key_name, parts = SEALS[action]
        detail = {**detail, "seal": seal(conn, str(detail[key_name]), parts)}
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
    text = json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    h = _digest(prev, seq, at, user, action, text)
    conn.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?)", (seq, at, user, action, text, prev, h))
    return h


CHECKPOINT = "audit.checkpoint"


def _links(conn, newest_first: bool = False):
    """(seq, action, key, log parts or None if unreadable) of each record that is a link of the
    logs' chain, oldest first (or newest): every checkpoint, and every batch close or abort since
    they continue it (those before seal the batch's rows of each log instead, and are no link)."""
    sql = (f"SELECT seq, action, detail FROM audit WHERE action IN ({', '.join('?' * (1 + len(FINAL)))})"
           f" ORDER BY seq{' DESC' if newest_first else ''}")
    for seq, action, text in conn.execute(sql, (CHECKPOINT, *FINAL)):
        link = _link_parts(action, text)
        if link is not None:
            yield seq, action, *link


def _link_parts(action: str, text: str) -> tuple | None:
    """(key, log parts or None if unreadable) of a record that may be a link, or None: no link."""
    try:
        detail = json.loads(text)
        if action == CHECKPOINT:
            if not isinstance(detail["parts"], dict):
                raise TypeError
            return None, detail["parts"]
        if any(p in detail["seal"] for p in _LOGS):
            return str(detail[SEALS[action][0]]), {p: detail["seal"][p] for p in _LOGS if p in detail["seal"]}
    except (ValueError, KeyError, TypeError):
        if action == CHECKPOINT:
            return None, None
        # a close whose seal is unreadable is reported by _verify_seals
    return None


def _continue_logs(conn, uptos: dict | None = None) -> dict:
    """The logs' next link: per log, its digest continuing the last link's over only the rows added
    since, `after` naming that link (0: none, from the first row), up to `uptos` (`_log_uptos`,
    taken now if None). A rowid bound, and a key-tailed log, read just those rows; another time
    bound has no index, so its log is scanned (filtered, not hashed). The caller's transaction must
    see every row below the bounds and none written after them (`checkpoint`, `checkpoint_aside`)."""
    uptos = _log_uptos(conn) if uptos is None else uptos
    last, after, trail = {}, {}, {}  # trail: a key-tailed log's links back to one with every group's state
    pending = set(uptos)
    for seq, _, _, parts in _links(conn, newest_first=True):  # back to each log's last link: mostly the newest record
        for part, s in (parts or {}).items():
            if part not in pending:
                continue
            if part not in last:
                last[part], after[part] = s, seq
            if part in _KEY_TAILS and s.get("cols") == last[part].get("cols"):
                trail.setdefault(part, []).append(s)
                if "boots_changed" in s:
                    continue  # the groups it did not change: in a link before
            pending.discard(part)
        if not pending:
            break
    out = {}
    for part, (cols, upto) in uptos.items():
        before, opened = last.get(part, {}), None
        if before and before.get("cols") != cols:  # the table changed form: a new chain, from its first row
            before, after[part] = {}, 0
        elif before:
            for s in reversed(trail.get(part, [])):
                opened = _open_keys(s, opened)
        d = _part_digest(conn, part, "", cols, upto, before.get("upto"), before.get("sha256", ""), opened, FORM)
        if "boots" in d and opened is not None and len(trail.get(part, [])) < OPEN_KEYS_EVERY:
            keys = {"boots_changed": {g: v for g, v in d["boots"].items() if opened.get(g) != v}}
        else:
            keys = {"boots": d["boots"]} if "boots" in d else {}
        out[part] = {"cols": cols, "upto": upto, "rows": before.get("rows", 0) + d["rows"], "sha256": d["sha256"],
                     "after": after.get(part, 0), **keys, **({"form": FORM} if FORM != 1 else {})}
    return out


# A key-tailed log's link names every group's open keys ("boots") once every OPEN_KEYS_EVERY links of
# it, and otherwise only the groups whose open keys it changed ("boots_changed"; a boot ended long ago
# is not written again link after link): a checkpoint reads back at most that many links.
OPEN_KEYS_EVERY = 64


def _open_keys(s: dict, before: dict | None) -> dict | None:
    """Every group's open keys as a key-tailed log's link `s` leaves them: its "boots", or those
    `before` it with its "boots_changed"; None: a link from before the key tail (every key)."""
    if "boots" in s:
        return s["boots"]
    if "boots_changed" in s:
        return {**(before or {}), **s["boots_changed"]}
    return None


def _log_uptos(conn) -> dict:
    """Per growing log: (its columns, its bound for a link now: `_now_bound`, under the write lock)."""
    out = {}
    for part in (p for p in _LOGS if p not in _FROZEN):
        table, _, _, leave_out, bound = _PARTS[part]
        cols = _columns(conn, table, leave_out)
        if cols:
            out[part] = (cols, _now_bound(conn, table, bound))
    return out


def checkpoint(conn: sqlite3.Connection, user: str) -> str:
    """Seal the append-only logs (device events, serial history, alarms, outbox bodies) as far as
    they go now, in one record: the logs' next link (`_continue_logs`). Own transaction (it must
    see every committed row and no writer between); returns the record's hash."""
    from .db import transaction
    with transaction(conn):
        return append(conn, user, CHECKPOINT, {"parts": _continue_logs(conn)})


def _link_since(conn, seq: int) -> bool:
    """Whether a record after `seq` may be a link (read by the key: only those records)."""
    return conn.execute(f"SELECT 1 FROM audit WHERE seq > ? AND action IN ({', '.join('?' * (1 + len(FINAL)))}) LIMIT 1",
                        (seq, CHECKPOINT, *FINAL)).fetchone() is not None


def checkpoint_aside(path: str, user: str, busy_s: float = db.BUSY_TIMEOUT_S, tries: int = 3) -> str:
    """`checkpoint` of the ledger file `path` on two connections of its own, for a running line
    (call it off the line's loop): the other writers wait for it only while it takes the bounds
    and opens a read snapshot on them, and while it appends the record — not while it hashes the
    rows (in the snapshot, WAL: the writers go on). Its writes wait out theirs (`busy_s`). A link
    another writer appended meanwhile makes it start again (`tries`); returns the record's hash."""
    lock = sqlite3.connect(path, isolation_level=None, timeout=busy_s, check_same_thread=False)
    snap = sqlite3.connect(path, isolation_level=None, timeout=busy_s, check_same_thread=False)
    try:
        for _ in range(tries):
            with db.transaction(lock):  # no writer between the bounds and the snapshot
                uptos = _log_uptos(lock)
                snap.execute("BEGIN")
                (seen,) = snap.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()  # (its first read: the snapshot)
            try:
                parts = _continue_logs(snap, uptos)
            finally:
                snap.execute("COMMIT")
            with db.transaction(lock):
                if not _link_since(lock, seen):
                    return append(lock, user, CHECKPOINT, {"parts": parts})
        raise AuditError(f"a link was appended by another writer during each of {tries} tries")
    finally:
        lock.close()
        snap.close()


CHECKPOINT_UNITS, CHECKPOINT_S = 10_000, 600.0  # a running line's logs are sealed at least this often
RETRY_S = 10.0  # a checkpoint that failed is tried again after this (or as the agent stops)


class Checkpointer:
    """When a running agent checkpoints: after every CHECKPOINT_UNITS units' events (4 per unit)
    or CHECKPOINT_S seconds with new events, whichever comes first, and when it stops (`flush`),
    so a close finds only its own rows unsealed. Call `note` after each step's commit: a due
    checkpoint runs on a thread of its own (`checkpoint_aside`), so the loop never waits for it; an
    in-memory ledger has no second connection, so there it runs in `note` itself (tests). A failed
    one is logged in one line and tried again after RETRY_S; the first failure of a run of them is an
    alarm (FAILED: the console lists it, with its cause) and the next success clears it (SEALED)."""

    FAILED, SEALED = "AUDIT_CHECKPOINT_FAILED", "AUDIT_CHECKPOINT_SEALED"  # alarm_log kinds, source "audit"

    def __init__(self, conn: sqlite3.Connection, user: str, units: int = CHECKPOINT_UNITS,
                 seconds: float = CHECKPOINT_S, busy_s: float = db.BUSY_TIMEOUT_S):
        self.conn, self.user, self.events, self.seconds, self.busy_s = conn, user, 4 * units, seconds, busy_s
        self.pending, self.since, self.retry_at = 0, time.monotonic(), 0.0
        self.made, self.cpu_s = 0, 0.0  # checkpoints made, their CPU seconds (for the benchmarks)
        self.failed, self.error = 0, None  # failed attempts (each logged), the last one's error
        self.failing = 0  # failed attempts since the last success (the FAILED alarm is up while > 0)
        self._unsaid: list[tuple[str, str]] = []  # alarms not yet in the ledger (it was busy): in order
        self.path = db.file_of(conn)  # "": in memory
        self._count = threading.Lock()  # pending: added to by the loop, taken by the checkpoint
        self._running = threading.Lock()
        self._job: threading.Thread | None = None

    def note(self, events: int) -> bool:
        """`events` new device events stored (committed); start a checkpoint if one is due and none
        runs. → whether it started one."""
        with self._count:
            self.pending += events
            pending = self.pending
        now = time.monotonic()
        if not pending or now < self.retry_at or (pending < self.events and now - self.since < self.seconds):
            return False
        if not self.path:
            return self._run()
        if self._job is not None and self._job.is_alive():
            return False
        self._job = threading.Thread(target=self._run, name="audit-checkpoint", daemon=True)
        self._job.start()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a started checkpoint to end. → whether none runs now."""
        job = self._job
        if job is not None:
            job.join(timeout)
            return not job.is_alive()
        return True

    def flush(self) -> bool:
        """The agent stops: wait for a running checkpoint, then checkpoint what is not yet sealed,
        before returning. → whether this call checkpointed."""
        self.wait()
        return self._run()

    def _run(self) -> bool:
        with self._running:
            with self._count:
                taken = self.pending
            if not taken:
                return False
            c = time.thread_time()
            try:
                if self.path:
                    checkpoint_aside(self.path, self.user, self.busy_s)
                else:
                    checkpoint(self.conn, self.user)
            except Exception as exc:  # said, and tried again: the events stay pending
                self.failed, self.error = self.failed + 1, f"{type(exc).__name__}: {exc}"
                self.retry_at = time.monotonic() + RETRY_S
                cause = (f"audit checkpoint by {self.user} failed ({' '.join(self.error.split())}); its {taken} device"
                         f" events wait for the next one, in {RETRY_S:.0f} s or as the agent stops")
                log.warning("%s", cause)
                self.failing += 1
                self._say((self.FAILED, cause) if self.failing == 1 else None)  # one alarm a run of failures
                return False
            finally:
                self.cpu_s += time.thread_time() - c
            with self._count:
                self.pending -= taken
            self.since, self.made, self.retry_at = time.monotonic(), self.made + 1, 0.0
            if self.failing:
                self._say((self.SEALED, f"audit checkpoint by {self.user} sealed the logs again after {self.failing}"
                                        f" failed attempt(s), the {taken} device events that waited among them"))
                self.failing = 0
            return True

    def _say(self, alarm: tuple[str, str] | None) -> None:
        """`alarm` (kind, detail) and those not yet said into alarm_log, in order, in a transaction
        of their own (a busy ledger: kept for the next attempt)."""
        self._unsaid += [alarm] if alarm else []
        if not self._unsaid:
            return
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_s) if self.path else self.conn
        try:
            with db.transaction(conn):
                conn.executemany("INSERT INTO alarm_log (at, source, alarm, detail) VALUES (?, 'audit', ?, ?)",
                                 [(time.time(), kind, detail) for kind, detail in self._unsaid])
            self._unsaid.clear()
        except sqlite3.Error as exc:
            log.info("audit checkpoint alarm kept for the next attempt (%s)", " ".join(str(exc).split()))
        finally:
            if conn is not self.conn:
                conn.close()


def _verify_checkpoints(conn) -> str | None:
    """Every link of the logs' chain (checkpoints, closes), each from the one before."""
    last: dict = {}
    after: dict = {}
    opened: dict = {}  # key-tailed log -> every group's open keys after its last link (`_open_keys`)
    for seq, action, key, parts in _links(conn):
        if parts is None:
            return f"record {seq} ({CHECKPOINT}): unreadable"
        who = f"checkpoint record {seq}" if action == CHECKPOINT else f"{_label(action, key)}: record {seq} ({action})"
        for part in [p for p in _PARTS if p in parts]:
            s, before = parts[part], last.get(part, {})
            table = _PARTS[part][0]
            try:
                if before and s["cols"] != before.get("cols"):  # a new chain (see _continue_logs)
                    before, after[part], opened[part] = {}, 0, None
                if s.get("after", after.get(part, 0)) != after.get(part, 0):
                    return (f"{who}: its seal of table {table} continues record {s['after']}, but the link before"
                            f" it is record {after.get(part, 0)}")
                was = opened.get(part) if before else None
                d = _part_digest(conn, part, "", s["cols"], s["upto"], before.get("upto"), before.get("sha256", ""),
                                 was, s.get("form", 1))
            except sqlite3.Error as exc:
                return f"{who}: table {table} cannot be read as sealed ({exc})"
            except (KeyError, TypeError, AttributeError):
                return f"{who}: its seal is unreadable"
            rows = before.get("rows", 0) + d["rows"]
            if (rows, d["sha256"]) != (s["rows"], s["sha256"]):
                what = f"{s['rows']} rows sealed, {rows} now" if rows != s["rows"] else "rows changed"
                since = f" since record {after[part]} ({before['upto']})" if before else ""
                return f"{who}: table {table} differs from its seal{since}: {what}"
            # what the next link reads: as these rows leave it (a boot none of whose rows is below the bound
            # came after the seal: it saw no row of it and left nothing of it open)
            named = s.get("boots", s.get("boots_changed"))
            if named is not None and named != {g: v for g, v in d["boots"].items() if (g in named or v[0] > 0 or v[1])
                                               and ("boots" in s or (was or {}).get(g) != v)}:
                return f"{who}: its seal of table {table} leaves other keys open than its rows do"
            last[part], after[part], opened[part] = s, seq, _open_keys(s, was)
    return None


def present(conn: sqlite3.Connection) -> bool:
    """Whether this file has an audit log (an outbox-only store, e.g. a forwarder's, has none)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='audit'").fetchone() is not None


def head(conn: sqlite3.Connection) -> str:
    """The chain head as an anchor, "SEQ:HASH" ("0:000…" for an empty log)."""
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return f"{row[0]}:{row[1]}" if row else f"0:{GENESIS}"


def anchors_path(conn: sqlite3.Connection) -> str | None:
    """`<db>.anchors` beside the ledger file (None for an in-memory ledger)."""
    path = db.file_of(conn)
    return path + ".anchors" if path else None


def anchor(conn: sqlite3.Connection, why: str) -> str:
    """Append the committed head to `<db>.anchors` (call only outside a transaction: an anchor of
    a record that then rolls back would later read as tampering); returns the head. Cheap to call
    per EPCIS document sent: a head this process already wrote is not written again."""
    if conn.in_transaction:
        raise RuntimeError("anchor the head after the commit, not inside a transaction")
    h = head(conn)
    path = anchors_path(conn)
    if path and _last_anchored.get(path) != h:  # a forwarder sending document after document: one line per head
        at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        line = f"{at} {h} {' '.join(why.split())}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        _last_anchored[path] = h
    return h


_last_anchored: dict[str, str] = {}


def parse_anchors(text: str) -> list[tuple[int | None, str]]:
    """Every anchor in a text ("SEQ:HASH" anywhere: the anchors file, a batch command's output, an
    EPCIS document), or a bare 64-hex hash → [(seq or None, hash)]."""
    found = [(int(s), h) for s, h in _ANCHOR.findall(text)]
    if not found and re.fullmatch(r"[0-9a-f]{64}", text.strip()):
        found = [(None, text.strip())]
    return found


def read_anchors(spec: str) -> list[tuple[int | None, str]]:
    """--anchor value: an anchor or hash, or a file holding anchors."""
    if _ANCHOR.fullmatch(spec.strip()) or re.fullmatch(r"[0-9a-f]{64}", spec.strip()):
        return parse_anchors(spec)
    try:
        with open(spec, encoding="utf-8", errors="replace") as f:
            found = parse_anchors(f.read())
    except OSError as exc:
        raise AuditError(f"--anchor {spec}: neither SEQ:HASH, a hash, nor a readable file ({exc.strerror})") from None
    if not found:
        raise AuditError(f"--anchor {spec}: the file holds no anchor (SEQ:HASH)")
    return found


def _verify_chain(conn) -> tuple[str | None, int, dict]:
    prev, expected_seq, n, by_seq = GENESIS, 1, 0, {}
    for seq, at, user, action, detail, prev_hash, h in conn.execute("SELECT * FROM audit ORDER BY seq"):
        if seq != expected_seq:
            return f"record {expected_seq} is missing (next is {seq})", n, by_seq
        if prev_hash != prev:
            return f"record {seq}: previous-hash link broken", n, by_seq
        if _digest(prev_hash, seq, at, user, action, detail) != h:
            return f"record {seq}: content does not match its hash", n, by_seq
        by_seq[seq] = h
        prev, expected_seq, n = h, seq + 1, n + 1
    return None, n, by_seq


def _verify_anchors(by_seq: dict, anchors) -> str | None:
    hashes = {h: s for s, h in by_seq.items()}
    last = max(by_seq, default=0)
    for seq, h in anchors:
        if seq == 0 and h == GENESIS:
            continue
        name = f"{seq}:{h[:12]}…" if seq is not None else f"{h[:12]}…"
        if seq is None:
            if h not in hashes:
                return f"anchor {name}: no record has this hash (the log was truncated or rewritten)"
        elif seq not in by_seq:
            return f"anchor {name}: record {seq} is missing, the log ends at record {last} (truncated)"
        elif by_seq[seq] != h:
            return f"anchor {name}: record {seq} has another hash (the chain was rewritten)"
    return None


def _latest_seals(conn) -> tuple[list[tuple[int, str, str, dict]], dict]:
    """(seq, action, key, seal) of the seals that must still hold — per action and key (GTIN,
    batch, location, shipment) its latest record, per batch its latest close/abort unless reopened
    since — and the batches whose trail ends reopened ({batch: seq of the reopen})."""
    master, final, reopened = {}, {}, {}
    for seq, action, text in conn.execute("SELECT seq, action, detail FROM audit ORDER BY seq"):
        try:
            detail = json.loads(text)
        except ValueError:
            continue
        if not isinstance(detail, dict):
            continue
        if action in REOPENS:
            final.pop(str(detail.get("batch_id")), None)
            reopened[str(detail.get("batch_id"))] = seq
        if action not in SEALS or "seal" not in detail or SEALS[action][0] not in detail:
            continue
        key = str(detail[SEALS[action][0]])
        if action in FINAL:
            final[key] = (seq, action, key, detail["seal"])
            reopened.pop(key, None)
        elif isinstance(detail["seal"], dict):  # per part, the latest record sealing it says what its rows are now
            for part, sealed in detail["seal"].items():
                master[(part, key)] = (seq, action, key, {part: sealed})
        else:
            master[(None, action, key)] = (seq, action, key, detail["seal"])
    finals = []
    for seq, action, key, sealed in final.values():
        # master data changed after the close (product.master) is vouched for by its own seal
        row = conn.execute("SELECT gtin FROM batch WHERE batch_id=?", (key,)).fetchone()
        later = row is not None and master.get(("product_master_row", row[0]), (0,))[0] > seq
        if later and isinstance(sealed, dict):
            sealed = {p: v for p, v in sealed.items() if p != "product_master"}
        finals.append((seq, action, key, sealed))
    return list(master.values()) + finals, reopened


def _verify_seals(conn) -> str | None:
    seals, reopened = _latest_seals(conn)
    for seq, action, key, sealed in seals:
        if not isinstance(sealed, dict):
            return f"record {seq} ({action}): its seal is unreadable"
        for part in [p for p in _PARTS if p in sealed and p not in _LOGS]:  # in _PARTS order: the first broken
            s = sealed[part]  # is the most telling; the logs' links are _verify_checkpoints' own
            try:
                now = _part_digest(conn, part, key, s["cols"], s.get("upto"))
            except (KeyError, TypeError):
                return f"record {seq} ({action}): its seal is unreadable"
            except sqlite3.Error as exc:
                return f"{_label(action, key)}: table {_PARTS[part][0]} cannot be read as sealed in record {seq} ({exc})"
            if now != {"rows": s["rows"], "sha256": s["sha256"]}:
                what = f"{s['rows']} rows sealed, {now['rows']} now" if now["rows"] != s["rows"] else "rows changed"
                return (f"{_label(action, key)}: table {_PARTS[part][0]} differs from its seal in record {seq} ({action}): {what}")
    for batch_id, seq in reopened.items():
        row = conn.execute("SELECT state FROM batch WHERE batch_id=?", (batch_id,)).fetchone()
        if row is None or row[0] in ("closed", "aborted"):
            state = row[0] if row else "missing"
            return f"batch {batch_id}: the trail ends with its reopen (record {seq}) but the ledger says {state}"
    return None


def _label(action: str, key: str) -> str:
    return {"product.add": "product", "product.master": "product", "location.set": "location",
            "ship": "shipment"}.get(action, "batch") + " " + key


def _verify_outbox(conn) -> str | None:
    from serialine.host.epcis.eventhash import event_hash
    from serialine.host.epcis.outbox import body_text
    try:
        rows = conn.execute("SELECT seq, batch_id, event_id, body FROM epcis_outbox ORDER BY seq")
    except sqlite3.OperationalError:
        return None  # no outbox in this ledger
    bad, first = 0, None
    for seq, batch_id, event_id, body in rows:
        try:
            event = json.loads(body_text(body))
            ok = event.get("eventID") == event_id and event_hash(event) == event_id
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            bad += 1
            first = first or (seq, batch_id)
    if bad:
        return (f"outbox: {bad} event(s) whose eventID does not match their body, first at outbox seq"
                f" {first[0]} (batch {first[1]})")
    return None


def verify(conn: sqlite3.Connection, anchors=(), strict: bool = False) -> tuple[bool, int, str]:
    """→ (ok, records checked, one line naming the first break). Checks the chain, that every
    anchor ([(seq or None, hash)]; plus `<db>.anchors` if present) is in it, the sealed tables and
    every outbox eventID; `strict`: also that an anchor vouches for the head (a record appended
    behind the project's back has none)."""
    problem, n, by_seq = _verify_chain(conn)
    if problem:
        return False, n, problem
    anchors = list(anchors)
    trail = anchors_path(conn)
    if trail and os.path.exists(trail):
        with open(trail, encoding="utf-8", errors="replace") as f:
            anchors += parse_anchors(f.read())
    try:
        problem = (_verify_anchors(by_seq, anchors) or _verify_seals(conn) or _verify_checkpoints(conn)
                   or _verify_outbox(conn) or _verify_derived(conn) or _verify_signatures(conn))
    except (KeyError, TypeError, AttributeError) as exc:  # a record whose chain holds but whose seal is malformed
        problem = f"a sealed record's detail is malformed ({type(exc).__name__}: {exc})"
    if problem:
        return False, n, problem
    (events,) = conn.execute("SELECT count(*) FROM epcis_outbox").fetchone() if _has(conn, "epcis_outbox") else (0,)
    newest = max((s if s is not None else {h: q for q, h in by_seq.items()}.get(h, 0) for s, h in anchors), default=0)
    if strict and n > newest:
        return False, n, (f"record {newest + 1}" + (f" to {n}" if n > newest + 1 else "")
                          + ": no anchor vouches for it (appended after the newest anchor)")
    # records after the newest anchor are only as good as the file: nothing outside vouches for them yet
    tail = f", {n - newest} record(s) after the newest anchor" if anchors and n > newest else ""
    return True, n, (f"audit log intact: {n} records, head {head(conn)}; {len(anchors)} anchor(s) found{tail};"
                     f" sealed tables match; {events} outbox eventIDs match their bodies;"
                     " serial states follow their history, passed units their device's word"
                     + (f"; {signed} signature(s) match their records" if (signed := _signatures(conn)) else ""))


def _signatures(conn) -> int:
    return conn.execute("SELECT count(*) FROM signature").fetchone()[0] if _has(conn, "signature") else 0


def _verify_signatures(conn) -> str | None:
    """The users are what their trail says, every signature still matches its record's content
    (host/users.py, host/signatures.py)."""
    if not _has(conn, "signature"):
        return None
    from . import signatures, users
    return users.verify(conn) or signatures.verify(conn)


def _verify_derived(conn) -> str | None:
    """What the ledger derives, recomputed from the append-only logs it derives from (covered by
    seals and checkpoints): a serial's state is where its history ends, each step from the one
    before; a serial ever commissioned belongs to a PASSED unit; a PASSED unit has its device's
    UNIT_OUTCOME saying so, or a person's `unit.resolve` record. So a unit forged good while its
    batch runs is caught even after the close seals the forgery."""
    if not all(_has(conn, t) for t in ("serial", "serial_history", "unit_row", "device_event")):
        return None
    from .db import TRANSITIONS
    legal = set(TRANSITIONS)
    names = db.SERIAL_STATES
    key = end = serial_id = now = None
    ended_out = 0  # serials whose history ends away from 'available'

    def closed(key, now, end):
        has_row, state = now
        if not has_row:
            return f"serial {key[0]}/{key[1]}: it has a history but no row"
        if state != end:
            return f"serial {key[0]}/{key[1]}: state {state}, but its history ends {end}"
        return None
    # each row says the state reached; the one left is where the row before ended (db.SERIAL_HISTORY),
    # so a missing step shows as a change the ledger never makes. The serial's row and a commissioned
    # one's unit come along by serial_id (one statement, not a lookup per serial)
    for sid, gtin, serial, code, has_row, state, outcome in conn.execute(
            "SELECT h.serial_id, coalesce(s.gtin, '?'), coalesce(s.serial, 'serial_id ' || h.serial_id), h.state,"
            " s.serial_id IS NOT NULL, s.state, CASE WHEN h.state = ? THEN"
            " (SELECT outcome FROM unit_row WHERE serial_id = h.serial_id) END"
            " FROM serial_history h LEFT JOIN serial s ON s.serial_id = h.serial_id ORDER BY h.serial_id, h.seq",
            (names.index("commissioned"),)):
        if sid != serial_id:
            if key is not None:
                problem = closed(key, now, end)
                if problem:
                    return problem
                ended_out += end != "available"
            key, serial_id, now, end = (gtin, serial), sid, (has_row, state), "available"  # every serial is born available
        old, new = end, names[code] if type(code) is int and 0 <= code < len(names) else repr(code)
        if (old, new) not in legal:
            return f"serial {gtin}/{serial}: its history holds {old} -> {new}, a change the ledger never makes"
        end = new
        if new == "commissioned" and outcome != "PASSED":
            return f"serial {gtin}/{serial}: commissioned, but its unit is not PASSED"
    if key is not None:
        problem = closed(key, now, end)
        if problem:
            return problem
        ended_out += end != "available"
    (used,) = conn.execute("SELECT count(*) FROM serial WHERE state <> 'available'").fetchone()
    if used != ended_out:
        return f"{used - ended_out} serial(s) left 'available' without any history"
    said = devevents.passed_units(conn)
    for (detail,) in conn.execute("SELECT detail FROM audit WHERE action = 'unit.resolve'"):
        d = json.loads(detail)
        if isinstance(d, dict) and d.get("outcome") == "PASSED":
            device, boot, seq = str(d.get("unit", "")).rsplit(":", 2)
            said.add((device, int(boot), int(seq)))
    for device, boot, seq in conn.execute("SELECT device_id, boot_id, unit_seq FROM unit_row WHERE outcome = 'PASSED'"):
        if (device, boot, seq) not in said:
            return f"unit {device}:{boot}:{seq} is PASSED, but neither its device nor a unit.resolve record says so"
    return None


def _has(conn, table: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name=?",  # unit: a view
                        (table,)).fetchone() is not None


def _since(text: str) -> _dt.datetime:
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AuditError(f"--since {text!r}: want an ISO date or time, e.g. 2026-12-01T08:00") from None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def records(conn: sqlite3.Connection, batch: str | None = None, since: str | None = None,
            user: str | None = None, action: str | None = None) -> list[tuple]:
    """(seq, at, user, action, detail) of the trail, oldest first. `batch`: records naming the batch,
    and rework of its packs and containers; `action`: exact, or a prefix ending in '.' ("rework.")."""
    sql = "SELECT seq, at, user, action, detail FROM audit WHERE 1"
    args: dict = {}
    if batch is not None:
        sql += (" AND (json_extract(detail, '$.batch_id') = :batch"
                " OR EXISTS (SELECT 1 FROM serial s WHERE s.batch_id = :batch AND s.gtin = json_extract(audit.detail, '$.gtin')"
                " AND s.serial = json_extract(audit.detail, '$.target'))"
                " OR EXISTS (SELECT 1 FROM container c WHERE c.batch_id = :batch AND c.sscc = json_extract(audit.detail, '$.target')))")
        args["batch"] = batch
    if user is not None:
        sql += " AND user = :user"
        args["user"] = user
    if action is not None:
        sql += " AND (action = :action OR (substr(:action, -1) = '.' AND substr(action, 1, length(:action)) = :action))"
        args["action"] = action
    rows = conn.execute(sql + " ORDER BY seq", args).fetchall()
    if since is not None:
        t = _since(since)
        rows = [r for r in rows if _dt.datetime.fromisoformat(r[1]) >= t]
    return rows
