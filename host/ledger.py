"""Device events into the ledger. `store_batch()` is idempotent on (device_id, boot_id, event_seq): a
retransmitted event finds its row and changes nothing. Callers wrap a whole poll's events in one
transaction and acknowledge to the device only after it commits.

Each event kind has one handler (Ledger.HANDLERS); each state change is one statement (_RULES),
queued per poll and run rule by rule. Which serial goes with which unit: the coder prints the head
of its queue at each trigger, so the oldest still-queued coder job is bound to the unit of each
UNIT_PRINTED, in unit order. A gap in a unit's life is never silent: a unit the host hears of first
by a later event is booked UNKNOWN (EVENTS_LOST) until the device reports its outcome, and a
UNIT_PRINTED missing before a later one still takes its job (so later bindings stay in step)."""

from __future__ import annotations

import collections
import functools
import json
import sqlite3
import time

from serialine.protocol.schema import Outcome, Reason, Verdict

from . import db, devevents, gs1, reporting, serials
from .aggregation import AggregationError, Aggregator
from .masterdata import Batch, get_batch
from .verdicts import Judge

UNIT_EVENTS = ("UNIT_DETECTED", "UNIT_PRINTED", "UNIT_INSPECTED", "UNIT_OUTCOME")
# A device tracks 64 units and buffers a few hundred events, so a real gap in unit_seq is far
# smaller; an event further ahead is quarantined (booking its gap would be millions of rows).
MAX_UNIT_GAP = 4096
MAX_BINDINGS = 65536  # bindings kept for the agent's print cross-check until it takes them (each step)

# One statement per rule, run in this order at each flush: a unit's life, top to bottom. A pack is
# named by its serial_id (a coder job carries it from the allocation: nothing is looked up).
_RULES = {
    "unit": "INSERT OR IGNORE INTO unit_row (device_id, boot_id, unit_seq, batch_id, test, outcome, reason, serial_id)"
            " VALUES (?,?,?,?,?,?,?,?)",
    "job_bound": "UPDATE coder_job_row SET state='bound' WHERE serial_id IN (SELECT value FROM json_each(?))",
    "unit_serial": "UPDATE unit_row SET serial_id=? WHERE device_id=? AND boot_id=? AND unit_seq=?",
    "serial_printed": "UPDATE serial SET state='printed' WHERE serial_id IN (SELECT value FROM json_each(?))",
    "unit_outcome": "UPDATE unit_row SET outcome=?, reason=? WHERE device_id=? AND boot_id=? AND unit_seq=?",
    "serial_commissioned": "UPDATE serial SET state='commissioned' WHERE serial_id IN (SELECT value FROM json_each(?))",
    "serial_rejected": "UPDATE serial SET state='rejected' WHERE serial_id IN (SELECT value FROM json_each(?))",
}
# rules queued as a serial_id and run as one statement over the flush's ids (a JSON array): row by row,
# each row was a statement of its own (its statement journal, its triggers' frames): about twice the work
_BY_IDS = frozenset(("job_bound", "serial_printed", "serial_commissioned", "serial_rejected"))
# the queued jobs, oldest first: (serial_id, serial, code)
_QUEUE = ("SELECT s.serial_id, j.serial, j.code FROM coder_job j JOIN serial s ON s.gtin = j.gtin AND s.serial = j.serial"
          " WHERE j.batch_id=? AND j.state='queued' ORDER BY j.job_id")


class _Life:
    """What the host has heard of one device boot's units (unit_seq counts from 0 at boot)."""
    __slots__ = ("detected", "printed", "unprinted", "lost")

    def __init__(self):
        self.detected = -1  # highest unit with a row
        self.printed = -1  # highest unit printed
        self.unprinted: set[int] = set()  # beyond `printed`, finished without a print (untracked)
        self.lost: set[int] = set()  # booked UNKNOWN in this run: their outcome reads the database


_NONE = (None, None, None)  # no job bound


class LedgerError(ValueError):
    pass


@functools.lru_cache(maxsize=512)  # a handful of values, on every outcome
def _name(enum_cls, value) -> str:
    return enum_cls(int(value)).name


_VERDICT = {v: v.name for v in Verdict}  # .name is a property call: a dict is 4x cheaper per verdict
_REASON = {r: r.name for r in Reason}


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
        self._queue = collections.deque(conn.execute(_QUEUE, (batch_id,)).fetchall())  # (serial_id, serial, code)
        self._bound: dict[tuple, tuple[int, str, str]] = {}  # unit key -> (serial_id, serial, code)
        self.bindings: list[tuple[tuple, str]] = []  # (unit key, code) bound since taken: the print cross-check's
        self._boots: dict[tuple, _Life] = {}  # (device_id, boot_id) -> _Life, loaded on first use
        self._writes: dict[str, list] = {name: [] for name in _RULES}
        self._new_units: dict[tuple, list] = {}  # unit key -> its queued "unit" row (a print in the same flush fills it)
        self._passed: list[tuple[int, str]] = []  # (serial_id, serial) commissioned by the queued writes, to pack at the flush
        self._tpl = None
        self._tpl_stored: bool | None = None  # is coder_template this batch's template (its jobs' codes left out)?
        self.packing_stopped: str | None = None  # why passed packs can no longer be packed (the agent stops the line)

    # --- lookups ---
    def _serial_batch(self, serial: str) -> str | None:
        row = self.conn.execute("SELECT batch_id, state FROM serial WHERE gtin=? AND serial=?",
                                (self.batch.gtin, serial)).fetchone()
        if row is None or row[1] == "available":
            return None
        return row[0]

    def _template(self):
        """The batch's code around its serial, validated once: (head, tail, its AIs with a slot for 21)."""
        b = self.batch
        pairs = gs1.pack_pairs(b.gtin, "0", b.lot, b.expiry, b.nhrn_ai, b.nhrn)
        es = gs1.element_string(pairs)
        cut = es.index(gs1.GS + "21") + 1  # the first GS follows the lot, the only variable field before 21
        return es[:cut], es[cut + 3:], dict(pairs)

    def code_for(self, serial: str) -> str:
        """The element string for one pack; the serial is checked against the Syntax Dictionary."""
        return self._jobs([(None, serial)])[0][2]

    def _jobs(self, picked: list[tuple]) -> list[tuple]:
        """[(serial_id, serial)] → [(serial_id, serial, code)], each code known to the judge; every
        serial is checked first (the first that breaks a rule raises, nothing known yet)."""
        if self._tpl is None:
            self._tpl = self._template()
        head, tail, ais = self._tpl
        head += "21"
        gs1.check_each("21", [s for _, s in picked])
        expect, jobs = self.judge.expect, []
        for i, s in picked:
            code = head + s + tail
            a = ais.copy()
            a["21"] = s
            expect(code, a)
            jobs.append((i, s, code))
        return jobs

    # --- coder fill-ahead ---
    def queue_codes(self, count: int) -> list[tuple[str, str]]:
        """Allocate serials and record them as coder jobs, in order (caller's transaction)
        → [(serial, code)]."""
        jobs = self._jobs(serials.allocate_ids(self.conn, self.batch.batch_id, self.batch.gtin, count))
        b = self.batch
        if self._tpl_stored is None:
            head, tail, _ = self._tpl or self._template()
            self.conn.execute("INSERT OR IGNORE INTO coder_template VALUES (?,?,?)", (b.batch_id, head + "21", tail))
            self._tpl_stored = self.conn.execute("SELECT head, tail FROM coder_template WHERE batch_id=?",
                                                 (b.batch_id,)).fetchone() == (head + "21", tail)
        stored = self._tpl_stored
        # one statement over them all, in their order (a statement a row: about twice the work, as in _flush)
        if stored:  # the view builds each code from the template: the row holds none
            self.conn.execute("INSERT INTO coder_job_row (batch_id, serial_id, code)"
                              " SELECT ?, value, NULL FROM json_each(?) ORDER BY key",
                              (b.batch_id, db.id_array(i for i, _, _ in jobs)))
        else:
            self.conn.execute("INSERT INTO coder_job_row (batch_id, serial_id, code)"
                              " SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)"
                              " ORDER BY key", (b.batch_id, json.dumps([(i, code) for i, _, code in jobs])))
        self._queue.extend(jobs)
        return [(s, code) for _, s, code in jobs]

    def take_bindings(self) -> list[tuple[tuple, str]]:
        """(unit key, code) of the prints bound since the last call, in binding order."""
        out, self.bindings = self.bindings, []
        return out

    def queued_depth(self) -> int:
        return len(self._queue)

    def drop_queued(self) -> int:
        """The coder's buffer was cleared: its jobs will never print (serials stay allocated and
        return to the pool at batch close)."""
        self._queue.clear()
        return self.conn.execute("UPDATE coder_job_row SET state='dropped' WHERE batch_id=? AND state='queued'",
                                 (self.batch.batch_id,)).rowcount

    def drop_unsent(self, serials: list[str]) -> int:
        """The coder refused a push: that job and those allocated after it (the queue's tail) never
        reached it and are written off like drop_queued's (caller's transaction)."""
        tail = list(self._queue)[len(self._queue) - len(serials):] if serials else []
        if [s for _, s, _ in tail] != list(serials):
            raise LedgerError(f"jobs {serials[:3]}... are not the tail of the coder queue")
        for _ in serials:
            self._queue.pop()
        return self.conn.executemany("UPDATE coder_job_row SET state='dropped' WHERE serial_id=? AND batch_id=?"
                                     " AND state='queued'", [(i, self.batch.batch_id) for i, _, _ in tail]).rowcount

    def resync(self) -> None:
        """After a rolled-back transaction: rebuild the mirrors from the database."""
        self._queue = collections.deque(self.conn.execute(_QUEUE, (self.batch.batch_id,)).fetchall())
        self._bound.clear()
        self.bindings.clear()  # rolled back with the transaction that made them
        self._boots.clear()
        for params in self._writes.values():
            params.clear()
        self._new_units.clear()
        self._passed = []
        self._commissioned = []
        self._tpl_stored = None  # its coder_template row may have rolled back too
        self.packing_stopped = None  # its alarm rolled back too: said again if it happens again
        self.judge.known.clear()
        self.judge.seen.clear()
        self.judge.seen.update(s for (s,) in self.conn.execute(
            "SELECT read_serial FROM unit WHERE read_serial IS NOT NULL"
            " AND batch_id IN (SELECT batch_id FROM batch WHERE gtin=?)", (self.batch.gtin,)))
        self.agg.forget()

    # --- device events ---
    def knows_boot(self, device_id: str, boot_id: int) -> bool:
        """Has this batch a session with that device boot (a restarted agent resumes it)?"""
        return self.conn.execute("SELECT 1 FROM device_boot WHERE device_id=? AND boot_id=? AND batch_id=?",
                                 (device_id, boot_id, self.batch.batch_id)).fetchone() is not None

    def new_boot(self, device_id: str, boot_id: int) -> int:
        """A session with a new device boot. This batch's units of the device's earlier boots still
        without a final outcome were in flight across the restart. The device rejects every unit
        the host sent no PASS for (fail safe): those are rejected by purge. A unit the host passed
        may have left the line with its PASSED event unacknowledged in the lost RAM: its outcome
        is UNKNOWN (serial stays printed, alarm) until a person resolves it (host/resolve.py).
        Caller's transaction. → the number of units booked."""
        c = self.conn
        c.execute("INSERT OR IGNORE INTO device_boot (device_id, boot_id, batch_id, first_seen) VALUES (?,?,?,?)",
                  (device_id, boot_id, self.batch.batch_id, time.time()))
        w, unknown = self._writes, []
        for b, u, serial_id, serial, passed in c.execute(
                "SELECT u.boot_id, u.unit_seq, u.serial_id, s.serial, u.verdict='PASS' AND u.test=0 FROM unit_row u"
                " LEFT JOIN serial s ON s.serial_id = u.serial_id WHERE u.device_id=? AND u.boot_id<>?"
                " AND u.batch_id=? AND (u.outcome IS NULL OR u.reason='EVENTS_LOST')",
                (device_id, boot_id, self.batch.batch_id)).fetchall():
            if passed:
                w["unit_outcome"].append(("UNKNOWN", "OUTCOME_LOST", device_id, b, u))
                unknown.append((b, u, serial))
            else:
                w["unit_outcome"].append(("PURGED", "PURGE", device_id, b, u))
                if serial_id is not None:
                    w["serial_rejected"].append(serial_id)
        booked = len(w["unit_outcome"])
        self._flush()
        if unknown:
            self.alarm(device_id, "OUTCOME_UNKNOWN", f"{len(unknown)} unit(s) passed by the host, outcome lost with "
                       "the device's reboot; batch close blocked until each is resolved: "
                       + ", ".join(f"{device_id}:{b}:{u} serial {s}" for b, u, s in sorted(unknown)[:20]))
        for k in [k for k in self._bound if k[0] == device_id and k[1] != boot_id]:
            del self._bound[k]
        for k in [k for k in self._boots if k[0] == device_id and k[1] != boot_id]:
            del self._boots[k]
        return booked

    def store(self, device_id: str, boot_id: int, msg_name: str, fields: dict) -> bool:
        """Store one sequenced device event (caller's transaction). False: already stored (or
        not an event, or quarantined)."""
        return self.store_batch(device_id, boot_id, [(msg_name, fields)])[0]

    def store_batch(self, device_id: str, boot_id: int, msgs) -> list[bool]:
        """A poll's messages (caller's transaction): each sequenced event is stored once, keyed
        (device_id, boot_id, event_seq), and applied by its handler; a retransmitted one changes
        nothing. → per message: stored and applied now."""
        life = self._boot(device_id, boot_id)  # before this poll's rows exist
        now = time.time()
        c = self.conn
        ref, t0 = devevents.boot(c, device_id, boot_id)
        rows = devevents.rows(ref, msgs, devevents.stamp(t0, now))
        c.execute("SAVEPOINT store_batch")
        before = c.total_changes
        c.executemany(devevents.INSERT, rows)
        if c.total_changes - before == len(rows):
            new = ["event_seq" in f for _, f in msgs]
        else:  # some were stored already (a retransmission): find which, one by one
            c.execute("ROLLBACK TO store_batch")
            it = iter(rows)
            new = [("event_seq" in f) and c.execute(devevents.INSERT, next(it)).rowcount == 1 for _, f in msgs]
        c.execute("RELEASE store_batch")
        w, handlers = self._writes, self.HANDLERS
        for i, (n, f) in enumerate(msgs):
            if not new[i]:
                continue
            if "invalid" in f:  # an intact frame with a value out of range: kept, never applied
                self.alarm(device_id, "QUARANTINED", f"boot {boot_id} event {f['event_seq']} {n}: {f['invalid']}")
                new[i] = False
                if n == "UNIT_OUTCOME" and type(f.get("unit_seq")) is int:
                    self._outcome_unreadable(w, life, device_id, boot_id, f["unit_seq"])
                continue
            handler = handlers.get(n)
            if handler is None:
                continue
            if f["unit_seq"] > life.detected + MAX_UNIT_GAP:
                self.alarm(device_id, "QUARANTINED", f"boot {boot_id} event {f['event_seq']} {n}: unit_seq {f['unit_seq']}"
                           f" is more than {MAX_UNIT_GAP} beyond the last unit heard of ({life.detected})")
                new[i] = False
            else:
                handler(self, w, life, device_id, boot_id, f)
        self._flush()
        return new

    # The handlers: one per event kind; each rule is one statement in _RULES, queued in `w`.
    def _boot(self, device_id, boot_id) -> "_Life":
        life = self._boots.get((device_id, boot_id))
        if life is None:
            c, key = self.conn, (device_id, boot_id)
            life = _Life()
            life.detected = c.execute("SELECT COALESCE(max(unit_seq), -1) FROM unit_row WHERE device_id=? AND boot_id=?",
                                      key).fetchone()[0]
            life.printed = devevents.last_unit(c, device_id, boot_id, "UNIT_PRINTED")
            life.unprinted = {u for (u,) in c.execute(
                "SELECT unit_seq FROM unit_row WHERE device_id=? AND boot_id=? AND unit_seq>? AND serial_id IS NULL"
                " AND outcome IS NOT NULL AND outcome<>'UNKNOWN'", key + (life.printed,))}
            self._boots[key] = life
        return life

    def _row(self, w, life, device_id, boot_id, u, what) -> None:
        """Units up to u have a row: any the host never heard detected are booked UNKNOWN."""
        if u <= life.detected:
            return
        lost = range(life.detected + 1, u + 1)
        for m in lost:
            self._new_unit(w, [device_id, boot_id, m, self.batch.batch_id, 0, "UNKNOWN", "EVENTS_LOST", None])
        life.lost.update(lost)
        life.detected = u
        self.alarm(device_id, "EVENTS_LOST", f"boot {boot_id} unit(s) {lost[0]}..{lost[-1]}: no UNIT_DETECTED before"
                   f" {what}; outcome unknown until the device reports it")

    def _new_unit(self, w, row: list) -> None:
        w["unit"].append(row)
        self._new_units[(row[0], row[1], row[2])] = row

    def _on_detected(self, w, life, device_id, boot_id, f):
        u = f["unit_seq"]
        if u > life.detected + 1:
            self._row(w, life, device_id, boot_id, u - 1, f"unit {u}")
        if u > life.detected:
            self._new_unit(w, [device_id, boot_id, u, self.batch.batch_id, f.get("flags", 0) & 1, None, None, None])
            life.detected = u

    def _on_printed(self, w, life, device_id, boot_id, f):
        u = f["unit_seq"]
        if u == life.printed + 1 and u <= life.detected:  # the next print, of a unit with its row
            self._bind(w, life, device_id, boot_id, u)
            life.printed = u
            return
        self._row(w, life, device_id, boot_id, u, "its UNIT_PRINTED")
        # the coder prints each trigger in order: a print we never heard of took the next job
        lost = [m for m in range(life.printed + 1, u) if m not in life.unprinted]
        life.unprinted.difference_update(range(life.printed + 1, u))  # not tracked: nothing printed
        if lost:
            self.alarm(device_id, "PRINT_LOST", f"boot {boot_id} unit(s) {lost[0]}..{lost[-1]}: UNIT_PRINTED missing"
                       f" before unit {u}; each takes the next coder job (prints are in order)")
        for m in lost + [u]:
            self._bind(w, life, device_id, boot_id, m)
        life.printed = max(life.printed, u)

    def unheard_prints(self, device_id: str, boot_id: int, count: int) -> int:
        """The coder printed `count` more of its queue than the device's last boot before `boot_id`
        reported (its events were lost with its RAM): they went, in order, to the units after the
        last print heard, which get their rows and codes; new_boot() then books them (no PASS was
        ever sent for them: rejected). Caller's transaction, before new_boot(). → units bound."""
        row = self.conn.execute("SELECT boot_id FROM device_boot WHERE device_id=? AND batch_id=? AND boot_id<>?"
                                " ORDER BY first_seen DESC LIMIT 1", (device_id, self.batch.batch_id, boot_id)).fetchone()
        if row is None or count <= 0:
            return 0
        life, w = self._boot(device_id, row[0]), self._writes
        m, units = life.printed, []
        while len(units) < count:
            m += 1
            if m not in life.unprinted:
                units.append(m)
        self._row(w, life, device_id, row[0], units[-1], "the coder's prints for them")
        for m in units:
            self._bind(w, life, device_id, row[0], m)
        life.printed = units[-1]
        self._flush()
        return len(units)

    def _bind(self, w, life, device_id, boot_id, u) -> None:
        if not self._queue:
            self.alarm("agent", "CODER_EMPTY", f"unit {device_id}/{boot_id}/{u} printed with no code queued")
            return
        job = serial_id, _, code = self._queue.popleft()
        key = (device_id, boot_id, u)
        w["job_bound"].append(serial_id)
        row = self._new_units.get(key)
        if row is not None:  # its row is still to be written: it is written with its serial
            row[7] = serial_id
        else:
            w["unit_serial"].append((serial_id, device_id, boot_id, u))
        w["serial_printed"].append(serial_id)
        if len(self.bindings) >= MAX_BINDINGS:  # nobody takes them (no agent): never unbounded
            self.bindings.clear()
        self.bindings.append((key, code))
        if u not in life.lost:  # a unit booked UNKNOWN takes the careful path at its outcome
            self._bound[key] = job

    def _on_inspected(self, w, life, device_id, boot_id, f):
        # the stored event is the record; the agent's correlator takes it from there
        if f["unit_seq"] > life.detected:  # (_row's own test, without the call: every unit)
            self._row(w, life, device_id, boot_id, f["unit_seq"], "its UNIT_INSPECTED")

    def _on_outcome(self, w, life, device_id, boot_id, f):
        u = f["unit_seq"]
        if u > life.detected:
            self._row(w, life, device_id, boot_id, u, "its UNIT_OUTCOME")
        if u > life.printed:
            life.unprinted.add(u)
        outcome, reason = _name(Outcome, f["outcome"]), _name(Reason, f["reason"])
        bound = self._bound.pop((device_id, boot_id, u), None)
        if bound is not None:
            serial_id, serial, _ = bound
        else:  # not bound in this run: the database knows
            self._flush()
            serial_id, serial, was = self.conn.execute(
                "SELECT u.serial_id, s.serial, u.outcome FROM unit_row u LEFT JOIN serial s ON s.serial_id = u.serial_id"
                " WHERE u.device_id=? AND u.boot_id=? AND u.unit_seq=?", (device_id, boot_id, u)).fetchone() or (None,) * 3
            if was not in (None, "UNKNOWN"):  # resolved by a person, or booked at a reboot
                self.alarm(device_id, "OUTCOME_IGNORED", f"unit {boot_id}/{u} is already {was}; the device says {outcome}")
                return
            life.lost.discard(u)
        w["unit_outcome"].append((outcome, reason, device_id, boot_id, u))
        if serial_id is None:
            if outcome == "PASSED":
                self.alarm(device_id, "PASSED_WITHOUT_CODE", f"unit {boot_id}/{u}")
        elif outcome == "PASSED":
            w["serial_commissioned"].append(serial_id)
            self._passed.append((serial_id, serial))
        else:
            w["serial_rejected"].append(serial_id)

    def _outcome_unreadable(self, w, life, device_id, boot_id, u) -> None:
        """The device decided unit u but its UNIT_OUTCOME is quarantined: the device sends no other,
        so the pack may have left the line. UNKNOWN until a person resolves it, like a lost outcome."""
        self._row(w, life, device_id, boot_id, u, "its UNIT_OUTCOME")
        self._bound.pop((device_id, boot_id, u), None)
        self._flush()
        outcome, reason, serial = self.conn.execute("SELECT outcome, reason, serial FROM unit WHERE device_id=? AND"
                                                    " boot_id=? AND unit_seq=?", (device_id, boot_id, u)).fetchone()
        if outcome is not None and reason != "EVENTS_LOST":
            return  # already final: this event changes nothing
        w["unit_outcome"].append(("UNKNOWN", "OUTCOME_INVALID", device_id, boot_id, u))
        life.lost.add(u)  # a later outcome for it (none is expected) reads the database
        self.alarm(device_id, "OUTCOME_UNKNOWN", f"unit {device_id}:{boot_id}:{u}" + (f" serial {serial}" if serial else "")
                   + ": its outcome event is invalid; batch close blocked until it is resolved")

    HANDLERS = {"UNIT_DETECTED": _on_detected, "UNIT_PRINTED": _on_printed,
                "UNIT_INSPECTED": _on_inspected, "UNIT_OUTCOME": _on_outcome}

    def _flush(self) -> None:
        """Run the queued writes, rule by rule in _RULES order (a unit's life runs top to bottom)."""
        for name, sql in _RULES.items():
            params = self._writes[name]
            if params:
                if name in _BY_IDS:
                    self.conn.execute(sql, (db.id_array(params),))
                else:
                    self.conn.executemany(sql, params)
                params.clear()
        self._new_units.clear()
        if self._passed:
            passed, self._passed = self._passed, []
            self._commissioned.extend(s for _, s in passed)
            try:  # after the commissioning rows: a pack is packed only commissioned
                self.agg.add_packs_by_id([i for i, _ in passed])
            except AggregationError as exc:
                self._cannot_pack(passed, exc)

    def _cannot_pack(self, passed: list[tuple[int, str]], exc: AggregationError) -> None:
        """A container could not close (its SSCC prefix is exhausted). Nothing in it was written
        (next_sscc raises first): it stays open, full, and the packs after it stay commissioned but
        unpacked (reconcile lists them). The poll's events are kept; the agent latches a line stop."""
        self.agg.forget()
        unpacked = self.conn.execute(
            "SELECT count(*) FROM json_each(?) WHERE value NOT IN (SELECT serial_id FROM packed_row)",
            (json.dumps([i for i, _ in passed]),)).fetchone()[0]
        if self.packing_stopped is None:
            self.alarm("agent", "SSCC_EXHAUSTED", f"{exc}; the full container stays open, {unpacked} passed pack(s)"
                       " commissioned but not packed (and any that pass later); line stop latched")
        self.packing_stopped = str(exc)

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
        """[(device_id, boot_id, unit_seq, verdict, reason, read_serial, grade)] in one statement. A read
        of the serial bound to the unit in this run is kept as 0 (unit_row; the view unit gives it)."""
        bound = self._bound
        self.conn.executemany("UPDATE unit_row SET verdict=?, verdict_reason=?, read_serial=?, grade=?"
                              " WHERE device_id=? AND boot_id=? AND unit_seq=?",
                              [(_VERDICT[v] if type(v) is Verdict else v.name, _REASON[r] if type(r) is Reason else r.name,
                                0 if s is not None and s == (bound.get((d, b, u)) or _NONE)[1] else s,
                                g, d, b, u) for d, b, u, v, r, s, g in rows])

    def expected_code(self, device_id, boot_id, unit_seq) -> str | None:
        bound = self._bound.get((device_id, boot_id, unit_seq))
        if bound is not None:
            return bound[2]
        row = self.conn.execute("SELECT j.code FROM unit_row u JOIN coder_job_row r ON r.serial_id = u.serial_id"
                                " JOIN coder_job j ON j.job_id = r.job_id WHERE u.device_id=? AND u.boot_id=? AND u.unit_seq=?",
                                (device_id, boot_id, unit_seq)).fetchone()
        return row[0] if row else None

    def alarm(self, source: str, alarm: str, detail: str) -> None:
        self.conn.execute("INSERT INTO alarm_log (at, source, alarm, detail) VALUES (?,?,?,?)",
                          (time.time(), source, alarm, detail))
