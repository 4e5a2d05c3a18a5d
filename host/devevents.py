"""Device events as the ledger stores them (table device_event, DDL in host/db.py): every device
event once, keyed by the device's identity, the durable copy acknowledged to the device.

A row is (boot_ref, event_seq, msg, unit_seq, body, body2, at):
- boot_ref: the device boot (device_id, boot_id) as a small integer, `device_boot_ref.ref`, which
  also holds the boot's t0 (ms since 1970 when the ledger first saw it; 0 for boots seen before);
- msg: the protocol's message id (protocol/schema.py MESSAGES; a name it lacks is kept as text);
- body, body2: the event's other fields (not event_seq, unit_seq: columns) as the schema lays them
  out, packed into one or two 64-bit integers (`_Packing`): about 10 bytes instead of ~30 of JSON,
  and still plain integers SQL can read (`sql_field`). An event whose fields are not exactly its
  message's (a quarantined one, a message too wide) has its JSON text in `body`, body2 NULL, as
  every row stored before did (db._migrate_device_event keeps those texts byte for byte);
- at: when the host stored it, ms since the boot's t0 (2-4 bytes, not 6 of ms since 1970: its
  received_at is t0 + at); a row migrated from before the compact form keeps its time.time()
  seconds, a REAL, exactly as the seals made then hashed it (`seconds`, `received_sql` read both).

Everything that reads the table reads it through this module. The views render every row in the
columns seals made before cover: device_event_v1 (`DEVICE_EVENT_V1`, `SEALED_V1`: device ids, JSON
bodies, seconds) and device_event_v2 (`DEVICE_EVENT_V2`: received_at as ms since 1970); host/audit.py
reads the old seals through them."""

from __future__ import annotations

import json
import operator
import sqlite3
import struct
import time
from typing import Iterator, NamedTuple

from serialine.protocol import schema

INSERT = "INSERT OR IGNORE INTO device_event VALUES (?,?,?,?,?,?,?)"
IN_COLUMNS = ("event_seq", "unit_seq")  # the body does not repeat them

MSG: dict[str, int] = {m.name: m.msg_type for m in schema.MESSAGES}  # name -> the protocol's id
NAME: dict[int, str] = {m.msg_type: m.name for m in schema.MESSAGES}

# The columns seals made before this storage covered (the view device_event_v1 gives them back; its
# rows ascend (device_id, boot_id) with boot_ref for migrated rows)
SEALED_V1 = ("device_id", "boot_id", "event_seq", "msg_name", "unit_seq", "body", "received_at")

_QQ = struct.Struct("<qq")
_WORD = 8


class _Packing:
    """One message's non-column fields laid out in two 64-bit words: schema order, little-endian,
    a field never straddles a word (padded to the next)."""
    __slots__ = ("msg", "names", "fields", "unit", "st", "two", "bits", "values")

    def __init__(self, m: schema.Message):
        self.msg = m.msg_type
        flat = schema.flat_fields(m.payload)
        self.fields = len(flat)
        self.unit = any(f.name == "unit_seq" for f in flat)
        rest = [f for f in flat if f.name not in IN_COLUMNS]
        if any(f.kind != "int" for f in rest):
            raise ValueError(m.name)
        fmt, off, bits = "<", 0, {}
        for f in rest:
            if off // _WORD != (off + f.size - 1) // _WORD:
                fmt += "x" * (_WORD - off % _WORD)
                off += _WORD - off % _WORD
            bits[f.name] = (off // _WORD, 8 * (off % _WORD), 8 * f.size, f.fmt.islower())
            fmt += {"L": "I", "l": "i"}.get(f.fmt, f.fmt)
            off += f.size
        if off > 2 * _WORD:
            raise ValueError(m.name)
        self.names = tuple(f.name for f in rest)
        # the fields' values in order, as a tuple (itemgetter gives one name's value alone)
        get = operator.itemgetter(*self.names) if self.names else (lambda f: ())
        self.values = get if len(self.names) != 1 else (lambda f: (get(f),))
        self.st = struct.Struct(fmt + "x" * (2 * _WORD - off))
        self.two = off > _WORD
        self.bits = bits


def _packings() -> dict[str, _Packing]:
    out = {}
    for m in schema.MESSAGES:
        try:
            out[m.name] = _Packing(m)
        except ValueError:  # strings, or wider than two words: JSON
            pass
    return out


_PACK = _packings()
_BY_ID = {p.msg: p for p in _PACK.values()}

# How this release packs, message by message: a packed row reads right only under the layout it was
# packed with, so a ledger records it (table device_event_layout) and a release that packs another
# way refuses the ledger instead of misreading its events (`check_layout`, at every db.connect)
LAYOUT = ";".join(f"{p.msg}:{p.st.format}:{','.join(p.names)}" for p in sorted(_PACK.values(), key=lambda p: p.msg))
LAYOUT_DDL = "CREATE TABLE IF NOT EXISTS device_event_layout (layout TEXT NOT NULL)"


def check_layout(conn: sqlite3.Connection) -> None:
    """Record this release's packing layout in a ledger without packed rows; refuse (one line,
    nothing changed) a ledger whose packed rows were written under another one."""
    conn.execute(LAYOUT_DDL)
    stored = [layout for (layout,) in conn.execute("SELECT layout FROM device_event_layout")]
    if stored == [LAYOUT]:
        return
    packed = conn.execute("SELECT 1 FROM device_event WHERE typeof(body) = 'integer' LIMIT 1").fetchone()
    if stored and packed:
        raise sqlite3.DatabaseError(
            "this ledger's device events were packed by a release whose protocol schema lays them out"
            " otherwise; this release would misread them: open the ledger with the release that wrote it")
    conn.execute("DELETE FROM device_event_layout")
    conn.execute("INSERT INTO device_event_layout (layout) VALUES (?)", (LAYOUT,))


def _json(fields: dict) -> str:
    """The JSON body of before (host/ledger.py wrote it so): compact, flat ints formatted directly."""
    items = [(k, v) for k, v in fields.items() if k not in IN_COLUMNS]
    if all(type(v) is int for _, v in items):
        return "{" + ",".join([f'"{k}":{v}' for k, v in items]) + "}"
    return json.dumps(dict(items), separators=(",", ":"), default=str)


def row(ref: int, name: str, f: dict, at: int) -> tuple:
    """The stored row of one sequenced event (fields with event_seq) of the boot `ref`, received
    `at` ms after the boot's t0 (`stamp`: once a poll, not once a row)."""
    if "event_seq" not in f:
        raise KeyError("event_seq")
    return rows(ref, ((name, f),), at)[0]


def rows(ref: int, msgs, at: int) -> list[tuple]:
    """`row` of each sequenced message of a poll's [(name, fields)], in order (those without
    event_seq have none): one loop, not a call a row."""
    out, pack, unpack = [], _PACK.get, _QQ.unpack
    for name, f in msgs:
        if "event_seq" not in f:
            continue
        p = pack(name)
        if p is not None and len(f) == p.fields and (not p.unit or "unit_seq" in f):  # exactly its schema's fields
            try:
                body, body2 = unpack(p.st.pack(*p.values(f)))
            except (KeyError, struct.error):
                pass
            else:
                out.append((ref, f["event_seq"], p.msg, f.get("unit_seq"), body, body2 if p.two else None, at))
                continue
        out.append((ref, f["event_seq"], MSG.get(name, name), f.get("unit_seq"), _json(f), None, at))
    return out


def stamp(t0: int, now: float) -> int:
    """A row's `at`: ms since its boot's t0 (`boot`) at `now` (time.time())."""
    return int(now * 1000) - t0


def fields(msg, body, body2=None) -> dict:
    """A stored event's fields but event_seq and unit_seq (rows stored long ago may repeat them)."""
    if type(body) is int:
        p = _BY_ID[msg]
        return dict(zip(p.names, p.st.unpack(_QQ.pack(body, body2 or 0))))
    return json.loads(body)


def seconds(at, t0: int = 0) -> float:
    """A row's time (`at`, of a boot whose t0 is `t0`) as time.time() seconds."""
    return at if type(at) is float else (t0 + at) / 1000


def received_sql(e: str = "e", r: str = "r") -> str:
    """SQL: the time.time() seconds a row was received (e: device_event, r: its device_boot_ref)."""
    return f"(CASE WHEN typeof({e}.at) = 'real' THEN {e}.at ELSE ({r}.t0 + {e}.at) / 1000.0 END)"


def _received_ms_sql(e: str = "e", r: str = "r") -> str:
    """SQL: received_at as the compact form before stored it (ms since 1970; a migrated row's REAL
    seconds: its boot's t0 is 0, and 0 + x is x)."""
    return f"({r}.t0 + {e}.at)"



def name(msg) -> str:
    return NAME.get(msg, msg) if type(msg) is int else msg


def ids(*names: str) -> str:
    """SQL list of the msg values of these message names, e.g. for `msg IN (...)`."""
    return ", ".join(str(MSG[n]) for n in names)


def _raw(p: _Packing, field: str, body: str, body2: str) -> str:
    word, shift, width, signed = p.bits[field]
    raw = f"(({body2 if word else body} >> {shift}) & {(1 << width) - 1})"
    return f"({raw} - (({raw} & {1 << (width - 1)}) << 1))" if signed else raw  # two's complement


def sql_field(name: str, field: str, body: str = "body", body2: str = "body2") -> str:
    """SQL expression of one field of `name`'s rows, packed or JSON (NULL where it has none)."""
    return (f"(CASE WHEN typeof({body}) = 'integer' THEN {_raw(_PACK[name], field, body, body2)}"
            f" WHEN json_valid({body}) THEN json_extract({body}, '$.{field}') END)")


def _json_sql(p: _Packing, body: str, body2: str) -> str:
    """SQL: a packed row's body as the JSON text `_json` writes for it."""
    return "json_object(" + ", ".join(f"'{n}', {_raw(p, n, body, body2)}" for n in p.names) + ")"


def _pack_sql(p: _Packing, text: str) -> tuple[str, str]:
    """SQL: (body, body2) packed from a JSON body's fields (the caller checks it renders back)."""
    words: list[list[str]] = [[], []]
    for n in p.names:
        word, shift, width, _ = p.bits[n]
        words[word].append(f"((json_extract({text}, '$.{n}') & {(1 << width) - 1}) << {shift})")
    return " | ".join(words[0]) or "0", (" | ".join(words[1]) or "0") if p.two else "NULL"


def _msg_sql(col: str) -> str:
    """SQL: a message name as stored in `msg` (its id; a name the schema lacks as it is)."""
    return f"CASE {col} " + " ".join(f"WHEN '{n}' THEN {t}" for n, t in MSG.items()) + f" ELSE {col} END"


# The rows in the columns of before (seals made then cover those: host/audit.py reads this view).
DEVICE_EVENT_V1 = (
    "CREATE VIEW IF NOT EXISTS device_event_v1 AS SELECT r.device_id AS device_id, r.boot_id AS boot_id,"
    " e.event_seq AS event_seq, CASE WHEN typeof(e.msg) = 'integer' THEN CASE e.msg "
    + " ".join(f"WHEN {t} THEN '{n}'" for t, n in NAME.items()) + " END ELSE e.msg END AS msg_name,"
    " e.unit_seq AS unit_seq, CASE WHEN typeof(e.body) = 'integer' THEN CASE e.msg "
    + " ".join(f"WHEN {p.msg} THEN '' || {_json_sql(p, 'e.body', 'e.body2')}" for p in _PACK.values())  # text, not JSON
    + f" END ELSE e.body END AS body, {received_sql()} AS received_at, e.boot_ref AS boot_ref"
    " FROM device_event e JOIN device_boot_ref r ON r.ref = e.boot_ref")
# The rows in the columns of the compact form before `at` (received_at ms since 1970): the chain of
# links sealed them so before and goes on so (host/audit.py log:device_event2 reads this view)
SEALED_V2 = ("boot_ref", "event_seq", "msg", "unit_seq", "body", "body2", "received_at")
DEVICE_EVENT_V2 = (
    "CREATE VIEW IF NOT EXISTS device_event_v2 AS SELECT e.boot_ref AS boot_ref, e.event_seq AS event_seq,"
    " e.msg AS msg, e.unit_seq AS unit_seq, e.body AS body, e.body2 AS body2,"
    f" {_received_ms_sql()} AS received_at FROM device_event e JOIN device_boot_ref r ON r.ref = e.boot_ref")


def migrate_v1_sql(old: str) -> str:
    """SQL: every row of a device_event table of before (`old`, device_boot_ref filled) into the
    new one; a body in the form `_json` writes is packed (checked by the caller against the view)."""
    body = ["CASE"]
    body2 = ["CASE"]
    for p in _PACK.values():
        w1, w2 = _pack_sql(p, "o.body")
        fits = (f"o.msg_name = '{NAME[p.msg]}' AND json_valid(o.body)"
                f" AND {_json_sql(p, f'({w1})', f'({w2})' if p.two else '0')} = o.body")
        body.append(f"WHEN {fits} THEN {w1}")
        body2.append(f"WHEN {fits} THEN {w2}")
    return ("INSERT INTO device_event SELECT r.ref, o.event_seq, " + _msg_sql("o.msg_name") + ", o.unit_seq, "
            + " ".join(body) + " ELSE o.body END, " + " ".join(body2) + " END, o.received_at"
            f" FROM {old} o JOIN device_boot_ref r ON r.device_id = o.device_id AND r.boot_id = o.boot_id"
            " ORDER BY r.ref, o.event_seq")


# --- device boots as small integers ---

def find_ref(conn: sqlite3.Connection, device_id: str, boot_id: int) -> int | None:
    row_ = conn.execute("SELECT ref FROM device_boot_ref WHERE device_id=? AND boot_id=?",
                        (device_id, boot_id)).fetchone()
    return None if row_ is None else row_[0]


def boot(conn: sqlite3.Connection, device_id: str, boot_id: int) -> tuple[int, int]:
    """The boot's (ref, t0), given on first use, t0 then (caller's transaction: not cached, a
    rollback takes it back)."""
    got = conn.execute("SELECT ref, t0 FROM device_boot_ref WHERE device_id=? AND boot_id=?",
                       (device_id, boot_id)).fetchone()
    if got is None:
        t0 = int(time.time() * 1000)
        got = conn.execute("INSERT INTO device_boot_ref (device_id, boot_id, t0) VALUES (?,?,?)",
                           (device_id, boot_id, t0)).lastrowid, t0
    return got


def boot_ref(conn: sqlite3.Connection, device_id: str, boot_id: int) -> int:
    """The boot's ref (`boot`)."""
    return boot(conn, device_id, boot_id)[0]


# --- reading ---

class Event(NamedTuple):
    device_id: str
    boot_id: int
    event_seq: int
    msg_name: str
    unit_seq: int | None
    fields: dict
    received_at: float  # time.time() seconds


_SELECT = ("SELECT r.device_id, r.boot_id, e.event_seq, e.msg, e.unit_seq, e.body, e.body2, e.at, r.t0"
           " FROM device_event e JOIN device_boot_ref r ON r.ref = e.boot_ref")


def events(conn: sqlite3.Connection, *, device_id: str | None = None, boot_id: int | None = None,
           names: tuple[str, ...] = (), unit_seq: int | None = None, after_seq: int | None = None,
           where: str = "", args: tuple = (), order: str = "e.boot_ref, e.event_seq",
           limit: int | None = None) -> Iterator[Event]:
    """Stored events, decoded, in `order` (SQL over e = device_event, r = device_boot_ref);
    device_id with boot_id: that boot's only. `where`/`args`: a further SQL condition."""
    sql, params = _SELECT + " WHERE 1", []
    if device_id is not None:
        ref = find_ref(conn, device_id, boot_id)
        if ref is None:
            return
        sql += " AND e.boot_ref = ?"
        params.append(ref)
    if names:
        sql += f" AND e.msg IN ({ids(*names)})"
    if unit_seq is not None:
        sql += " AND e.unit_seq = ?"
        params.append(unit_seq)
    if after_seq is not None:
        sql += " AND e.event_seq > ?"
        params.append(after_seq)
    if where:
        sql += f" AND ({where})"
        params.extend(args)
    sql += f" ORDER BY {order}" + (f" LIMIT {int(limit)}" if limit is not None else "")
    for dev, b, seq, msg, unit, body, body2, at, t0 in conn.execute(sql, params):
        yield Event(dev, b, seq, name(msg), unit, fields(msg, body, body2), seconds(at, t0))


def top_seq(conn: sqlite3.Connection, device_id: str, boot_id: int) -> int | None:
    """The highest event_seq stored of that boot."""
    ref = find_ref(conn, device_id, boot_id)
    if ref is None:
        return None
    return conn.execute("SELECT max(event_seq) FROM device_event WHERE boot_ref=?", (ref,)).fetchone()[0]


def last_unit(conn: sqlite3.Connection, device_id: str, boot_id: int, msg_name: str) -> int:
    """The highest unit_seq of that boot's `msg_name` events (-1: none)."""
    ref = find_ref(conn, device_id, boot_id)
    if ref is None:
        return -1
    return conn.execute("SELECT COALESCE(max(unit_seq), -1) FROM device_event WHERE boot_ref=? AND msg=?",
                        (ref, MSG[msg_name])).fetchone()[0]


def passed_units(conn: sqlite3.Connection) -> set[tuple[str, int, int]]:
    """(device_id, boot_id, unit_seq) of every unit whose device said PASSED (its UNIT_OUTCOME)."""
    return {(d, b, u) for d, b, u in conn.execute(
        "SELECT r.device_id, r.boot_id, e.unit_seq FROM device_event e JOIN device_boot_ref r ON r.ref = e.boot_ref"
        f" WHERE e.msg = {MSG['UNIT_OUTCOME']} AND {sql_field('UNIT_OUTCOME', 'outcome', 'e.body', 'e.body2')}"
        f" = {int(schema.Outcome.PASSED)}")}


def boots_of_batch_sql(key: str = ":key") -> str:
    """SQL: the refs of a batch's device boots (those it opened a session with, or has units of)."""
    return ("boot_ref IN (SELECT ref FROM device_boot_ref WHERE (device_id, boot_id) IN"
            f" (SELECT device_id, boot_id FROM device_boot WHERE batch_id = {key}"
            f" UNION SELECT device_id, boot_id FROM unit WHERE batch_id = {key}))")
