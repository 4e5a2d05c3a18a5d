"""The EPCIS story as a receiver sees it (test helpers, and a command for a whole run's ledger).

`replay` folds a batch's events, in eventTime order, into containment (child EPC -> parent SSCC)
and serial status, refusing any change that is impossible or already made (packed before
commissioned, unpacked from a container it is not in, an end of life twice...); `ledger_story`
reads the same two things from the ledger, so a test compares them after every change.

`rehash` re-hashes a batch's events the three ways a receiver gets them (the JSON-LD document as
emitted, the same events with the `cbvmda` prefix declared inline the way GS1's hash-generator
test files do, the EPCIS 1.2 XML export), each with GS1's reference `epcis-event-hash-generator`
(a fresh process per file: it keeps the namespaces it has seen in a global) and with our own
`eventhash` (on the JSON events, and on the events read back from the XML).

    python tests/epcis/story.py OUT/serialine.db [BATCH] [--sender SGLN] [--receiver SGLN]
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from lxml import etree

from serialine.host.epcis import document, eventhash, xml12

# the ends of life an ObjectEvent DELETE reports: (bizStep, status before) -> ledger state
_ENDS = {("destroying", "commissioned"): "destroyed", ("destroying", "sampling"): "destroyed",
         ("decommissioning", "commissioned"): "decommissioned", ("decommissioning", "sampling"): "sampled"}


class StoryError(AssertionError):
    pass


def _instant(event: dict) -> datetime:
    return datetime.fromisoformat(event["eventTime"])


def replay(events: list[dict]) -> tuple[dict[str, str], dict[str, str]]:
    """→ (parent of each contained EPC, status of each serialised item) after all the events."""
    times = [_instant(e) for e in events]
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            raise StoryError(f"event {i} ({events[i]['bizStep']}) is not after event {i - 1} "
                             f"({events[i - 1]['bizStep']}): {events[i]['eventTime']} vs {events[i - 1]['eventTime']}")
    parents: dict[str, str] = {}
    status: dict[str, str] = {}
    for e in sorted(events, key=_instant):
        step, action = e["bizStep"], e["action"]
        if e["type"] == "ObjectEvent":
            for epc in e["epcList"]:
                before = status.get(epc)
                if (action, step) == ("ADD", "commissioning") and before is None:
                    status[epc] = "commissioned"
                elif (action, step) == ("OBSERVE", "sampling") and before == "commissioned":
                    status[epc] = "sampling"
                elif action == "DELETE" and (step, before) in _ENDS and epc not in parents:
                    status[epc] = _ENDS[step, before]
                else:
                    raise StoryError(f"{action} {step} of {epc} while it is {before or 'unknown'}"
                                     + (f", in {parents[epc]}" if epc in parents else ""))
        elif e["type"] == "AggregationEvent":
            parent = e["parentID"]
            for child in e["childEPCs"]:
                if action == "ADD":
                    if child in parents:
                        raise StoryError(f"{child} packed into {parent} while in {parents[child]}")
                    if not child.startswith("urn:epc:id:sscc:") and status.get(child) != "commissioned":
                        raise StoryError(f"{child} packed into {parent} while {status.get(child, 'uncommissioned')}")
                    parents[child] = parent
                elif action == "DELETE":
                    if parents.get(child) != parent:
                        raise StoryError(f"{child} unpacked from {parent} but it is in {parents.get(child)}")
                    del parents[child]
                else:
                    raise StoryError(f"AggregationEvent {action}")
        else:
            raise StoryError(f"unexpected {e['type']}")
    if "sampling" in status.values():
        raise StoryError("a sample was observed but its end of life never reported")
    return parents, status


def ledger_story(conn: sqlite3.Connection, batch_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """The ledger's containment (closed containers only: an open one has no SSCC yet) and the
    states of the batch's serials that EPCIS reports (commissioned, and what became of those)."""
    from serialine.host import reporting
    from serialine.host.masterdata import get_batch
    b = get_batch(conn, batch_id)
    parents = {reporting.sgtin(b, s): reporting.sscc(b, c) for s, c in conn.execute(
        "SELECT p.serial, c.sscc FROM packed p JOIN container c USING (container_id)"
        " WHERE c.batch_id=? AND c.state='closed'", (batch_id,))}
    parents.update({reporting.sscc(b, c): reporting.sscc(b, p) for c, p in conn.execute(
        "SELECT c.sscc, p.sscc FROM container c JOIN container p ON p.container_id = c.parent_id"
        " WHERE c.batch_id=? AND c.state='closed' AND p.state='closed'", (batch_id,))})
    status = {reporting.sgtin(b, s): st for s, st in conn.execute(
        "SELECT serial, state FROM serial WHERE batch_id=? AND state IN"
        " ('commissioned', 'destroyed', 'sampled', 'decommissioned')", (batch_id,))}
    return parents, status


def check_story(conn: sqlite3.Connection, batch_id: str) -> tuple[dict, dict]:
    """Replay the batch's outbox and compare with the ledger; → the replayed story."""
    from serialine.host.epcis import outbox
    parents, status = replay(outbox.batch_events(conn, batch_id))
    want_parents, want_status = ledger_story(conn, batch_id)
    if parents != want_parents:
        extra = {k: v for k, v in parents.items() if want_parents.get(k) != v}
        missing = {k: v for k, v in want_parents.items() if parents.get(k) != v}
        raise StoryError(f"containment: EPCIS has {extra}, the ledger {missing}")
    # a pack destroyed before it was ever commissioned has no EPCIS story: compare what EPCIS knows
    differ = {epc: (st, want_status.get(epc)) for epc, st in status.items() if want_status.get(epc) != st}
    unreported = [epc for epc, st in want_status.items() if st == "commissioned" and epc not in status]
    if differ or unreported:
        raise StoryError(f"status (EPCIS, ledger): {differ}; commissioned but never reported: {unreported}")
    return parents, status


# --- the three renderings -------------------------------------------------------------------

GS1_STYLE_CONTEXT = [document.CONTEXT_URL, {"gs1": "https://gs1.org/voc/"},
                     {"example": "https://ns.example.com/epcis/"}, {"cbvmda": eventhash.PREFIXES["cbvmda"]}]
_HASH = re.compile(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0")


def reference_hashes(path: Path) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "epcis_event_hash_generator", str(path)],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    return _HASH.findall(out)


def renderings(events: list[dict], sender: str, receiver: str, out: Path, jsonld: bytes | None = None,
               xml: bytes | None = None) -> dict[str, Path]:
    """The three files (given exports, or made here from the events)."""
    out.mkdir(parents=True, exist_ok=True)
    emitted = json.loads(jsonld) if jsonld else document.epcis_document(events)
    declared = dict(emitted, **{"@context": GS1_STYLE_CONTEXT})
    files = {"jsonld": emitted, "jsonld_declared": declared}
    paths = {}
    for name, doc in files.items():
        paths[name] = out / f"{name}.jsonld"
        paths[name].write_bytes(document.dumps(doc))
    paths["xml12"] = out / "export.xml"
    paths["xml12"].write_bytes(xml or xml12.document(events, sender, receiver))
    return paths


_BIZSTEP, _DISP = "urn:epcglobal:cbv:bizstep:", "urn:epcglobal:cbv:disp:"
_NS_PREFIX = {iri: prefix for prefix, iri in eventhash.PREFIXES.items()}


def xml_events(data: bytes) -> list[dict]:
    """The events of an EPCIS 1.2 document read back into the JSON-LD form (an independent
    reader: what a 1.2 receiver holds), for our own hash to re-hash."""
    root = etree.fromstring(data)
    found = []
    for el in root.find("EPCISBody/EventList"):
        e: dict = {"type": el.tag}
        for child in el:
            tag = child.tag
            if tag in ("eventTime", "eventTimeZoneOffset", "parentID", "action"):
                e[tag] = child.text
            elif tag in ("epcList", "childEPCs"):
                e[tag] = [epc.text for epc in child]
            elif tag == "bizStep":
                e[tag] = child.text.removeprefix(_BIZSTEP)
            elif tag == "disposition":
                e[tag] = child.text.removeprefix(_DISP)
            elif tag in ("readPoint", "bizLocation"):
                e[tag] = {"id": child.findtext("id")}
            elif tag == "baseExtension":
                e["eventID"] = child.findtext("eventID")
            elif tag == "extension" and child.find("ilmd") is not None:
                e["ilmd"] = {}
                for item in child.find("ilmd"):
                    ns, local = item.tag[1:].split("}")
                    e["ilmd"][f"{_NS_PREFIX[ns]}:{local}"] = item.text
            else:
                raise StoryError(f"1.2 reader: unexpected <{tag}> in {el.tag}")
        found.append(e)
    return found


def rehash(events: list[dict], paths: dict[str, Path]) -> dict[str, dict[str, int]]:
    """→ {rendering: {"reference": n, "own": n, "events": n}}: how many re-hash to their eventID."""
    ids = [e["eventID"] for e in events]
    counts = {}
    for name, path in paths.items():
        ref = reference_hashes(path)
        if name == "xml12":
            read = xml_events(path.read_bytes())
        else:
            read = json.loads(path.read_text())["epcisBody"]["eventList"]
        own = [eventhash.event_hash(e) for e in read]
        counts[name] = {"events": len(ids),
                        "reference": sum(a == b for a, b in zip(ref, ids)) if len(ref) == len(ids) else 0,
                        "own": sum(a == b for a, b in zip(own, ids)) if len(own) == len(ids) else 0}
    return counts


def main(argv: list[str]) -> int:
    import argparse
    from serialine.host.epcis import outbox
    parser = argparse.ArgumentParser(prog="story.py")
    parser.add_argument("db")
    parser.add_argument("batch", nargs="*")
    parser.add_argument("--sender")
    parser.add_argument("--receiver", default="urn:epc:id:sgln:0614141.00001.0")
    args = parser.parse_args(argv)
    conn = sqlite3.connect(args.db)
    batches = args.batch or [b for (b,) in conn.execute("SELECT DISTINCT batch_id FROM epcis_outbox")]
    serialine = str(Path(sys.executable).parent / "serialine")
    for batch in batches:
        events = outbox.batch_events(conn, batch)
        kinds: dict[str, int] = {}
        for e in events:
            kinds[f"{e['type']}/{e['bizStep']}"] = kinds.get(f"{e['type']}/{e['bizStep']}", 0) + 1
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            xml_args = ["--receiver", args.receiver] + (["--sender", args.sender] if args.sender else [])
            xml = None
            for fmt, extra in (("jsonld", []), ("xml12", xml_args)):
                done = subprocess.run([serialine, "epcis", "export", "--batch", batch, "--format", fmt,
                                       "--out", str(out / "export"), "--db", args.db, *extra,
                                       # one document: the renderings below re-hash the batch as one
                                       "--max-events", str(len(events) + 1)],
                                      capture_output=True, text=True)
                if done.returncode and fmt == "xml12" and "lacks DSCSA master data" in done.stderr:
                    # an EU product (e.g. serialine sim's) has no DSCSA header data: the events are
                    # rendered by the same 1.2 writer, without the master data the export requires
                    print(f"{batch}: {done.stderr.strip().splitlines()[-1]}; 1.2 rendered without it",
                          file=sys.stderr)
                elif done.returncode:
                    raise SystemExit(f"export {fmt}: {done.stderr.strip()}")
                elif fmt == "xml12":
                    xml = next((out / "export").glob("*.xml")).read_bytes()
            jsonld = next((out / "export").glob("*.jsonld")).read_bytes()
            sender = args.sender or next((e["bizLocation"]["id"] for e in events if "bizLocation" in e), args.receiver)
            counts = rehash(events, renderings(events, sender, args.receiver, out / "r", jsonld=jsonld, xml=xml))
        story = check_story(conn, batch)
        print(json.dumps({"batch": batch, "kinds": kinds, "rehash": counts,
                          "replay": {"contained": len(story[0]), "items": len(story[1])}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
