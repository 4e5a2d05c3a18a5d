"""The host agent: device events → durable store → ack → verdicts, with the coder kept filled
ahead and camera results correlated to inspected units.

One loop step: poll the link; in ONE transaction store every event (idempotently), pair camera
results with inspected units and record the verdicts; commit; only then ack the device and send
the verdicts; then top the coder up (serials allocated and committed before they are pushed, so a
crash can never make a code the ledger does not know about)."""

from __future__ import annotations

import time

from serialine.protocol.schema import Reason, Verdict

from . import serials
from .correlate import Correlator
from .db import transaction
from .ledger import Ledger

FILL_AHEAD = 8


class Agent:
    def __init__(self, conn, batch_id: str, link, coder=None, camera=None, *, fill_ahead: int = FILL_AHEAD,
                 window_s: float = 0.5, min_grade: float = 1.5, ctx=None):
        self.conn, self.link, self.coder, self.camera = conn, link, coder, camera
        self.ledger = Ledger(conn, batch_id, ctx=ctx, min_grade=min_grade)
        self.correlator = Correlator(window_s)
        self.fill_ahead = fill_ahead
        self.device_id: str | None = None
        self.boot_id: int | None = None
        self.verdict_latency_s: list[float] = []
        self.alarms: list[str] = []

    def start(self, timeout: float = 5.0) -> dict:
        hello = self.link.connect(timeout)
        self._on_boot(hello)
        return hello

    def _on_boot(self, hello: dict) -> None:
        """A (new) session: units of other boots still in flight are purged, and the coder starts
        clean — after a device reboot nobody knows which of its jobs were printed."""
        self.device_id, self.boot_id = hello["device_id"].rstrip("\x00"), int(hello["boot_id"])
        self.correlator = Correlator(self.correlator.window_s)  # old inspections are purged units
        with transaction(self.conn):
            self.ledger.new_boot(self.device_id, self.boot_id)
            if self.coder is not None:  # what the coder holds is unknown after our restart: start clean
                self.coder.clear()
                self.ledger.drop_queued()
        self.fill_coder()

    def fill_coder(self) -> int:
        if self.coder is None:
            return 0
        need = self.fill_ahead - self.ledger.queued_depth()
        if need <= 0:
            return 0
        with transaction(self.conn):
            jobs = self.ledger.queue_codes(need)
            warning = serials.low_water(self.conn, self.ledger.batch.gtin)
            if warning and warning not in self.alarms:
                self.ledger.alarm("agent", "SERIALS_LOW", warning)
                self.alarms.append(warning)
        for _, code in jobs:
            self.coder.push(code)
        return len(jobs)

    def step(self, timeout: float = 0.05) -> int:
        """One poll: returns the number of events stored."""
        msgs = self.link.poll(timeout)
        hello = getattr(self.link, "hello", None)  # HostLink keeps the session's HELLO_REPLY
        if hello and int(hello["boot_id"]) != self.boot_id:
            self._on_boot(dict(hello))
        errors: list[str] = []
        if self.camera is not None:
            results, errors = self.camera.results()
            for r in results:
                self.correlator.result(r)
            self.alarms.extend(errors)
        stored, verdicts = 0, []
        try:
            stored, verdicts = self._store_and_decide(msgs, errors)
        except Exception:
            self.ledger.resync()  # the transaction rolled back: nothing is acked, mirrors rebuilt
            raise
        self.link.ack_delivered()
        for unit_seq, verdict, reason, t0 in verdicts:
            self.link.send("VERDICT", {"unit_seq": unit_seq, "verdict": int(verdict), "reason": int(reason)})
            self.verdict_latency_s.append(time.perf_counter() - t0)
        self.fill_coder()
        return stored

    def _store_and_decide(self, msgs, errors):
        stored = 0
        with transaction(self.conn):
            now = time.monotonic()
            for (name, fields), new in zip(msgs, self.ledger.store_batch(self.device_id, self.boot_id, msgs)):
                if new:
                    stored += 1
                    if name == "UNIT_INSPECTED":
                        self.correlator.inspected(fields["unit_seq"], now)
            for err in errors:
                self.ledger.alarm("camera", "MALFORMED", err)
            verdicts = self._decide(time.monotonic())
            self.ledger.flush_events()
        return stored, verdicts

    def _decide(self, now: float) -> list:
        out, rows = [], []
        for p in self.correlator.pairs(now):
            if p.unit is None:
                self.ledger.alarm("camera", "CORRELATION", p.why)
                self.alarms.append(p.why)
                continue
            t0 = time.perf_counter()
            if p.result is None:
                verdict, reason, serial, grade = Verdict.FAIL, Reason.CORRELATION, None, None
                self.ledger.alarm("agent", "CORRELATION", f"unit {p.unit}: {p.why}")
                self.alarms.append(p.why)
            else:
                expected = self.ledger.expected_code(self.device_id, self.boot_id, p.unit)
                verdict, reason, serial = self.ledger.judge.decide(p.result.data, p.result.grade, expected)
                grade = p.result.grade
            rows.append((self.device_id, self.boot_id, p.unit, verdict, reason, serial, grade))
            out.append((p.unit, verdict, reason, t0))
        if rows:
            self.ledger.record_verdicts(rows)
        return out

    def run(self, until=lambda: False, timeout: float = 0.02) -> None:
        while not until():
            self.step(timeout)
