"""`serialine epcis export` and `serialine outbox`: the line engineer's view of what goes upstream.

    serialine epcis export --batch B --format jsonld|xml12 --out DIR [--db PATH]
                           [--sender SGLN] [--receiver SGLN] [--max-events N] [--max-bytes SIZE]
                           [--overwrite]
    serialine outbox [--db PATH] [--limit N]
    serialine outbox [--retry-now] --forward directory:DIR|http(s)://HOST/BASE|mqtt(s)://HOST:PORT/SITE/LINE
                     [--credentials FILE] [--ca FILE] [--cert FILE] [--key FILE]
                     [--doc-size N]
    serialine outbox --resend --batch B --to TARGET [--user U] [--reason R]

Delivery is kept per target (the --forward address, credentials never part of it): a target
gets every batch's whole history from its first event; --resend starts a target over on a batch.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from serialine.host import audit
from serialine.host.cli import at_least_one
from serialine.host.epcis import document, outbox, validate
from serialine.host.epcis.sinks import redact

DEFAULT_DB = os.environ.get("SERIALINE_DB", "serialine.db")


def _open(path: str) -> sqlite3.Connection:
    from serialine.host import ledgerfile  # the one opener: a missing or foreign file is refused in one line
    try:
        conn = ledgerfile.open_ledger(path, schema=False)
    except ledgerfile.LedgerFileError as exc:
        raise SystemExit(f"error: {exc}") from None
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


def _dscsa(conn: sqlite3.Connection, batch_id: str, named_locations: list[str], sender: str | None,
           receiver: str | None):
    """Sender, receiver (SGLNs) and the header's master data for a DSCSA 1.2 export: the
    product's EPCClass and every configured location the batch's events name."""
    from serialine.host import masterdata
    from serialine.host.epcis import events as ev, xml12
    try:
        batch = masterdata.get_batch(conn, batch_id)
    except sqlite3.OperationalError:
        raise ValueError(f"{batch_id}: the 1.2 export needs the ledger's master data, and this file"
                         " has only an outbox") from None
    if receiver is None:
        raise ValueError("the 1.2 export needs --receiver SGLN (the trading partner it goes to)")
    if sender is None and batch.site is None:
        raise ValueError(f"batch {batch_id} has no site: give --sender SGLN")
    sender, receiver = masterdata.sgln(sender or batch.site), masterdata.sgln(receiver)
    if receiver == sender:
        raise ValueError(f"--receiver {receiver} is the sender: name the trading partner the document goes to")
    product = masterdata.get_product_master(conn, batch.gtin)
    fields = ("ndc", "manufacturer", "dosage_form", "strength", "net_content")
    missing = [f.replace("_", "-") for f in fields if not getattr(product, f)]
    if missing:
        raise ValueError(f"product {batch.gtin} lacks DSCSA master data: --{', --'.join(missing)}"
                         f" (serialine batch master {batch.gtin} …)")
    item = ev.sgtin_urn(batch.gtin, "0", batch.company_prefix_len)[len("urn:epc:id:sgtin:"):].rsplit(".", 1)[0]
    pattern = f"urn:epc:idpat:sgtin:{item}.*"  # every serial of the product
    master = [xml12.epc_class(pattern, name=product.name, **{f: getattr(product, f) for f in fields})]
    for urn in dict.fromkeys([sender, receiver, *named_locations]):
        loc = masterdata.get_location(conn, urn)
        if loc is not None:
            master.append(xml12.location(loc.sgln, name=loc.name, street=loc.street, city=loc.city,
                                         state=loc.state, postal=loc.postal, country=loc.country))
    return sender, receiver, master


MAX_EVENTS = 10_000  # per document: what common receivers accept in one capture
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def byte_size(text: str) -> int:
    """'25MB', '25 MB', '512KiB', '1000000' → bytes (decimal kB/MB/GB, binary KiB/MiB/GiB)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is no size (e.g. 25MB, 512KiB, 1000000)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a size must be positive")
    return n


class _Documents:
    """The export's documents, split at `max_events` events / `max_bytes` bytes, each written
    to a hidden temporary file in `out` as its events come (`envelope()` → (head, tail) of a
    new document); `check(path)` validates a finished file. Nothing is published here."""

    def __init__(self, out: Path, envelope, separator: bytes, max_events: int, max_bytes: int | None,
                 check=None):
        self.out, self.envelope, self.sep, self.check = out, envelope, separator, check
        self.max_events, self.max_bytes = max_events, max_bytes
        self.done: list[tuple[Path, int]] = []  # (temporary file, events)
        self._fh = None
        self.events = 0  # in the open document

    def add(self, data: bytes) -> None:
        extra = len(data) + (len(self.sep) if self.events else 0)
        if self._fh is not None and (self.events >= self.max_events or
                                     (self.max_bytes and self._size + extra > self.max_bytes)):
            self._finish()
        if self._fh is None:
            self._head, self._tail = self.envelope()
            path = self.out / f".serialine-export-{os.getpid()}-{len(self.done) + 1}.tmp"
            self._fh, self._path = open(path, "wb"), path
            self._fh.write(self._head)
            self._size, self.events, extra = len(self._head) + len(self._tail), 0, len(data)
        if self.max_bytes and self._size + extra > self.max_bytes:
            raise ValueError(f"an event of {len(data)} bytes does not fit --max-bytes {self.max_bytes}"
                             f" with its document's envelope ({len(self._head) + len(self._tail)} bytes)")
        self._fh.write(self.sep + data if self.events else data)
        self._size += extra
        self.events += 1

    def _finish(self) -> None:
        fh, self._fh = self._fh, None
        fh.write(self._tail)
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        self.done.append((self._path, self.events))
        if self.check:
            self.check(self._path)

    def close(self) -> list[tuple[Path, int]]:
        if self._fh is not None:
            self._finish()
        return self.done

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self.done.append((self._path, self.events))
            self._fh = None
        for path, _ in self.done:
            path.unlink(missing_ok=True)


def export_names(stem: str, ext: str, n: int) -> list[str]:
    """One document: STEM.EXT; split: STEM~0001.EXT … ('~' never comes out of file_stem, so no
    batch's single file is another batch's part)."""
    return [f"{stem}{ext}"] if n == 1 else [f"{stem}~{i:04d}{ext}" for i in range(1, n + 1)]


def _existing(out: Path, stem: str, ext: str) -> list[Path]:
    """The files an earlier export of this batch in this format left in `out`."""
    if not out.is_dir():
        return []
    part = re.compile(re.escape(stem) + r"~\d{4,}" + re.escape(ext))
    return sorted(p for p in out.iterdir() if p.name == stem + ext or part.fullmatch(p.name))


def _publish(done: list[tuple[Path, int]], out: Path, names: list[str], replace: bool, stale: list[Path]):
    """Every document under its name, or none (a failure takes back what it had linked)."""
    linked: list[Path] = []
    try:
        for (tmp, _), name in zip(done, names):
            if replace:
                os.replace(tmp, out / name)
            else:
                os.link(tmp, out / name)  # atomic and never clobbers
                linked.append(out / name)
    except BaseException:
        for path in linked:
            path.unlink(missing_ok=True)
        raise
    for tmp, _ in done:
        tmp.unlink(missing_ok=True)
    for path in stale:
        if path.name not in names:
            path.unlink(missing_ok=True)  # the parts of an earlier, longer export


def export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serialine epcis export")
    parser.add_argument("--batch", required=True)
    parser.add_argument("--format", choices=("jsonld", "xml12"), default="jsonld")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--sender", help="SGLN URI of the sender (xml12; default: the batch's site)")
    parser.add_argument("--receiver", help="SGLN URI of the trading partner receiving it (xml12)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    parser.add_argument("--max-events", type=at_least_one, default=MAX_EVENTS,
                        help=f"events per document at most (default {MAX_EVENTS}); more go to the next document")
    parser.add_argument("--max-bytes", type=byte_size, default=None, metavar="SIZE",
                        help="bytes per document at most, e.g. 25MB (default: no limit)")
    args = parser.parse_args(argv)
    conn = _open(args.db)
    n = outbox.batch_count(conn, args.batch)
    state = _batch_state(conn, args.batch)
    if not n:
        print(f"serialine epcis export: batch {args.batch!r} has no EPCIS events"
              + ("" if state else " (unknown batch)"), file=sys.stderr)
        return 1
    if state not in (None, "closed"):
        print(f"serialine epcis export: note: batch {args.batch!r} is {state}, not closed; "
              "exporting the events recorded so far", file=sys.stderr)
    safe = file_stem(args.batch)
    if args.out.exists() and not args.out.is_dir():
        print(f"serialine epcis export: --out {args.out} is a file, not a directory", file=sys.stderr)
        return 1
    ext = ".jsonld" if args.format == "jsonld" else ".xml"
    stale = _existing(args.out, safe, ext)
    if stale and not args.overwrite:
        print(f"serialine epcis export: {stale[0]} exists (use --overwrite to replace it)", file=sys.stderr)
        return 1
    if args.format == "jsonld":
        head, tail = document.envelope(audit_head=audit.head(conn) if audit.present(conn) else None)
        checker = document.EventChecker(head, tail)
        docs = _Documents(args.out, lambda: (head, tail), b",", args.max_events, args.max_bytes)
    else:
        from serialine.host.epcis import xml12
        sender, receiver, master_data = _dscsa(conn, args.batch, outbox.batch_locations(conn, args.batch),
                                               args.sender, args.receiver)
        created = datetime.now(timezone.utc)
        docs = _Documents(args.out, lambda: xml12.envelope(sender, receiver, created, master_data), b"",
                          args.max_events, args.max_bytes, check=xml12.check_file)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for i, body in enumerate(outbox.batch_bodies(conn, args.batch)):
            event = json.loads(body)
            if args.format == "jsonld":
                checker.check(event, f"event {i + 1} of the batch")
                docs.add(body.encode())
            else:
                docs.add(xml12.event_xml(event))
        done = docs.close()
        names = export_names(safe, ext, len(done))
        _publish(done, args.out, names, args.overwrite, stale)
    except BaseException:
        docs.discard()
        raise
    for name, (_, count) in zip(names, done):
        print(f"{args.out / name}: {count} events")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "export":
        print("usage: serialine epcis export --batch B --format jsonld|xml12 --out DIR [--db PATH]"
              " [--max-events N] [--max-bytes SIZE]", file=sys.stderr)
        return 2
    try:
        return export(argv[1:])
    except validate.InvalidDocument as exc:
        print(f"serialine epcis export: refusing to write an invalid document:\n{exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"serialine epcis export: {exc}", file=sys.stderr)
        return 1


def sink_from_spec(spec: str, credentials_file=None, ca_file=None, cert_file=None, key_file=None, env_names=None):
    """directory:DIR | http(s)://HOST[:PORT]/BASE | mqtt(s)://HOST[:PORT][/SITE/LINE]. Credentials
    come from the environment (only `env_names` when given, each required) or `credentials_file`
    (sinks/credentials.py), never from the address; ValueError with a one-line, redacted message
    for anything refused."""
    import urllib.parse

    from serialine.host.epcis import sinks
    from serialine.host.epcis.sinks import credentials
    if spec.startswith("directory:"):
        return sinks.from_config({"kind": "directory", "path": spec[len("directory:"):]})
    secrets: list[str] = []
    try:
        parts = urllib.parse.urlsplit(spec)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https", "mqtt", "mqtts"):
            raise ValueError(f"unknown sink {spec!r} (directory:DIR | http(s)://HOST/BASE | "
                             "mqtt(s)://HOST:PORT/SITE/LINE)")
        sinks.check_address(spec, True, False, scheme.rstrip("s"))  # userinfo refused before reading any
        creds = credentials.load(credentials_file, names=None if credentials_file else env_names)
        secrets = list(creds.values())
        if scheme.startswith("http"):
            return sinks.from_config({
                "kind": "http", "url": spec, "token": creds.get("SERIALINE_HTTP_TOKEN"),
                "username": creds.get("SERIALINE_HTTP_USER"), "password": creds.get("SERIALINE_HTTP_PASSWORD"),
                "ca_file": ca_file, "cert_file": cert_file, "key_file": key_file})
        if scheme == "mqtt" and (ca_file or cert_file):
            raise ValueError("--ca/--cert given for a plain mqtt:// sink: use mqtts://")
        site, _, line = parts.path.strip("/").partition("/")
        return sinks.from_config({
            "kind": "mqtt", "host": parts.hostname or "", "port": parts.port, "site": site or "site",
            "line": line or "line", "tls": scheme == "mqtts", "username": creds.get("SERIALINE_MQTT_USER"),
            "password": creds.get("SERIALINE_MQTT_PASSWORD"), "tls_ca_file": ca_file,
            "tls_certfile": cert_file, "tls_keyfile": key_file})
    except (ValueError, OSError) as exc:
        raise ValueError(sinks.redact(str(exc), secrets)) from None


def _when(ts: float) -> str:
    if not ts:
        return "now"
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def _forward(conn: sqlite3.Connection, forwarder, args) -> int:
    print(f"forwarded {forwarder.run_once()} events to {forwarder.target}")
    return 0


def _resend(conn: sqlite3.Connection, forwarder, args) -> int:
    """Start the target over on the batch (audited, in one transaction), then send it."""
    from serialine.host import audit, db
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='audit'").fetchone() is None:
        print(f"serialine outbox: {args.db} has no audit trail: a resend is recorded in the ledger's",
              file=sys.stderr)
        return 1
    with db.transaction(conn):
        n = outbox.resend(conn, forwarder.target, args.batch)
        if n:
            audit.append(conn, args.user, "outbox.resend", {"batch_id": args.batch, "target": forwarder.target,
                                                            "events": n, "reason": args.reason})
    if not n:
        print(f"serialine outbox: batch {args.batch!r} has no EPCIS events", file=sys.stderr)
        return 1
    sent = forwarder.run_once(args.batch)
    print(f"resent {sent} of {n} events of batch {args.batch} to {forwarder.target}"
          + ("" if sent == n else " (the rest stays pending for it)"))
    return 0


def outbox_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serialine outbox",
                                     description="what is waiting to go upstream, and why")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--forward", metavar="SINK", help="deliver what is due now, then show")
    parser.add_argument("--doc-size", type=int, default=100)
    parser.add_argument("--retry-now", action="store_true", help="ignore the backoff: all due now")
    parser.add_argument("--credentials", metavar="FILE", help="NAME=VALUE credentials (chmod 600) "
                        "instead of the environment's SERIALINE_HTTP_*/SERIALINE_MQTT_*")
    parser.add_argument("--ca", metavar="FILE", help="CA certificate(s) to verify the https/mqtts server")
    parser.add_argument("--cert", metavar="FILE", help="client certificate (PEM) for https/mqtts")
    parser.add_argument("--key", metavar="FILE", help="its private key, when not in --cert")
    parser.add_argument("--resend", action="store_true",
                        help="send --batch B's whole history again to --to TARGET, in order")
    parser.add_argument("--batch", help="the batch to resend")
    parser.add_argument("--to", metavar="TARGET", help="the target to resend to (a --forward address)")
    parser.add_argument("--user", default=os.environ.get("SERIALINE_USER") or getpass.getuser(),
                        help="who asks for the resend (audited)")
    parser.add_argument("--reason", help="why the receiver gets it again (required with --resend: audited)")
    args = parser.parse_args(argv)
    if args.resend and not (args.batch and args.to):
        parser.error("--resend needs --batch B and --to TARGET")
    if args.resend and not (args.reason or "").strip():
        parser.error("--resend needs --reason R (the audit record says why)")
    if (args.batch or args.to) and not args.resend:
        parser.error("--batch and --to go with --resend")
    conn = _open(args.db)
    if args.resend:  # a change: on a ledger with users, --user proves it first (docs/part11.md)
        from serialine.host import users
        try:
            audit.check_reason(args.reason)
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='users'").fetchone():
                users.act(conn, args.user, "config.change")
        except ValueError as exc:
            print(f"serialine outbox: {exc}", file=sys.stderr)
            return 1
    if args.retry_now:
        print(f"{outbox.retry_now(conn)} waiting deliveries due now")
    for spec, job in ((args.to, _resend), (args.forward, _forward)):
        if not spec:
            continue
        from serialine.host.epcis.forwarder import Forwarder
        try:
            sink = sink_from_spec(spec, args.credentials, args.ca, args.cert, args.key)
        except ValueError as exc:
            print(f"serialine outbox: {exc}", file=sys.stderr)
            return 2
        try:
            status = job(conn, Forwarder(conn, sink, doc_size=args.doc_size), args)
        finally:
            sink.close()
        if status:
            return status
    from rich.console import Console
    from rich.table import Table
    counts = outbox.counts(conn)
    table = Table(title=f"EPCIS outbox: {counts['pending']} pending, {counts['delivered']} delivered")
    for column in ("seq", "batch", "event", "eventID", "attempts", "next try", "last error"):
        table.add_column(column, overflow="fold")
    now = time.time()
    for seq, batch, kind, event_id, attempts, next_try, error in outbox.pending_rows(conn, args.limit):
        due = "due" if next_try <= now else _when(next_try)
        table.add_row(str(seq), batch, kind, event_id[14:30] + "…", str(attempts), due, redact(error or ""))
    Console().print(table)
    per_target = outbox.pending_by_target(conn)
    if per_target:
        table = Table(title="pending per target")
        for column in ("target", "batch", "pending", "attempts", "next try", "last error"):
            table.add_column(column, overflow="fold")
        for target, batch, pending, attempts, next_try, error in per_target:
            due = "due" if next_try <= now else _when(next_try)
            table.add_row(target, batch, str(pending), str(attempts), due, redact(error or ""))
        Console().print(table)
    return 0
