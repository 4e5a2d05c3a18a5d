"""The one place the ledger hands events to EPCIS: builds the event and puts it in the outbox
inside the caller's transaction, so the ledger change and its event commit (or vanish) together."""

from __future__ import annotations

import datetime as _dt
import sqlite3

from serialine.host.epcis import events, outbox

from .masterdata import Batch


def context_for(batch: Batch, read_point: str | None = None, biz_location: str | None = None):
    """Read point / business location: configured SGLNs, else the company's own (location 0)."""
    p = batch.company_prefix
    default = f"urn:epc:id:sgln:{p}.{'0' * (12 - len(p))}.0"
    return events.Context(read_point=read_point or default, biz_location=biz_location or default)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def sgtin(batch: Batch, serial: str) -> str:
    return events.sgtin_urn(batch.gtin, serial, batch.company_prefix_len)


def sscc(batch: Batch, code: str) -> str:
    return events.sscc_urn(code, batch.company_prefix_len)


def commissioned(conn: sqlite3.Connection, ctx, batch: Batch, serials: list[str]) -> None:
    if serials:
        ev = events.commissioning(ctx, [sgtin(batch, s) for s in serials], batch.lot, batch.expiry, _now())
        outbox.enqueue(conn, batch.batch_id, ev)


def packed(conn, ctx, batch: Batch, parent_sscc: str, children: list[str]) -> None:
    if children:
        outbox.enqueue(conn, batch.batch_id, events.packing(ctx, sscc(batch, parent_sscc), children, _now()))


def unpacked(conn, ctx, batch: Batch, parent_sscc: str, children: list[str]) -> None:
    if children:
        outbox.enqueue(conn, batch.batch_id, events.unpacking(ctx, sscc(batch, parent_sscc), children, _now()))


def decommissioned(conn, ctx, batch: Batch, serials: list[str], kind: str) -> None:
    if serials:
        ev = events.decommissioning(ctx, [sgtin(batch, s) for s in serials], kind, _now())
        outbox.enqueue(conn, batch.batch_id, ev)
