"""`serialine batch resolve`: a person settles a unit whose outcome the host never heard (UNKNOWN,
see host/ledger.py) — found in a closed case, found downstream at the case packer (into the
batch's open case, as the line would have packed it), or destroyed. One
transaction with its EPCIS events, the rework record and the audit entry; a unit that is not
UNKNOWN, or a case it cannot go into, changes nothing."""

from __future__ import annotations

import sqlite3

from . import audit, reporting, rework
from .aggregation import Aggregator
from .db import transaction
from .lifecycle import check_reworkable, live_agents
from .masterdata import get_batch


class ResolveError(ValueError):
    pass


def parse_unit(text: str) -> tuple[str, int, int]:
    """'DEVICE:BOOT:SEQ' → (device_id, boot_id, unit_seq)."""
    device_id, _, rest = text.rpartition(":")
    device_id, _, boot = device_id.rpartition(":")
    try:
        if not device_id:
            raise ValueError
        return device_id, int(boot), int(rest)
    except ValueError:
        raise ResolveError(f"--unit {text!r}: expected DEVICE:BOOT:SEQ, e.g. line-1:123456:302") from None


def resolve(conn: sqlite3.Connection, batch_id: str, unit: str, *, found_in: str | None = None,
            found_at_packer: bool = False, destroyed: bool = False, user: str, reason: str) -> str:
    """Resolve one UNKNOWN unit of the batch → what was done, one line."""
    if (found_in is not None) + found_at_packer + destroyed != 1:
        raise ResolveError("say where the pack is: --found-in SSCC, --found-at-packer or --destroyed")
    if not user or not reason:
        raise ResolveError("resolving a unit needs a user and a reason")
    device_id, boot_id, unit_seq = parse_unit(unit)
    b = get_batch(conn, batch_id)
    with transaction(conn):
        row = conn.execute("SELECT batch_id, outcome, serial FROM unit WHERE device_id=? AND boot_id=? AND unit_seq=?",
                           (device_id, boot_id, unit_seq)).fetchone()
        if row is None or row[0] != batch_id:
            raise ResolveError(f"batch {batch_id} has no unit {unit}")
        _, outcome, serial = row
        if outcome != "UNKNOWN":
            raise ResolveError(f"unit {unit} is {outcome or 'still in flight'}, not UNKNOWN: nothing to resolve")
        if found_in is not None or found_at_packer:
            if serial is None:
                raise ResolveError(f"unit {unit} has no serial in the ledger: it cannot be packed; --destroyed")
        if found_at_packer:
            check_reworkable(conn, batch_id)
            agents = live_agents(conn, batch_id)
            if agents:  # the agent counts its open case's packs in memory
                raise ResolveError(f"batch {batch_id}'s open case is being filled by an agent ({agents[0]}): stop the"
                                   " line and its agent first")
            conn.execute("UPDATE serial SET state='commissioned' WHERE gtin=? AND serial=?", (b.gtin, serial))
            ctx = reporting.context_for(b)
            # as the line packs a pass: into the open case (closed, SSCC and packing, if it fills),
            # its packing reported after the commissioning below
            Aggregator(conn, b, ctx).add_pack(serial)
            reporting.commissioned(conn, ctx, b, [serial])
            (where,) = conn.execute("SELECT coalesce(c.sscc, 'open') FROM packed p JOIN container c USING (container_id)"
                                    " WHERE p.gtin=? AND p.serial=?", (b.gtin, serial)).fetchone()
            found_in = where
            new = ("PASSED", "FOUND_AT_PACKER")
            done = (f"unit {unit} serial {serial}: commissioned, packed in the open case" if where == "open" else
                    f"unit {unit} serial {serial}: commissioned, packed in case {where}, which it filled (closed)")
        elif found_in is not None:
            case = conn.execute("SELECT batch_id, level, state, (SELECT count(*) FROM packed p WHERE"
                                " p.container_id=c.container_id) FROM container c WHERE sscc=?", (found_in,)).fetchone()
            if case is None:
                raise ResolveError(f"unknown SSCC {found_in}")
            if case[:3] != (batch_id, "case", "closed"):
                raise ResolveError(f"{found_in} is a {case[2]} {case[1]} of batch {case[0]}: the pack goes into a closed"
                                   f" case of batch {batch_id}")
            if case[3] >= b.case_size:
                raise ResolveError(f"case {found_in} is full ({case[3]}/{b.case_size}): take out the pack that is not in"
                                   " it first (serialine rework remove)")
            conn.execute("UPDATE serial SET state='commissioned' WHERE gtin=? AND serial=?", (b.gtin, serial))
            reporting.commissioned(conn, reporting.context_for(b), b, [serial])
            rework._add_in(conn, found_in, b.gtin, serial, user, reason)
            new, done = ("PASSED", "FOUND_IN_CASE"), f"unit {unit} serial {serial}: commissioned, packed in case {found_in}"
        else:
            if serial is not None:
                rework._decommission_in(conn, b.gtin, serial, "destroyed", user, reason)
            new, done = ("DESTROYED", "RESOLVED"), f"unit {unit}" + (f" serial {serial}" if serial else "") + ": destroyed"
        conn.execute("UPDATE unit_row SET outcome=?, reason=? WHERE device_id=? AND boot_id=? AND unit_seq=?",
                     new + (device_id, boot_id, unit_seq))
        audit.append(conn, user, "unit.resolve", {"batch_id": batch_id, "unit": unit, "serial": serial,
                                                  "outcome": new[0], "case": found_in, "reason": reason})
    return done


def add_parser(sub) -> None:
    """The `resolve` subcommand of `serialine batch` (its --db and --user come from there)."""
    p = sub.add_parser("resolve", help="settle a unit with an unknown outcome: found in a case, at the packer, or destroyed")
    p.add_argument("batch_id")
    p.add_argument("--unit", required=True, help="DEVICE:BOOT:SEQ")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--found-in", metavar="SSCC", help="the closed case the pack was found in")
    g.add_argument("--found-at-packer", action="store_true",
                   help="the pack left the line: it goes into the batch's open case (line and agent stopped)")
    g.add_argument("--destroyed", action="store_true", help="the pack was destroyed")
    p.add_argument("--reason", required=True)


def run(conn, args) -> None:
    print(resolve(conn, args.batch_id, args.unit, found_in=args.found_in,
                  found_at_packer=args.found_at_packer, destroyed=args.destroyed,
                  user=args.user, reason=args.reason))
