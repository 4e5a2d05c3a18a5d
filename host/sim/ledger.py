"""Reads what the host recorded (its SQLite ledger, its EPCIS output) into the report's `LedgerView`,
checking it against what the simulator saw on the wire and on the line:

- units in detection order: the simulator knows each pack's (boot, unit_seq) and the device's boot
  ids, so a pack with no unit row is seen as such, with the outcome events stored for it;
- what the ledger says about every code the coder was given (by the code, as printed on a pack):
  its serial's state and the outcome of the unit it is bound to;
- sequence gaps: a boot's stored event_seq numbers not contiguous from 0;
- serials issued twice: a (gtin, serial) bound to two units, or a code the coder printed twice;
- EPCIS: every document in the output directory validated against GS1's JSON Schema."""

from __future__ import annotations

import collections
import json
import sqlite3
from pathlib import Path

from serialine.protocol.schema import Alarm, Outcome, Reason

from .. import devevents
from .report import UNKNOWN, CodeRecord, LedgerView, UnitRecord

_OUTCOME = {o.name: int(o) for o in Outcome}
_OUTCOME["PURGED"] = int(Outcome.REJECTED_UNCONFIRMED)  # the host closes units lost in a restart
_OUTCOME["UNKNOWN"] = UNKNOWN  # an outcome the host never received (pending a person's resolution)
_OUTCOME["DESTROYED"] = UNKNOWN  # ... that a person then resolved


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
         reconciliation_ok: bool, verdict_latency: dict | None = None,
         unit_keys: list | None = None, device_id: str = "sim-line-1",
         boot_ids: list[int] | None = None) -> LedgerView:
    """`unit_keys[i]`: pack i's (boot number, unit_seq) from the line (None: never detected);
    `boot_ids[n]`: the device's boot_id for boot number n."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        outcomes = collections.defaultdict(list)
        seqs = collections.defaultdict(list)
        device_alarms = collections.Counter()
        for dev, boot, eseq, name, useq, f, _ in devevents.events(conn):
            seqs[(dev, boot)].append(eseq)
            if name == "ALARM":
                if f.get("active"):
                    try:
                        device_alarms[Alarm(int(f["alarm"])).name.lower()] += 1
                    except (ValueError, KeyError, TypeError):
                        device_alarms["invalid"] += 1
            if name == "UNIT_OUTCOME":
                outcomes[(dev, boot, useq)].append((_OUTCOME.get(str(f.get("outcome")).upper(), f.get("outcome")),
                                                    _reason(f.get("reason")), f.get("gate_error")))
        rows = {(d, b, u): (o, r) for d, b, u, o, r in conn.execute(
            "SELECT device_id, boot_id, unit_seq, outcome, reason FROM unit WHERE batch_id = ? AND test = 0",
            (batch_id,))}

        def record(key, lat):
            if key not in rows:
                return UnitRecord(outcomes=[(x[0], x[1]) for x in outcomes.get(key, [])], row=False,
                                  verdict_latency_ms=lat)
            outs = outcomes.get(key, [])
            o, r = rows[key]
            from_device = bool(outs)
            if not outs and o is not None:  # closed by the host, not by a device event
                outs = [(_OUTCOME.get(o, -1), _reason(r) if o != "PURGED" else int(Reason.PURGE), None)]
            return UnitRecord([(x[0], x[1]) for x in outs], gate_error=outs[0][2] if outs else None,
                              verdict_latency_ms=lat, from_device=from_device)

        units, extra = [], 0
        if unit_keys is not None and boot_ids is not None:
            seen = set()
            for k in unit_keys:
                if k is None:
                    continue
                key = (device_id, boot_ids[k[0]], k[1]) if k[0] < len(boot_ids) else None
                seen.add(key)
                units.append(record(key, (verdict_latency or {}).get(k)))
            extra = sum(1 for key in rows if key not in seen)
        else:  # no line to align with: boots in the order of their first stored event
            boots = [tuple(r) for r in conn.execute(
                "SELECT r.device_id, r.boot_id FROM device_event e JOIN device_boot_ref r ON r.ref = e.boot_ref"
                f" GROUP BY e.boot_ref ORDER BY MIN({devevents.received_sql()})")]
            for k, (dev, boot) in enumerate(boots):
                for key in sorted(key for key in rows if key[:2] == (dev, boot)):
                    units.append(record(key, (verdict_latency or {}).get((k, key[2]))))
        gaps = 0
        for s in seqs.values():
            s = sorted(set(s))
            gaps += (s[-1] - s[0] + 1 - len(s)) + s[0]  # a gap, or a boot whose first events are missing
        codes = {}
        for code, serial, state, outcome in conn.execute(
                "SELECT j.code, j.serial, s.state, u.outcome FROM coder_job j"
                " JOIN coder_job_row r ON r.job_id = j.job_id JOIN serial s ON s.serial_id = r.serial_id"
                " LEFT JOIN unit_row u ON u.serial_id = r.serial_id"
                " WHERE j.batch_id = ?", (batch_id,)):  # by serial_id: rowid probes, not serial's text index
            codes[code] = CodeRecord(serial, state, outcome)
        commissioned = [serial for (serial,) in conn.execute(
            "SELECT serial FROM serial WHERE batch_id = ? AND state = 'commissioned'", (batch_id,))]
        twice = conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM unit_row WHERE serial_id IS NOT NULL GROUP BY serial_id HAVING COUNT(*) > 1)"
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
    return LedgerView(batch=batch_id, units=units, serials_issued_twice=twice, sequence_gaps=gaps,
                      reconciliation_ok=reconciliation_ok, epcis_events=n_events,
                      epcis_valid=not errors and n_events > 0, cases=cases, pallets=pallets,
                      alarms=dict(alarms), epcis_errors=errors, codes=codes, commissioned=commissioned,
                      extra_units=extra)


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
