"""`serialine batch …`, `serialine rework …`, `serialine audit …` — the line engineer's commands.
Every command takes --db (default $SERIALINE_DB or ./serialine.db); errors print one clear line
and exit 1 with nothing changed."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from . import audit, db, gs1, ledgerfile, lifecycle, masterdata, reconcile, reporting, rework, serials, users

# `serialine batch` subcommand -> the action (users.PERMISSIONS) its --user must be allowed; None: reads only
ACTIONS = {"product": "masterdata.change", "master": "masterdata.change", "site": "masterdata.change",
           "serials": "masterdata.change", "create": "batch.create", "start": "batch.start", "reconcile": None,
           "close": "batch.close", "abort": "batch.abort", "reopen": "batch.reopen", "resolve": "batch.resolve",
           "record": None, "history": None, "review": None, "release": None, "return-serials": "batch.close"}  # review and release prove it by their signature


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=os.environ.get("SERIALINE_DB", "serialine.db"), help="ledger file")
    p.add_argument("--user", default=os.environ.get("SERIALINE_USER") or getpass.getuser(), help="who does this")


def _run(fn, args, create: bool = False) -> int:
    """Open the existing ledger (only `create` makes a new one), run, say errors in one line."""
    def go():
        conn = ledgerfile.open_ledger(args.db, create=create)
        try:
            return fn(conn, args)
        finally:
            conn.close()
    return ledgerfile.run("serialine", go)


def _anchored(fn, prog):
    """Every batch / rework command ends by printing the audit chain's head and appending it to
    `<db>.anchors`, after its commit: a later truncation or re-hash of the chain is then detectable."""
    def go(conn, a):
        rc = fn(conn, a)
        if a.cmd in ("record", "history"):  # stdout is the document / the trail
            return rc
        what = " ".join(str(v) for v in (a.cmd, getattr(a, "batch_id", None) or getattr(a, "gtin", None)) if v)
        print(f"audit head {audit.anchor(conn, f'{prog} {what} by {a.user}')}")
        return rc
    return go


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine batch")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("product", help="add a product")
    p.add_argument("gtin"); p.add_argument("name")
    p.add_argument("--market", required=True, choices=sorted(masterdata.PROFILES))
    p.add_argument("--prefix-len", type=int, required=True, help="GS1 company prefix length")
    p.add_argument("--nhrn-ai"); p.add_argument("--nhrn")
    for opt in ("--ndc", "--dosage-form", "--strength", "--net-content", "--manufacturer"):
        p.add_argument(opt, help="DSCSA master data (EPCIS 1.2 export)")
    p = sub.add_parser("master", help="add or change a product's DSCSA master data (EPCIS 1.2 export)")
    p.add_argument("gtin")
    for opt in ("--ndc", "--dosage-form", "--strength", "--net-content", "--manufacturer"):
        p.add_argument(opt)
    p = sub.add_parser("site", help="add or update a site (with --tz) or a partner's location")
    p.add_argument("sgln", help="SGLN URN, or GLN with --prefix-len")
    p.add_argument("--prefix-len", type=int, help="company prefix length of a GLN")
    p.add_argument("--name", required=True)
    for opt in ("--street", "--city", "--state", "--postal", "--country"):
        p.add_argument(opt)
    p.add_argument("--tz", help="IANA time zone of a site of ours, e.g. Europe/Berlin")
    p = sub.add_parser("serials", help="add serials to a GTIN's pool: --generate N, --import FILE or --from opc.tcp://…",
                       description="All or nothing: the serials are staged in chunks (short write locks) and "
                       "published at once with one audit record. Interrupted (Ctrl-C, kill, power loss), nothing "
                       "is added: staged serials are never usable; Ctrl-C removes them at once, after a kill the next "
                       "import of the GTIN does (once the killed one is 12 min stale). A serial once in a pool is "
                       "never issued again.")
    p.add_argument("gtin")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--generate", type=int, metavar="N", help="N new random serials (the market's alphabet and "
                   "length, the OS's cryptographic source), any N: memory does not grow with it")
    g.add_argument("--import", dest="import_file")
    g.add_argument("--from", dest="upstream", metavar="OPC_TCP_URL", help="an upstream OPEN-SCS pool manager (docs/opcua.md)")
    p.add_argument("--count", type=int, help="with --from: how many serials (all or none)")
    p.add_argument("--request-token", help="with --from: repeat a fill idempotently (printed by the first)")
    p.add_argument("--credentials", help="with --from: env:NAME or file:/path holding user:password "
                   "(default env:SERIALINE_OPCUA_USER)")
    p.add_argument("--pki", help="with --from: folder of the client certificate (default: LEDGER.opcua-pki)")
    p = sub.add_parser("create", help="create a batch")
    for a in ("batch_id", "gtin", "lot", "expiry"):
        p.add_argument(a)
    p.add_argument("--planned", type=int, required=True)
    p.add_argument("--case-size", type=int, required=True)
    p.add_argument("--pallet-size", type=int, required=True)
    p.add_argument("--site", help="SGLN or GLN of a configured site (default: the only one)")
    p.add_argument("--read-point", help="SGLN or GLN.EXT of the line (default: the site)")
    for name in ("start", "reconcile", "close"):
        p = sub.add_parser(name, help=f"{name} a batch" + (" (exit 1 if it lists a problem)" if name == "reconcile" else ""))
        p.add_argument("batch_id")
    sub.choices["start"].add_argument("--line", help="the line that runs it, when several lines of this ledger ask"
                                      " for a challenge ([policy] challenge in their line files)")
    sub.choices["start"].add_argument("--waive-challenge", metavar="REASON",
                                      help="start although the line's challenge is missing (a deviation: audited"
                                      " with the reason; run the challenge at the batch's start)")
    p = sub.add_parser("abort", help="end a stuck batch: units without an outcome rejected, unused serials back")
    p.add_argument("batch_id"); p.add_argument("--reason", required=True)
    sub.add_parser("return-serials", help="give a closed batch's unused serials back to the upstream OPEN-SCS pool"
                   " manager they came from (again, after a failure at close)").add_argument("batch_id")
    for name in ("close", "abort", "return-serials"):  # unused serials from upstream go back (docs/opcua.md)
        sub.choices[name].add_argument("--credentials", help="for serials from an upstream OPEN-SCS pool manager: "
                                       "env:NAME or file:/path holding user:password (default env:SERIALINE_OPCUA_USER)")
        sub.choices[name].add_argument("--pki", help="folder of the OPC UA client certificate (default: LEDGER.opcua-pki)")
    p = sub.add_parser("reopen", help="reopen a closed or aborted batch for rework (close it again after)")
    p.add_argument("batch_id"); p.add_argument("--reason", required=True)
    p = sub.add_parser("record", help="the batch record (JSON): what QA reviews and signs")
    p.add_argument("batch_id")
    p = sub.add_parser("history", help="a serial's every state change, oldest first (serial_history)")
    p.add_argument("gtin"); p.add_argument("serial")
    for name, help_ in (("review", "QA signs the closed batch's record 'reviewed' (password again)"),
                        ("release", "a second person signs the reviewed batch 'released' (password again)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("batch_id"); p.add_argument("--reason", help="optional note (at least 4 characters)")
    from . import resolve
    resolve.add_parser(sub)
    for p in sub.choices.values():
        _common(p)
    args = ap.parse_args(argv)

    def go(conn, a):
        action = ACTIONS[a.cmd]
        if getattr(a, "waive_challenge", None) is not None:  # the deviation is QA's decision, so is this start
            action = "challenge.waive"
        if action:
            for reason in (getattr(a, "reason", None), getattr(a, "waive_challenge", None)):
                if reason is not None:  # a bad reason is said before any password is asked
                    audit.check_reason(reason)
            users.act(conn, a.user, action)
        if a.cmd == "product":
            dscsa = {k: getattr(a, k) for k in ("ndc", "dosage_form", "strength", "net_content", "manufacturer")}
            masterdata.add_product(conn, a.gtin, a.name, a.market, a.prefix_len, a.nhrn_ai, a.nhrn, **dscsa, user=a.user)
            print(f"added product {a.gtin} ({a.name}, {a.market})")
        elif a.cmd == "master":
            m = masterdata.set_product_master(conn, a.gtin, user=a.user, **{
                k: getattr(a, k) for k in ("ndc", "dosage_form", "strength", "net_content", "manufacturer")})
            print(f"product {m.gtin} master data: NDC {m.ndc or '-'}, {m.dosage_form or '-'}, {m.strength or '-'},"
                  f" {m.net_content or '-'}, made by {m.manufacturer or '-'}")
        elif a.cmd == "site":
            loc = masterdata.Location(masterdata.sgln(a.sgln, a.prefix_len), a.name, a.street, a.city, a.state,
                                      a.postal, a.country, a.tz)
            new = masterdata.set_location(conn, loc, user=a.user)
            kind = "site" if masterdata.get_location(conn, loc.sgln).tz else "location"
            print(f"{'added' if new else 'updated'} {kind} {loc.sgln} ({loc.name})")
        elif a.cmd == "serials":
            # staged in chunks, published with its audit record in one transaction (host/serials.py)
            def progress(line):
                print(line, file=sys.stderr, flush=True)
            if a.upstream is not None:  # OPEN-SCS client (host/opcua/client.py)
                from .opcua import client
                if not a.count:
                    raise ValueError("--from needs --count N")
                got = client.fill(conn, a.gtin, a.count, a.upstream, token=a.request_token, user=a.user,
                                  credentials_spec=a.credentials, pki=a.pki or f"{a.db}.opcua-pki", progress=progress)
                print(f"request token {got.token}: " + ("already imported, nothing new" if got.already else
                      f"{got.count} serials from {a.upstream} added to {a.gtin}; {serials.available(conn, a.gtin)} available"))
                return
            try:
                if a.generate is not None:
                    added = serials.generate_pool(conn, a.gtin, a.generate, user=a.user, progress=progress)
                else:
                    added = serials.import_serials(conn, a.gtin, serials.read_import_file(a.import_file),
                                                   a.import_file, user=a.user, progress=progress)
            except serials.GenerationInterrupted as exc:
                print(f"serialine: {exc}", file=sys.stderr)
                return 130
            print(added.statement)
            if added.randomness is not None and added.randomness.predictable:
                print(f"warning: this pool is predictable; the market of {a.gtin} has no randomisation rule, "
                      "but anyone holding one pack can guess others", file=sys.stderr)
            n = added.count
            print(f"{n} serials added to {a.gtin} in {added.chunks} write transaction(s) (the longest held the "
                  f"ledger {added.longest_write_s:.2f} s); {serials.available(conn, a.gtin)} available")
            warn = serials.low_water(conn, a.gtin)
            if warn:
                print("warning: " + warn, file=sys.stderr)
        elif a.cmd == "create":
            b = masterdata.create_batch(conn, a.batch_id, a.gtin, a.lot, a.expiry, a.planned, a.case_size,
                                        a.pallet_size, site=a.site, read_point=a.read_point, user=a.user)
            print(f"created batch {b.batch_id}: GTIN {b.gtin}, lot {b.lot}, expiry {gs1.expiry_text(b.expiry)},"
                  f" {b.planned} planned, cases of {b.case_size}, pallets of {b.pallet_size}")
            for w in reconcile.reconcile(conn, b.batch_id).warnings:
                print("warning: " + w, file=sys.stderr)
            if b.site is None:
                print("warning: no site configured: EPCIS events carry the placeholder location "
                      f"{reporting.context_for(b).biz_location} in UTC (serialine batch site … --tz ZONE)",
                      file=sys.stderr)
        elif a.cmd == "start":
            from . import challenge  # the line's [policy] challenge, as its configuration records say it
            challenge.check_batch_start(conn, a.batch_id, a.line, waive=a.waive_challenge, user=a.user)
            masterdata.start_batch(conn, a.batch_id, user=a.user)
            print(f"batch {a.batch_id} started")
        elif a.cmd == "reconcile":
            report = reconcile.reconcile(conn, a.batch_id)
            print("\n".join(report.lines()))
            return 1 if report.problems else 0
        elif a.cmd == "abort":
            n = lifecycle.abort(conn, a.batch_id, a.user, a.reason)
            print(f"batch {a.batch_id} aborted: {n['units_rejected']} unit(s) without an outcome rejected, "
                  f"{n['serials_rejected_printed'] + n['serials_rejected_queued']} serial(s) written off as rejected "
                  f"(printed or sent to a coder), {n['serials_returned']} returned to the pool"
                  + (f", partial containers closed: {', '.join(n['closed_partial'])}" if n["closed_partial"] else ""))
            _return_upstream(conn, a)
        elif a.cmd == "return-serials":
            state = masterdata.get_batch(conn, a.batch_id).state
            if state not in ("closed", "aborted"):
                raise ValueError(f"batch {a.batch_id} is {state}: its unused serials go back when it is closed")
            if not _return_upstream(conn, a):
                print(f"batch {a.batch_id}: no serials due upstream")
        elif a.cmd == "reopen":
            lifecycle.reopen(conn, a.batch_id, a.user, a.reason)
            print(f"batch {a.batch_id} reopened for rework; close it again when done")
        elif a.cmd == "resolve":
            resolve.run(conn, a)
        elif a.cmd == "record":
            import json
            from . import release
            print(json.dumps(release.batch_record(conn, a.batch_id), indent=1, ensure_ascii=False))
        elif a.cmd == "history":
            steps = db.serial_trail(conn, a.gtin, a.serial)
            print(f"serial {a.gtin}/{a.serial}: {len(steps)} change(s)" + ("" if steps else ", still as it was made"))
            for seq, at, old, new, batch_id in steps:
                print(f"  {at}  {old} -> {new}  batch {batch_id}  (seq {seq})")
        elif a.cmd in ("review", "release"):
            _sign(conn, a)
        elif a.cmd == "close":
            try:
                report = reconcile.close_batch(conn, a.batch_id, a.user)
            except reconcile.ReconcileError as exc:
                print("\n".join(exc.report.lines()))
                raise
            print("\n".join(report.lines()))
            print(f"batch {a.batch_id} closed")
            _return_upstream(conn, a)
    return _run(_anchored(go, "batch"), args, create=args.cmd == "product")


def _return_upstream(conn, a) -> bool:
    """The batch's unused serials that came from an upstream OPEN-SCS pool manager go back to it
    (host/opcua/client.py return_unused); a failure leaves them marked due and says so in one line."""
    if not conn.execute("SELECT 1 FROM serial_history h JOIN batch_ref r ON r.ref = h.batch_ref JOIN serial s"
                        " ON s.serial_id = h.serial_id WHERE r.batch_id=? AND s.source LIKE 'opcua %' LIMIT 1",
                        (a.batch_id,)).fetchone():
        return False
    from .opcua import client
    r = client.return_unused(conn, a.batch_id, user=a.user, credentials_spec=a.credentials,
                             pki=a.pki or f"{a.db}.opcua-pki")
    if r.line:
        print(("warning: " if r.due else "") + r.line, file=sys.stderr if r.due else sys.stdout)
    return bool(r.line)


def _sign(conn, a) -> None:
    """`batch review|release B --user U`: the signature itself proves who (§11.200: the password again)."""
    from . import release
    if not users.present(conn):
        raise users.AuthError("signatures need users in the ledger: serialine users add NAME --role admin ... first"
                              " (docs/part11.md)")
    meaning = "reviewed" if a.cmd == "review" else "released"
    if a.reason is not None:
        audit.check_reason(a.reason)
    password = users.read_password(f"password for {a.user} (signs batch {a.batch_id} '{meaning}'): ")
    s = getattr(release, a.cmd)(conn, a.batch_id, a.user, password, reason=a.reason)
    print(f"batch {a.batch_id}: {s.manifestation()}; record sha256 {s.content_sha256}")


def rework_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine rework")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("remove", help="take a pack out of its case"); p.add_argument("gtin"); p.add_argument("serial")
    p = sub.add_parser("add", help="put a pack into a case"); p.add_argument("sscc"); p.add_argument("gtin"); p.add_argument("serial")
    p = sub.add_parser("replace", help="replace a pack in its case")
    p.add_argument("gtin"); p.add_argument("old_serial"); p.add_argument("new_serial")
    p = sub.add_parser("disaggregate", help="empty a case or pallet"); p.add_argument("sscc")
    p = sub.add_parser("decommission", help="destroyed / sampled / decommissioned: a pack or (--sscc) a whole container")
    p.add_argument("kind", choices=rework.KINDS)
    p.add_argument("target", nargs="+", help="GTIN SERIAL, or --sscc SSCC")
    p.add_argument("--sscc", action="store_true", help="target is an SSCC: decommission recursively")
    for p in sub.choices.values():
        _common(p)
        p.add_argument("--reason", required=True)
    args = ap.parse_args(argv)

    def go(conn, a):
        audit.check_reason(a.reason)
        users.act(conn, a.user, "rework")
        if a.cmd == "remove":
            print(f"pack {a.serial} removed from case {rework.remove_pack(conn, a.gtin, a.serial, a.user, a.reason)}")
        elif a.cmd == "add":
            rework.add_pack(conn, a.sscc, a.gtin, a.serial, a.user, a.reason)
            print(f"pack {a.serial} added to case {a.sscc}")
        elif a.cmd == "replace":
            sscc = rework.replace_pack(conn, a.gtin, a.old_serial, a.new_serial, a.user, a.reason)
            print(f"pack {a.old_serial} replaced by {a.new_serial} in case {sscc}")
        elif a.cmd == "disaggregate":
            print(f"{a.sscc} emptied: {len(rework.disaggregate(conn, a.sscc, a.user, a.reason))} children released")
        elif a.cmd == "decommission":
            if a.sscc:
                n = rework.decommission_container(conn, a.target[0], a.kind, a.user, a.reason)
                print(f"{a.target[0]}: {n} packs {a.kind}")
            else:
                if len(a.target) != 2:
                    raise ValueError("decommission a pack: GTIN SERIAL")
                rework.decommission(conn, a.target[0], a.target[1], a.kind, a.user, a.reason)
                print(f"pack {a.target[1]} {a.kind}")
    return _run(_anchored(go, "rework"), args)


def init_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine init", description="create an empty ledger")
    _common(ap)
    args = ap.parse_args(argv)

    def go():
        if ledgerfile.is_ledger(args.db):
            print(f"a ledger already exists at {args.db}; nothing changed")
            return 0
        conn = ledgerfile.open_ledger(args.db, create=True)
        try:
            with db.transaction(conn):
                audit.append(conn, args.user, "ledger.init", {"path": os.path.abspath(args.db)})
        finally:
            conn.close()
        print(f"created ledger {args.db}")
        return 0
    return ledgerfile.run("serialine init", go)


def audit_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine audit")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("verify", help="check the chain, its anchors, the sealed tables and the outbox eventIDs")
    p.add_argument("--anchor", action="append", default=[], metavar="HASH|FILE",
                   help="a recorded head (SEQ:HASH or HASH) or a file holding some (batch output, EPCIS"
                        " document, anchors trail); repeatable. <db>.anchors is always checked")
    p.add_argument("--strict", action="store_true", help="also fail if records follow the newest anchor")
    _common(p)
    p = sub.add_parser("checkpoint", help="seal the append-only logs so far (device events, serial history,"
                                          " alarms, outbox bodies): covers running batches; run it periodically")
    _common(p)
    p = sub.add_parser("list", help="show the trail")
    p.add_argument("--db", default=os.environ.get("SERIALINE_DB", "serialine.db"), help="ledger file")
    p.add_argument("--batch"); p.add_argument("--since", metavar="ISO"); p.add_argument("--user", metavar="U")
    p.add_argument("--action", metavar="A", help="exact, or a prefix ending in '.' (rework.)")
    args = ap.parse_args(argv)

    def go(conn, a):
        if a.cmd == "verify":
            anchors = [x for spec in a.anchor for x in audit.read_anchors(spec)]
            ok, _, message = audit.verify(conn, anchors, strict=a.strict)
            print(message, file=sys.stdout if ok else sys.stderr)
            return 0 if ok else 1
        elif a.cmd == "checkpoint":
            users.act(conn, a.user, "audit.checkpoint")
            audit.checkpoint(conn, a.user)
            print(f"checkpoint sealed; audit head {audit.anchor(conn, f'audit checkpoint by {a.user}')}")
        else:
            _print_trail(audit.records(conn, a.batch, a.since, a.user, a.action))
    return _run(go, args)


def _print_trail(rows) -> None:
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Column, Table
        t = Table("seq", Column("at (UTC)", no_wrap=True), "user", "action", Column("detail", overflow="fold"))
        for seq, at, user, action, detail in rows:
            t.add_row(str(seq), at[:23], user, action, _brief(detail))
        Console().print(t)
    else:
        for seq, at, user, action, detail in rows:
            print(f"{seq}\t{at}\t{user}\t{action}\t{_brief(detail)}")
    print(f"{len(rows)} record(s)", file=sys.stderr)


def _brief(detail: str) -> str:
    import json
    d = json.loads(detail)
    if isinstance(d, dict):  # digests are for verify, not for reading: a checkpoint shows its row counts
        d.pop("seal", None)
        if isinstance(d.get("parts"), dict):
            d["parts"] = {k.removeprefix("log:"): v.get("rows") for k, v in d["parts"].items() if isinstance(v, dict)}
        d = {k: v for k, v in d.items() if v is not None}
    return json.dumps(d, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
