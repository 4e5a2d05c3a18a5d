"""Reads what the host recorded (its SQLite ledger, its EPCIS output) into the report's `Ledger`,
checking it against what the simulator saw on the wire and on the line:

- units in detection order across boots (boots ordered by their first stored event), each with the
  UNIT_OUTCOME events stored for it — exactly one when accounted for;
- events lost: gaps in a boot's stored event_seq numbers (the device numbers events 0, 1, 2, ...);
- serials issued twice: a (gtin, serial) bound to two units, or a code the coder printed twice;
- EPCIS: every document in the output directory validated against GS1's JSON Schema."""

from __future__ import annotations

import collections
import json
import sqlite3
from pathlib import Path

from serialine.protocol.schema import Alarm, Outcome, Reason

from .report import Ledger, UnitRecord

_OUTCOME = {o.name: int(o) for o in Outcome}
_OUTCOME["PURGED"] = int(Outcome.REJECTED_UNCONFIRMED)  # the host closes units lost in a restart


def _reason(text) -> int:
    if text is None:
        return int(Reason.OK)
    if isinstance(text, int):
        return text
    try:
        return int(Reason[str(text).upper()])
    except KeyError:
        return int(text) if str(text).isdigit() else -1


def read(db_path: Path, batch_id: str, *, printed_codes: list[str], epcis_dir: Path,
         reconciliation_ok: bool, verdict_latency: dict | None = None) -> Ledger:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        boots = [tuple(r) for r in conn.execute(
            "SELECT device_id, boot_id FROM device_event GROUP BY device_id, boot_id ORDER BY MIN(received_at)")]
        outcomes = collections.defaultdict(list)
        seqs = collections.defaultdict(list)
        device_alarms = collections.Counter()
        for dev, boot, eseq, name, useq, body in conn.execute(
                "SELECT device_id, boot_id, event_seq, msg_name, unit_seq, body FROM device_event"):
            seqs[(dev, boot)].append(eseq)
            if name == "ALARM":
                f = json.loads(body)
                if f.get("active"):
                    device_alarms[Alarm(int(f["alarm"])).name.lower()] += 1
            if name == "UNIT_OUTCOME":
                f = json.loads(body)
                outcomes[(dev, boot, useq)].append((_OUTCOME.get(str(f.get("outcome")).upper(), f.get("outcome")),
                                                    _reason(f.get("reason")), f.get("gate_error")))
        rows = {(d, b, u): (o, r) for d, b, u, o, r in conn.execute(
            "SELECT device_id, boot_id, unit_seq, outcome, reason FROM unit WHERE batch_id = ? AND test = 0",
            (batch_id,))}
        units = []
        for k, (dev, boot) in enumerate(boots):
            for (d, b, u) in sorted(key for key in rows if key[:2] == (dev, boot)):
                outs = outcomes.get((d, b, u), [])
                o, r = rows[(d, b, u)]
                if not outs and o == "PURGED":  # closed by the host, not by a device event
                    outs = [(_OUTCOME["PURGED"], int(Reason.PURGE), None)]
                lat = (verdict_latency or {}).get((k, u))
                units.append(UnitRecord([(x[0], x[1]) for x in outs],
                                        gate_error=outs[0][2] if outs else None, verdict_latency_ms=lat))
        lost = 0
        for s in seqs.values():
            s = sorted(set(s))
            lost += (s[-1] - s[0] + 1 - len(s)) + s[0]  # a gap, or a boot whose first events are missing
        twice = conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM unit WHERE serial IS NOT NULL GROUP BY gtin, serial HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        twice += sum(n - 1 for n in collections.Counter(printed_codes).values() if n > 1)
        cases = conn.execute("SELECT COUNT(*) FROM container WHERE batch_id = ? AND level = 'case' AND state = 'closed'",
                             (batch_id,)).fetchone()[0]
        pallets = conn.execute("SELECT COUNT(*) FROM container WHERE batch_id = ? AND level = 'pallet' AND state = 'closed'",
                               (batch_id,)).fetchone()[0]
        alarms = collections.Counter(a.lower() for (a,) in conn.execute("SELECT alarm FROM alarm_log"))
        alarms.update(device_alarms)
    finally:
        conn.close()
    n_events, errors = epcis(epcis_dir)
    return Ledger(batch=batch_id, units=units, serials_issued_twice=twice, events_lost=lost,
                  reconciliation_ok=reconciliation_ok, epcis_events=n_events,
                  epcis_valid=not errors and n_events > 0, cases=cases, pallets=pallets,
                  alarms=dict(alarms), epcis_errors=errors)


def epcis(directory: Path) -> tuple[int, list[str]]:
    """Events in the EPCIS documents written to `directory`, and every validation error."""
    from serialine.host.epcis.validate import InvalidDocument, json_document

    n, errors = 0, []
    for path in sorted(Path(directory).glob("*.jsonld")):
        try:
            d = json.loads(path.read_text())
            json_document(d)
        except (ValueError, InvalidDocument) as exc:
            errors.append(f"{path.name}: {exc}")
            continue
        n += len(d.get("epcisBody", {}).get("eventList", []))
    return n, errors
