"""The one place the ledger hands events to EPCIS: builds the event and puts it in the outbox
inside the caller's transaction, so the ledger change and its event commit (or vanish) together.

Order is what happened: one clock per batch gives each event a time strictly after the batch's
previous event (millisecond steps), and a case filled by packs that pass in a transaction waits
(`after_commissioning`) until those packs' commissioning event is out, since the ledger reports
a transaction's commissioning once, at its end."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import sqlite3

from serialine.host.epcis import events, outbox

from .masterdata import Batch, time_zone


def context_for(batch: Batch, when: _dt.datetime | None = None):
    """Where and when the batch's events happen: its site's SGLN (bizLocation), its line's read
    point and the site's time zone, so each event gets the offset in force at its own time
    (`tz_offset` is the offset at `when`, default now). A batch made before any site was
    configured keeps the company's own location 0 in UTC."""
    if batch.site is None:
        p = batch.company_prefix
        default = f"urn:epc:id:sgln:{p}.{'0' * (12 - len(p))}.0"
        return events.Context(read_point=default, biz_location=default)
    time_zone(batch.tz)  # an unknown zone is said the master data's way
    ctx = events.Context(read_point=batch.read_point, biz_location=batch.site, zone=batch.tz)
    return dataclasses.replace(ctx, tz_offset=ctx.offset_at(when or _now()))


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


_MS = _dt.timedelta(milliseconds=1)


def event_time(conn: sqlite3.Connection, batch: Batch) -> _dt.datetime:
    """Now (to the millisecond), but always after the batch's last event in the outbox."""
    row = conn.execute("SELECT body FROM epcis_outbox WHERE batch_id=? ORDER BY seq DESC LIMIT 1",
                       (batch.batch_id,)).fetchone()
    return _after(_dt.datetime.fromisoformat(outbox.event_time_of(row[0])) if row else None)


def _after(last: _dt.datetime | None) -> _dt.datetime:
    now = _now()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    return last + _MS if last is not None and now <= last else now


def _enqueue(conn, batch: Batch, builds) -> None:
    """build(when) -> event of each build, enqueued in order, each at the batch's next instant:
    after the first, the one after the event just added (the outbox's last of the batch, so
    event_time need not read it back)."""
    when = None
    for build in builds:
        when = event_time(conn, batch) if when is None else _after(when)
        if not outbox.enqueue(conn, batch.batch_id, build(when)):
            when = None  # not added: the batch's last event is another


_WAITING = """CREATE TEMP TABLE IF NOT EXISTS epcis_waiting (
    batch_id TEXT NOT NULL, parent TEXT NOT NULL, children TEXT NOT NULL)"""  # per connection; rolls back with it
_MAYBE_WAITING: set[int] = set()  # id() of connections that may hold rows there (a hint: skips the query)


def _waiting(conn, ctx, batch: Batch) -> list:
    """The builds of the batch's packings that waited for a commissioning (taken out of waiting)."""
    if id(conn) not in _MAYBE_WAITING:
        return []
    conn.execute(_WAITING)
    rows = conn.execute("SELECT rowid, parent, children FROM temp.epcis_waiting WHERE batch_id=? ORDER BY rowid",
                        (batch.batch_id,)).fetchall()
    if rows:
        conn.execute("DELETE FROM temp.epcis_waiting WHERE batch_id=?", (batch.batch_id,))
    if not conn.execute("SELECT 1 FROM temp.epcis_waiting LIMIT 1").fetchone():
        _MAYBE_WAITING.discard(id(conn))
    return [_packing(ctx, sscc(batch, parent), json.loads(children)) for _, parent, children in rows]


def _packing(ctx, parent: str, children: list[str]):
    return lambda when: events.packing(ctx, parent, children, when)


def sgtin(batch: Batch, serial: str) -> str:
    return events.sgtin_urn(batch.gtin, serial, batch.company_prefix_len)


def sgtins(batch: Batch, serials: list[str]) -> list[str]:
    """sgtin of each serial (a poll's or a case's: checked at once)."""
    return events.sgtin_urns(batch.gtin, serials, batch.company_prefix_len)


def sscc(batch: Batch, code: str) -> str:
    return events.sscc_urn(code, batch.company_prefix_len)


def commissioned(conn: sqlite3.Connection, ctx, batch: Batch, serials: list[str]) -> None:
    """ObjectEvent ADD for packs that passed; then the packing of cases they filled."""
    builds = []
    if serials:
        epcs = sgtins(batch, serials)
        builds.append(lambda when: events.commissioning(ctx, epcs, batch.lot, batch.expiry, when))
    _enqueue(conn, batch, builds + _waiting(conn, ctx, batch))


def packed(conn, ctx, batch: Batch, parent_sscc: str, children: list[str],
           after_commissioning: bool = False) -> None:
    """AggregationEvent ADD. after_commissioning: children passed in this transaction and their
    commissioning is still to come (commissioned() releases it)."""
    if not children:
        return
    if after_commissioning:
        conn.execute(_WAITING)
        _MAYBE_WAITING.add(id(conn))
        conn.execute("INSERT INTO temp.epcis_waiting VALUES (?, ?, ?)",
                     (batch.batch_id, parent_sscc, json.dumps(children)))
        return
    _enqueue(conn, batch, _waiting(conn, ctx, batch) + [_packing(ctx, sscc(batch, parent_sscc), children)])


def unpacked(conn, ctx, batch: Batch, parent_sscc: str, children: list[str]) -> None:
    if children:
        _enqueue(conn, batch, _waiting(conn, ctx, batch) + [
            lambda when: events.unpacking(ctx, sscc(batch, parent_sscc), children, when)])


def sampled(conn, ctx, batch: Batch, serials: list[str]) -> None:
    """ObjectEvent OBSERVE bizStep sampling: the packs are taken as samples (end of life follows)."""
    if serials:
        epcs = sgtins(batch, serials)
        _enqueue(conn, batch, [lambda when: events.sampling(ctx, epcs, when)])


def decommissioned(conn, ctx, batch: Batch, serials: list[str], kind: str) -> None:
    if serials:
        epcs = sgtins(batch, serials)
        _enqueue(conn, batch, [lambda when: events.decommissioning(ctx, epcs, kind, when)])
