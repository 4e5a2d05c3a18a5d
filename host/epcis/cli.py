"""`serialine epcis export` and `serialine outbox`: the line engineer's view of what goes upstream.

    serialine epcis export --batch B --format jsonld|xml12 --out DIR [--db PATH]
                           [--sender SGLN] [--receiver SGLN]
    serialine outbox [--db PATH] [--limit N]
    serialine outbox [--retry-now] --forward directory:DIR|http://HOST/BASE|mqtt://HOST:PORT/SITE/LINE
                     [--doc-size N]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path

from serialine.host.epcis import document, outbox, validate

DEFAULT_DB = os.environ.get("SERIALINE_DB", "serialine.db")


def _open(path: str) -> sqlite3.Connection:
    if not Path(path).exists():
        raise SystemExit(f"serialine: no ledger at {path} (use --db PATH or set SERIALINE_DB)")
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    outbox.ensure_schema(conn)
    return conn


def _batch_state(conn: sqlite3.Connection, batch_id: str) -> str | None:
    """The ledger's state of the batch, when the ledger's batch table is there."""
    try:
        row = conn.execute("SELECT state FROM batch WHERE batch_id = ?", (batch_id,)).fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def file_stem(batch_id: str) -> str:
    """A file name per batch id, one-to-one: only [A-Za-z0-9_-] and inner dots stay, every other
    byte (and '%') is percent-encoded, so `A/B`, `A_B` and `A:B` get three different files."""
    out = []
    for i, byte in enumerate(batch_id.encode()):
        c = chr(byte)
        keep = c.isascii() and (c.isalnum() or c in "_-" or (c == "." and i > 0))
        out.append(c if keep else f"%{byte:02X}")
    return "".join(out)


def _atomic_write(path: Path, data: bytes, replace: bool = False) -> bool:
    """Write whole or not at all; without `replace` an existing file is kept (returns False)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if replace:
        os.replace(tmp, path)
        return True
    try:
        os.link(tmp, path)  # atomic and never clobbers
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serialine epcis export")
    parser.add_argument("--batch", required=True)
    parser.add_argument("--format", choices=("jsonld", "xml12"), default="jsonld")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--sender", help="SGLN URI of the sender (xml12; default: bizLocation)")
    parser.add_argument("--receiver", help="SGLN URI of the receiver (xml12; default: sender)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export file")
    args = parser.parse_args(argv)
    conn = _open(args.db)
    events = outbox.batch_events(conn, args.batch)
    state = _batch_state(conn, args.batch)
    if not events:
        print(f"serialine epcis export: batch {args.batch!r} has no EPCIS events"
              + ("" if state else " (unknown batch)"), file=sys.stderr)
        return 1
    if state not in (None, "closed"):
        print(f"serialine epcis export: note: batch {args.batch!r} is {state}, not closed; "
              "exporting the events recorded so far", file=sys.stderr)
    safe = file_stem(args.batch)
    if args.format == "jsonld":
        doc = document.epcis_document(events)
        validate.json_document(doc)
        data, name = document.dumps(doc), f"{safe}.jsonld"
    else:
        from serialine.host.epcis import xml12
        sender = args.sender or events[0]["bizLocation"]["id"]
        data = xml12.document(events, sender, args.receiver or sender)
        validate.xml_document(data, "1.2")
        name = f"{safe}.xml"
    args.out.mkdir(parents=True, exist_ok=True)
    if not _atomic_write(args.out / name, data, replace=args.overwrite):
        print(f"serialine epcis export: {args.out / name} exists (use --overwrite to replace it)",
              file=sys.stderr)
        return 1
    print(f"{args.out / name}: {len(events)} events")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "export":
        print("usage: serialine epcis export --batch B --format jsonld|xml12 --out DIR [--db PATH]",
              file=sys.stderr)
        return 2
    try:
        return export(argv[1:])
    except validate.InvalidDocument as exc:
        print(f"serialine epcis export: refusing to write an invalid document:\n{exc}", file=sys.stderr)
        return 1


def sink_from_spec(spec: str):
    """directory:DIR | http(s)://HOST[:PORT]/BASE | mqtt://HOST:PORT[/SITE/LINE]"""
    from serialine.host.epcis import sinks
    if spec.startswith("directory:"):
        return sinks.from_config({"kind": "directory", "path": spec[len("directory:"):]})
    if spec.startswith(("http://", "https://")):
        return sinks.from_config({"kind": "http", "url": spec,
                                  "token": os.environ.get("SERIALINE_EPCIS_TOKEN"),
                                  "ca_file": os.environ.get("SERIALINE_EPCIS_CA")})
    if spec.startswith("mqtt://"):
        hostport, _, rest = spec[len("mqtt://"):].partition("/")
        host, _, port = hostport.partition(":")
        site, _, line = rest.partition("/")
        return sinks.from_config({"kind": "mqtt", "host": host, "port": int(port or 1883),
                                  "site": site or "site", "line": line or "line"})
    raise ValueError(f"unknown sink {spec!r}")


def _when(ts: float) -> str:
    if not ts:
        return "now"
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def outbox_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serialine outbox",
                                     description="what is waiting to go upstream, and why")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--forward", metavar="SINK", help="deliver what is due now, then show")
    parser.add_argument("--doc-size", type=int, default=100)
    parser.add_argument("--retry-now", action="store_true", help="ignore the backoff: all due now")
    args = parser.parse_args(argv)
    conn = _open(args.db)
    if args.retry_now:
        print(f"{outbox.retry_now(conn)} pending events due now")
    if args.forward:
        from serialine.host.epcis.forwarder import Forwarder
        sink = sink_from_spec(args.forward)
        try:
            sent = Forwarder(conn, sink, doc_size=args.doc_size).run_once()
        finally:
            sink.close()
        print(f"forwarded {sent} events to {args.forward}")
    from rich.console import Console
    from rich.table import Table
    counts = outbox.counts(conn)
    table = Table(title=f"EPCIS outbox: {counts['pending']} pending, {counts['delivered']} delivered")
    for column in ("seq", "batch", "event", "eventID", "attempts", "next try", "last error"):
        table.add_column(column, overflow="fold")
    now = time.time()
    for seq, batch, kind, event_id, attempts, next_try, error in outbox.pending_rows(conn, args.limit):
        due = "due" if next_try <= now else _when(next_try)
        table.add_row(str(seq), batch, kind, event_id[14:30] + "…", str(attempts), due, error or "")
    Console().print(table)
    return 0
