"""Device events into the ledger. `store()` is idempotent on (device_id, boot_id, event_seq): a
retransmitted event finds its row and changes nothing. Callers wrap a whole poll's events in one
transaction and acknowledge to the device only after it commits.

Which serial goes with which unit: the coder prints the head of its queue at each trigger, so the
oldest still-queued coder job is bound to the unit of each UNIT_PRINTED, in arrival order."""

from __future__ import annotations

import collections
import json
import sqlite3
import time

from serialine.protocol.schema import Outcome, Reason

from . import gs1, reporting, serials
from .aggregation import Aggregator
from .masterdata import Batch, get_batch
from .verdicts import Judge

UNIT_EVENTS = ("UNIT_DETECTED", "UNIT_PRINTED", "UNIT_INSPECTED", "UNIT_OUTCOME")


def _body(fields: dict) -> str:
    """The event's fields as compact JSON (flat ints on the hot path: formatted directly)."""
    if all(type(v) is int for v in fields.values()):
        return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"
    return json.dumps(fields, separators=(",", ":"), default=str)


class LedgerError(ValueError):
    pass


def _name(enum_cls, value) -> str:
    return enum_cls(int(value)).name


class Ledger:
    def __init__(self, conn: sqlite3.Connection, batch_id: str, ctx=None, min_grade: float = 1.5):
        self.conn = conn
        self.batch: Batch = get_batch(conn, batch_id)
        if self.batch.state != "running":
            raise LedgerError(f"batch {batch_id} is {self.batch.state}, not running")
        self.ctx = ctx or reporting.context_for(self.batch)
        self.agg = Aggregator(conn, self.batch, self.ctx)
        seen = {s for (s,) in conn.execute(
            "SELECT read_serial FROM unit WHERE read_serial IS NOT NULL"
            " AND batch_id IN (SELECT batch_id FROM batch WHERE gtin=?)", (self.batch.gtin,))}
        self.judge = Judge(batch_id, self.batch.gtin, self.batch.lot, self._serial_batch, seen, min_grade)
        self._commissioned: list[str] = []  # passed in this transaction: one commissioning event
        # hot-path mirrors of the DB (rebuilt here at start; a rolled-back transaction resets them)
        self._queue = collections.deque(conn.execute(
            "SELECT serial, code FROM coder_job WHERE batch_id=? AND state='queued' ORDER BY job_id",
            (batch_id,)).fetchall())
        self._bound: dict[tuple, tuple[str, str]] = {}  # unit key -> (serial, code)
        self._tpl = None

    # --- lookups ---
    def _serial_batch(self, serial: str) -> str | None:
        row = self.conn.execute("SELECT batch_id, state FROM serial WHERE gtin=? AND serial=?",
                                (self.batch.gtin, serial)).fetchone()
        if row is None or row[1] == "available":
            return None
        return row[0]

    def _template(self):
        """The batch's code around its serial, validated once: (head, tail, pairs with a slot)."""
        b = self.batch
        es = gs1.element_string(gs1.pack_pairs(b.gtin, "0", b.lot, b.expiry, b.nhrn_ai, b.nhrn))
        cut = es.index(gs1.GS + "21") + 1  # the first GS follows the lot, the only variable field before 21
        return es[:cut], es[cut + 3:], gs1.pack_pairs(b.gtin, "0", b.lot, b.expiry, b.nhrn_ai, b.nhrn)

    def code_for(self, serial: str) -> str:
        """The element string for one pack; the serial is checked against the Syntax Dictionary."""
        if self._tpl is None:
            self._tpl = self._template()
        head, tail, pairs = self._tpl
        gs1.validate([("21", serial)])
        code = head + "21" + serial + tail
        self.judge.expect(code, [(ai, serial if ai == "21" else v) for ai, v in pairs])
        return code

    # --- coder fill-ahead ---
    def queue_codes(self, count: int) -> list[tuple[str, str]]:
        """Allocate serials and record them as coder jobs, in order (caller's transaction)
        → [(serial, code)]."""
        out = [(s, self.code_for(s)) for s in serials.allocate(self.conn, self.batch.batch_id, self.batch.gtin, count)]
        b = self.batch
        self.conn.executemany("INSERT INTO coder_job (batch_id, gtin, serial, code) VALUES (?,?,?,?)",
                              [(b.batch_id, b.gtin, s, code) for s, code in out])
        self._queue.extend(out)
        return out

    def queued_depth(self) -> int:
        return len(self._queue)

    def drop_queued(self) -> int:
        """The coder's buffer was cleared: its jobs will never print (serials stay allocated and
        return to the pool at batch close)."""
        self._queue.clear()
        return self.conn.execute("UPDATE coder_job SET state='dropped' WHERE batch_id=? AND state='queued'",
                                 (self.batch.batch_id,)).rowcount

    def resync(self) -> None:
        """After a rolled-back transaction: rebuild the mirrors from the database."""
        self._queue = collections.deque(self.conn.execute(
            "SELECT serial, code FROM coder_job WHERE batch_id=? AND state='queued' ORDER BY job_id",
            (self.batch.batch_id,)).fetchall())
        self._bound.clear()
        self._commissioned = []
        self.judge.known.clear()
        self.judge.seen.clear()
        self.judge.seen.update(s for (s,) in self.conn.execute(
            "SELECT read_serial FROM unit WHERE read_serial IS NOT NULL"
            " AND batch_id IN (SELECT batch_id FROM batch WHERE gtin=?)", (self.batch.gtin,)))
        self.agg.forget()

    # --- device events ---
    def knows_boot(self, device_id: str, boot_id: int) -> bool:
        return self.conn.execute("SELECT 1 FROM device_boot WHERE device_id=? AND boot_id=?",
                                 (device_id, boot_id)).fetchone() is not None

    def new_boot(self, device_id: str, boot_id: int) -> int:
        """Units of earlier boots still without an outcome were in flight across the restart:
        recorded as outcome-less purge, their serials rejected. Caller's transaction."""
        self.conn.execute("INSERT OR IGNORE INTO device_boot (device_id, boot_id, batch_id, first_seen)"
                          " VALUES (?,?,?,?)", (device_id, boot_id, self.batch.batch_id, time.time()))
        rows = self.conn.execute("SELECT boot_id, unit_seq, serial FROM unit WHERE device_id=? AND boot_id<>?"
                                 " AND outcome IS NULL", (device_id, boot_id)).fetchall()
        for b, u, s in rows:
            self.conn.execute("UPDATE unit SET outcome='PURGED', reason='PURGE' WHERE device_id=? AND boot_id=?"
                              " AND unit_seq=?", (device_id, b, u))
            if s is not None:
                self.conn.execute("UPDATE serial SET state='rejected' WHERE gtin=? AND serial=? AND state='printed'",
                                  (self.batch.gtin, s))
        for key in [k for k in self._bound if k[0] == device_id and k[1] != boot_id]:
            del self._bound[key]
        return len(rows)

    def store(self, device_id: str, boot_id: int, msg_name: str, fields: dict) -> bool:
        """Store one sequenced device event (caller's transaction). False: already stored."""
        if "event_seq" not in fields:
            return False  # STATUS / PONG: not events, latest wins
        body = _body(fields)
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO device_event VALUES (?,?,?,?,?,?,?)",
            (device_id, boot_id, fields["event_seq"], msg_name, fields.get("unit_seq"), body, time.time()))
        if cur.rowcount == 0:
            return False
        handler = getattr(self, "_on_" + msg_name.lower(), None)
        if handler is not None:
            handler(device_id, boot_id, fields)
        return True

    def store_batch(self, device_id: str, boot_id: int, msgs) -> list[bool]:
        """A whole poll's events at once (caller's transaction): the same result as store() for
        each in turn, with the writes grouped per statement. If any event was already stored (a
        retransmission), falls back to store() one by one."""
        evs = [(n, f) for n, f in msgs if "event_seq" in f]
        now = time.time()
        rows = [(device_id, boot_id, f["event_seq"], n, f.get("unit_seq"), _body(f), now) for n, f in evs]
        c = self.conn
        c.execute("SAVEPOINT store_batch")
        before = c.total_changes
        c.executemany("INSERT OR IGNORE INTO device_event VALUES (?,?,?,?,?,?,?)", rows)
        if c.total_changes - before != len(rows):
            c.execute("ROLLBACK TO store_batch")
            c.execute("RELEASE store_batch")
            return [self.store(device_id, boot_id, n, f) for n, f in msgs]
        c.execute("RELEASE store_batch")
        gtin, batch_id = self.batch.gtin, self.batch.batch_id
        detected, bound_jobs, unit_serials, outcomes, passed, rejected = [], [], [], [], [], []

        def flush():
            for sql, params in (
                ("INSERT OR IGNORE INTO unit (device_id, boot_id, unit_seq, batch_id, test) VALUES (?,?,?,?,?)", detected),
                ("UPDATE coder_job SET state='bound' WHERE gtin=? AND serial=?", bound_jobs),
                ("UPDATE unit SET gtin=?, serial=? WHERE device_id=? AND boot_id=? AND unit_seq=?", unit_serials),
                ("UPDATE serial SET state='printed' WHERE gtin=? AND serial=?", bound_jobs),
                ("UPDATE unit SET outcome=?, reason=? WHERE device_id=? AND boot_id=? AND unit_seq=?", outcomes),
                ("UPDATE serial SET state='commissioned' WHERE gtin=? AND serial=?", [(gtin, s) for s in passed]),
                ("UPDATE serial SET state='rejected' WHERE gtin=? AND serial=?", [(gtin, s) for s in rejected]),
            ):
                if params:
                    c.executemany(sql, params)
            self.agg.add_packs(passed)
            self._commissioned.extend(passed)
            for lst in (detected, bound_jobs, unit_serials, outcomes, passed, rejected):
                lst.clear()

        for n, f in evs:
            u = f.get("unit_seq")
            if n == "UNIT_DETECTED":
                detected.append((device_id, boot_id, u, batch_id, f.get("flags", 0) & 1))
            elif n == "UNIT_PRINTED":
                if not self._queue:
                    flush()
                    self._on_unit_printed(device_id, boot_id, f)  # raises the alarm
                    continue
                serial, code = self._queue.popleft()
                bound_jobs.append((gtin, serial))
                unit_serials.append((gtin, serial, device_id, boot_id, u))
                self._bound[(device_id, boot_id, u)] = (serial, code)
            elif n == "UNIT_OUTCOME":
                bound = self._bound.pop((device_id, boot_id, u), None)
                if bound is None:  # not bound in this run: the careful path reads the database
                    flush()
                    self._on_unit_outcome(device_id, boot_id, f)
                    continue
                outcome = _name(Outcome, f["outcome"])
                outcomes.append((outcome, _name(Reason, f["reason"]), device_id, boot_id, u))
                (passed if outcome == "PASSED" else rejected).append(bound[0])
            else:
                handler = getattr(self, "_on_" + n.lower(), None)
                if handler is not None:
                    flush()
                    handler(device_id, boot_id, f)
        flush()
        return [("event_seq" in f) for _, f in msgs]

    def _on_unit_detected(self, device_id, boot_id, f):
        self.conn.execute("INSERT OR IGNORE INTO unit (device_id, boot_id, unit_seq, batch_id, test) VALUES (?,?,?,?,?)",
                          (device_id, boot_id, f["unit_seq"], self.batch.batch_id, f.get("flags", 0) & 1))

    def _on_unit_printed(self, device_id, boot_id, f):
        job = self._queue.popleft() if self._queue else None
        if job is None:
            self.alarm("agent", "CODER_EMPTY", f"unit {device_id}/{boot_id}/{f['unit_seq']} printed with no code queued")
            return
        serial, code = job
        self.conn.execute("UPDATE coder_job SET state='bound' WHERE gtin=? AND serial=?", (self.batch.gtin, serial))
        self.conn.execute("UPDATE unit SET gtin=?, serial=? WHERE device_id=? AND boot_id=? AND unit_seq=?",
                          (self.batch.gtin, serial, device_id, boot_id, f["unit_seq"]))
        self.conn.execute("UPDATE serial SET state='printed' WHERE gtin=? AND serial=?", (self.batch.gtin, serial))
        self._bound[(device_id, boot_id, f["unit_seq"])] = (serial, code)

    # UNIT_INSPECTED needs no handler: the stored event is the record, the agent's correlator
    # takes it from there.

    def _on_unit_outcome(self, device_id, boot_id, f):
        outcome, reason = _name(Outcome, f["outcome"]), _name(Reason, f["reason"])
        bound = self._bound.pop((device_id, boot_id, f["unit_seq"]), None)
        row = (bound[0], None) if bound else self.conn.execute(
            "SELECT serial, outcome FROM unit WHERE device_id=? AND boot_id=? AND unit_seq=?",
            (device_id, boot_id, f["unit_seq"])).fetchone()
        if row is None:  # outcome of a unit whose detection we never saw: keep the record complete
            self._on_unit_detected(device_id, boot_id, f)
            row = (None, None)
        serial, _ = row
        self.conn.execute("UPDATE unit SET outcome=?, reason=? WHERE device_id=? AND boot_id=? AND unit_seq=?",
                          (outcome, reason, device_id, boot_id, f["unit_seq"]))
        if serial is None:
            if outcome == "PASSED":
                self.alarm(device_id, "PASSED_WITHOUT_CODE", f"unit {boot_id}/{f['unit_seq']}")
            return
        if outcome == "PASSED":
            self.conn.execute("UPDATE serial SET state='commissioned' WHERE gtin=? AND serial=?",
                              (self.batch.gtin, serial))
            self._commissioned.append(serial)
            self.agg.add_pack(serial)  # after the commissioning rows: packed needs 'commissioned'
        else:
            self.conn.execute("UPDATE serial SET state='rejected' WHERE gtin=? AND serial=?",
                              (self.batch.gtin, serial))

    def flush_events(self) -> None:
        """End of a poll's transaction: one commissioning event for every pack passed in it.
        Packing events of cases closed in the same transaction are already queued; a receiver
        orders by eventTime and both carry the same instant, so commission first."""
        if self._commissioned:
            reporting.commissioned(self.conn, self.ctx, self.batch, self._commissioned)
            self._commissioned = []

    def record_verdict(self, device_id, boot_id, unit_seq, verdict, reason, read_serial, grade) -> None:
        self.record_verdicts([(device_id, boot_id, unit_seq, verdict, reason, read_serial, grade)])

    def record_verdicts(self, rows) -> None:
        """[(device_id, boot_id, unit_seq, verdict, reason, read_serial, grade)] in one statement."""
        self.conn.executemany("UPDATE unit SET verdict=?, verdict_reason=?, read_serial=?, grade=?"
                              " WHERE device_id=? AND boot_id=? AND unit_seq=?",
                              [(v.name, r.name, s, g, d, b, u) for d, b, u, v, r, s, g in rows])

    def expected_code(self, device_id, boot_id, unit_seq) -> str | None:
        bound = self._bound.get((device_id, boot_id, unit_seq))
        if bound is not None:
            return bound[1]
        row = self.conn.execute("SELECT j.code FROM unit u JOIN coder_job j ON j.gtin=u.gtin AND j.serial=u.serial"
                                " WHERE u.device_id=? AND u.boot_id=? AND u.unit_seq=?",
                                (device_id, boot_id, unit_seq)).fetchone()
        return row[0] if row else None

    def alarm(self, source: str, alarm: str, detail: str) -> None:
        self.conn.execute("INSERT INTO alarm_log (at, source, alarm, detail) VALUES (?,?,?,?)",
                          (time.time(), source, alarm, detail))
