"""Batch release: the batch closes, QA reviews its record and signs "reviewed", a second person signs
"released". The batch record (`batch_record`) is what both sign: its content hash is bound into each
signature (host/signatures.py), so changing the record afterwards fails `serialine audit verify`.

Where the market wants the batch's data uploaded before the packs may leave (EU FMD: the EMVS must
know the serials before release), the release is refused while any of the batch's EPCIS events is
still in the outbox undelivered."""

from __future__ import annotations

import datetime as _dt
import sqlite3

from . import gs1, reconcile, signatures
from .masterdata import PROFILES, get_batch

# parts of the record shown with it but not signed: delivery moves on after release, signatures follow each other
UNSIGNED = ("delivery", "signatures", "release")
LIFECYCLE = ("batch.create", "batch.start", "batch.close", "batch.abort", "batch.reopen", "unit.resolve")


class ReleaseError(ValueError):
    pass


def upload_before_release(market: str) -> bool:
    """Whether the market wants the batch's data delivered upstream before release (MarketProfile)."""
    profile = PROFILES.get(market)
    return bool(profile and profile.upload_before_release)


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def batch_record(conn: sqlite3.Connection, batch_id: str) -> dict:
    """The batch record as one dict (what QA reviews and signs; the console renders it): product,
    batch master data, units by outcome and reason, serials by state, containers, rework, lifecycle,
    alarms while it was open, reconciliation — and, not signed, EPCIS delivery, signatures, release."""
    b = get_batch(conn, batch_id)
    created_at, closed_at = conn.execute("SELECT created_at, closed_at FROM batch WHERE batch_id=?",
                                         (batch_id,)).fetchone()
    name, market, nhrn_ai, nhrn = conn.execute("SELECT name, market, nhrn_ai, nhrn FROM product WHERE gtin=?",
                                               (b.gtin,)).fetchone()
    units = [{"outcome": o, "reason": r, "verdict_reason": v, "test": bool(t), "count": n} for o, r, v, t, n in conn.execute(
        "SELECT COALESCE(outcome, 'NONE'), reason, verdict_reason, test, count(*) FROM unit_row WHERE batch_id=?"
        " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4", (batch_id,))]
    report = reconcile.reconcile(conn, batch_id)
    containers = [{"sscc": s, "level": lv, "parent": p, "state": st, "partial": bool(pt), "closed_at": ca,
                   "packs": n, "children": k} for s, lv, p, st, pt, ca, n, k in conn.execute(
        "SELECT c.sscc, c.level, (SELECT sscc FROM container WHERE container_id = c.parent_id), c.state, c.partial,"
        " c.closed_at, (SELECT count(*) FROM packed_row WHERE container_id = c.container_id),"
        " (SELECT count(*) FROM container WHERE parent_id = c.container_id)"
        " FROM container c WHERE c.batch_id=? ORDER BY c.container_id", (batch_id,))]
    rework = [{"at": at, "user": u, "action": a, "target": t, "reason": r} for at, u, a, t, r in conn.execute(
        "SELECT at, user, action, target, reason FROM rework WHERE target IN (SELECT serial FROM serial WHERE"
        " batch_id=?1) OR target IN (SELECT sscc FROM container WHERE batch_id=?1) ORDER BY rework_id", (batch_id,))]
    history = [{"seq": seq, "at": at, "user": u, "action": a, "reason": _reason(d)} for seq, at, u, a, d in conn.execute(
        "SELECT seq, at, user, action, detail FROM audit WHERE action IN (%s) AND json_extract(detail, '$.batch_id') = ?"
        " ORDER BY seq" % ",".join("?" * len(LIFECYCLE)), (*LIFECYCLE, batch_id))]
    start, end = _epoch(created_at), _epoch(closed_at)
    alarms = [{"at": _dt.datetime.fromtimestamp(at, _dt.timezone.utc).isoformat(timespec="milliseconds"),
               "source": s, "alarm": a, "detail": d} for at, s, a, d in conn.execute(
        "SELECT at, source, alarm, detail FROM alarm_log WHERE at >= ? AND (? IS NULL OR at < ?) ORDER BY alarm_id",
        (start, end, end))] if end is not None else []  # an open batch: alarms are read live (console)
    record = {
        "kind": "batch", "id": batch_id,
        "product": {"gtin": b.gtin, "name": name, "market": market, "nhrn_ai": nhrn_ai, "nhrn": nhrn},
        "batch": {"batch_id": batch_id, "lot": b.lot, "expiry": gs1.expiry_text(b.expiry), "planned": b.planned,
                  "made": sum(report.serials[s] for s in ("commissioned", "sampled", "destroyed", "decommissioned")),
                  "case_size": b.case_size, "pallet_size": b.pallet_size, "state": b.state, "created_at": created_at,
                  "closed_at": closed_at, "site": b.site, "read_point": b.read_point, "tz": b.tz},
        "units": units,
        "serials": report.serials,
        "containers": {"cases": report.cases, "pallets": report.pallets, "partial": report.partial,
                       "list": containers},
        "rework": rework,
        "history": history,
        "alarms": alarms,
        "reconciliation": {"units": report.units, "problems": report.problems, "warnings": report.warnings},
    }
    record["content_sha256"] = signatures.content_sha256(record)
    record["delivery"] = delivery(conn, batch_id)
    record["signatures"] = [vars(s) | {"manifestation": s.manifestation()}
                            for s in signatures.of(conn, "batch", batch_id)]
    record["release"] = status(conn, batch_id)
    return record


def _reason(detail: str):
    import json
    d = json.loads(detail)
    return d.get("reason") if isinstance(d, dict) else None


def record_content(conn: sqlite3.Connection, batch_id: str) -> dict:
    """What a signature of the batch binds (signatures.RECORDS)."""
    record = batch_record(conn, batch_id)
    return {k: v for k, v in record.items() if k not in UNSIGNED and k != "content_sha256"}


def record_zone(conn: sqlite3.Connection, batch_id: str) -> str | None:
    return get_batch(conn, batch_id).tz


def delivery(conn: sqlite3.Connection, batch_id: str) -> dict:
    """EPCIS delivery of the batch: events, how many no receiver confirmed yet, and per receiver."""
    (events, undelivered) = conn.execute(
        "SELECT count(*), count(*) - count(delivered_at) FROM epcis_outbox WHERE batch_id=?", (batch_id,)).fetchone()
    targets = {t: {"delivered": n, "pending": events - n, "attempts": a, "last_error": e}
               for t, n, a, e in conn.execute(
                   "SELECT d.target, (SELECT count(*) FROM epcis_outbox o WHERE o.batch_id = d.batch_id"
                   " AND o.seq <= d.delivered_seq), d.attempts, d.last_error FROM epcis_delivery d"
                   " WHERE d.batch_id=? ORDER BY d.target", (batch_id,))}
    return {"events": events, "undelivered": undelivered, "targets": targets}


def status(conn: sqlite3.Connection, batch_id: str) -> dict:
    """Where the batch stands: state, its current review and release signatures, what it waits for."""
    b = get_batch(conn, batch_id)
    current = signatures.of(conn, "batch", batch_id)
    reviewed = next((s for s in reversed(current) if s.meaning == "reviewed"), None)
    released = next((s for s in reversed(current) if s.meaning == "released"), None)
    if released:
        stage = "released"
    elif b.state != "closed":
        stage = f"{b.state}: not closed"
    elif reviewed:
        stage = "reviewed: awaiting release"
    else:
        stage = "closed: awaiting review"
    return {"stage": stage, "reviewed": _sig(reviewed), "released": _sig(released),
            "upload_before_release": upload_before_release(b.market)}


def _sig(s):
    return None if s is None else {"user": s.user, "full_name": s.full_name, "at": s.at, "local_at": s.local_at,
                                   "tz": s.tz, "manifestation": s.manifestation(), "signature_id": s.signature_id}


def _closed(conn, batch_id: str, what: str):
    b = get_batch(conn, batch_id)
    if b.state != "closed":
        raise ReleaseError(f"batch {batch_id} is {b.state}: only a closed batch can be {what}")
    return b


def review(conn: sqlite3.Connection, batch_id: str, user_name: str, password: str, *,
           reason: str | None = None) -> signatures.Signature:
    """QA signs the closed batch's record "reviewed"."""
    def check(conn, user, digest):
        _closed(conn, batch_id, "reviewed")
        st = status(conn, batch_id)
        if st["released"]:
            raise ReleaseError(f"batch {batch_id} is already released ({st['released']['manifestation']})")
        if st["reviewed"]:
            raise ReleaseError(f"batch {batch_id} is already reviewed ({st['reviewed']['manifestation']})")
    return signatures.sign(conn, user_name, password, "reviewed", "batch", batch_id, reason=reason,
                           action="batch.review", check=check)


def pending_events(conn: sqlite3.Connection, batch_id: str) -> int:
    """The batch's EPCIS events no receiver has confirmed yet."""
    return delivery(conn, batch_id)["undelivered"]


def release(conn: sqlite3.Connection, batch_id: str, user_name: str, password: str, *,
            reason: str | None = None) -> signatures.Signature:
    """A second person signs the reviewed batch "released" — refused if they reviewed it, if the
    record changed since, or (a market that wants the data first) while events wait in the outbox."""
    def check(conn, user, digest):
        b = _closed(conn, batch_id, "released")
        current = signatures.of(conn, "batch", batch_id)
        if any(s.meaning == "released" for s in current):
            raise ReleaseError(f"batch {batch_id} is already released")
        reviewed = [s for s in current if s.meaning == "reviewed"]
        if not reviewed:
            raise ReleaseError(f"batch {batch_id} is not reviewed yet: QA signs it first (serialine batch review {batch_id})")
        if any(s.user == user.name for s in reviewed):
            raise ReleaseError(f"{user.name} reviewed batch {batch_id}: a second person must release it")
        if reviewed[-1].content_sha256 != digest:
            raise ReleaseError(f"batch {batch_id}: its record changed since {reviewed[-1].user} reviewed it;"
                               " serialine audit verify says what")
        if upload_before_release(b.market):
            pending = pending_events(conn, batch_id)
            if pending:
                raise ReleaseError(f"batch {batch_id} waits for the outbox: {pending} EPCIS event(s) not yet delivered"
                                   f" upstream ({b.market} wants the batch's data before release; serialine outbox)")
    return signatures.sign(conn, user_name, password, "released", "batch", batch_id, reason=reason,
                           action="batch.release", check=check)
