"""`serialine ship`: pallets (or cases on no pallet) leave the site for a trading partner.

    serialine ship --sscc SSCC [--sscc SSCC ...] --to SGLN [--to-party SGLN] --po PO
                   --desadv DESADV [--read-point SGLN] [--user U] [--db PATH]

One shipping ObjectEvent per batch (CBV bizStep shipping, disposition in_transit) names the
containers, our site as source and the partner as destination (owning_party and location) and
the purchase order and despatch advice as business transactions. The shipment, the containers
it took, the events and the audit record commit in one transaction, or nothing does; each SSCC
ships once, and only a closed container of a closed batch on no closed pallet ships. On a ledger
with users, `--user` is proved (action "ship") and the batch must be released (docs/part11.md)."""

from __future__ import annotations

import argparse
import datetime as _dt
import getpass
import os
import sqlite3

from . import audit, db, ledgerfile, masterdata, release, reporting, users
from .epcis import events, outbox


class ShipError(ValueError):
    pass


def _transaction_id(value: str, issuer_urn: str, what: str) -> str:
    """A CBV business transaction ID: a URI as given, else urn:epcglobal:cbv:bt:<issuer GLN>:<id>."""
    value = str(value).strip()
    if not value or not value.isprintable() or " " in value or len(value) > 100:
        raise ShipError(f"{what} must be 1..100 printable characters without spaces, got {value!r}")
    if value.startswith(("urn:", "http://", "https://")):
        return value
    return f"urn:epcglobal:cbv:bt:{masterdata.gln_of(issuer_urn)}:{value}"


def shipping_event(ctx: events.Context, epcs: list[str], source: str, destination: str, to_party: str,
                   po: str, desadv: str, when: _dt.datetime) -> dict:
    """ObjectEvent OBSERVE, bizStep shipping, disposition in_transit (CBV 2.0); our site owns
    what leaves it, `to_party` owns it on arrival at `destination`."""
    event = events._head("ObjectEvent", ctx, when)
    event.update(epcList=events._epcs(epcs, "shipping"), action="OBSERVE", bizStep="shipping",
                 disposition="in_transit")
    return events._finish(
        ctx, event,
        bizTransactionList=[{"type": "po", "bizTransaction": po},
                            {"type": "desadv", "bizTransaction": desadv}],
        sourceList=[{"type": "owning_party", "source": source},
                    {"type": "location", "source": source}],
        destinationList=[{"type": "owning_party", "destination": to_party},
                         {"type": "location", "destination": destination}])


def _destination(conn: sqlite3.Connection, value: str) -> str:
    """A partner's SGLN: any SGLN URN, or the GLN[.EXT] of a registered location."""
    if str(value).strip().startswith("urn:"):
        return masterdata.sgln(value)
    urn = masterdata.registered(conn, value)
    if urn is None:
        raise ShipError(f"{value}: give the destination as an SGLN URN (or register it: serialine batch site)")
    return urn


def _containers(conn: sqlite3.Connection, ssccs: list[str]) -> dict[str, list[str]]:
    """batch_id -> SSCCs, after every check; the first problem raises."""
    if not ssccs:
        raise ShipError("name at least one --sscc")
    if len(set(ssccs)) != len(ssccs):
        raise ShipError("an SSCC is named twice")
    by_batch: dict[str, list[str]] = {}
    for sscc in ssccs:
        row = conn.execute(
            "SELECT c.batch_id, c.level, c.state, p.sscc, p.state, b.state, s.shipment_id"
            " FROM container c JOIN batch b USING (batch_id) LEFT JOIN container p ON p.container_id = c.parent_id"
            " LEFT JOIN shipped s ON s.sscc = c.sscc WHERE c.sscc = ?", (sscc,)).fetchone()
        if row is None:
            raise ShipError(f"unknown SSCC {sscc}")
        batch_id, level, state, parent, parent_state, batch_state, shipment = row
        if shipment is not None:
            raise ShipError(f"{level} {sscc} was already shipped (shipment {shipment})")
        if state != "closed":
            raise ShipError(f"{level} {sscc} is {state}, only a closed container ships")
        if parent is not None and parent_state == "closed":
            raise ShipError(f"case {sscc} is on pallet {parent}: ship the pallet")
        if batch_state != "closed":
            raise ShipError(f"{level} {sscc} belongs to batch {batch_id}, which is {batch_state}:"
                            " close (reconcile) it before shipping")
        by_batch.setdefault(batch_id, []).append(sscc)
    if users.present(conn):  # without users there are no signatures, so no release to wait for
        for batch_id in by_batch:
            stage = release.status(conn, batch_id)["stage"]
            if stage != "released":
                raise ShipError(f"batch {batch_id} is not released ({stage}): QA releases it before it ships"
                                f" (serialine batch release {batch_id})")
    return by_batch


def ship(conn: sqlite3.Connection, ssccs: list[str], to: str, po: str, desadv: str, user: str,
         read_point: str | None = None, to_party: str | None = None) -> int:
    """Record the shipment and its events; returns the shipment id."""
    if not user:
        raise ShipError("a shipment needs a user")
    destination = _destination(conn, to)
    to_party = _destination(conn, to_party) if to_party else destination
    with db.transaction(conn):
        by_batch = _containers(conn, list(ssccs))
        batches = {b: masterdata.get_batch(conn, b) for b in by_batch}
        sites = {b.site for b in batches.values()}
        if None in sites:
            raise ShipError("batch " + ", ".join(b.batch_id for b in batches.values() if b.site is None)
                            + " has no site configured, so the shipment has no source")
        if len(sites) > 1:
            raise ShipError(f"these containers are at {len(sites)} sites: one shipment leaves one site")
        (site,) = sites
        dock = masterdata.sgln(read_point, len(site.split(":")[-1].split(".")[0])) if read_point else site
        po_id = _transaction_id(po, to_party, "the PO")  # the buyer issued it
        desadv_id = _transaction_id(desadv, site, "the despatch advice")  # we issue it
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
        shipment = conn.execute("INSERT INTO shipment (at, user, destination, po, desadv) VALUES (?,?,?,?,?)",
                                (now, user, destination, po_id, desadv_id)).lastrowid
        ids = []
        for batch_id, codes in by_batch.items():
            batch = batches[batch_id]
            conn.executemany("INSERT INTO shipped VALUES (?, ?)", [(c, shipment) for c in codes])
            when = reporting.event_time(conn, batch)
            ctx = reporting.context_for(batch, when)
            ctx = events.Context(read_point=dock, biz_location=site, tz_offset=ctx.tz_offset)
            event = shipping_event(ctx, [reporting.sscc(batch, c) for c in codes], site, destination,
                                   to_party, po_id, desadv_id, when)
            outbox.enqueue(conn, batch_id, event)
            ids.append(event["eventID"])
        audit.append(conn, user, "ship", {"shipment": shipment, "ssccs": list(ssccs), "to": destination,
                                          "to_party": to_party,
                                          "po": po_id, "desadv": desadv_id, "events": ids})
    return shipment


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine ship", description="pallets leave the site: shipping event")
    ap.add_argument("--sscc", action="append", required=True, help="a pallet (or a case on no pallet); repeatable")
    ap.add_argument("--to", required=True, help="SGLN of the receiving location")
    ap.add_argument("--to-party", help="SGLN of the party that will own the goods (default: --to)")
    ap.add_argument("--po", required=True, help="purchase order (the buyer's ID, or a bizTransaction URI)")
    ap.add_argument("--desadv", required=True, help="despatch advice (our ID, or a bizTransaction URI)")
    ap.add_argument("--read-point", help="SGLN of the dock (default: the site)")
    ap.add_argument("--db", default=os.environ.get("SERIALINE_DB", "serialine.db"), help="ledger file")
    ap.add_argument("--user", default=os.environ.get("SERIALINE_USER") or getpass.getuser(), help="who ships")
    args = ap.parse_args(argv)

    def go():
        conn = ledgerfile.open_ledger(args.db)
        try:
            users.act(conn, args.user, "ship")
            shipment = ship(conn, args.sscc, args.to, args.po, args.desadv, args.user, args.read_point,
                            args.to_party)
        finally:
            conn.close()
        print(f"shipment {shipment}: {len(args.sscc)} container(s) to {args.to}")
    return ledgerfile.run("serialine ship", go)
