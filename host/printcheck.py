"""The coder's own print reports cross-check the print binding (docs/devices.md "Print cross-check").

The ledger binds each UNIT_PRINTED to the oldest queued job (ledger.Ledger.bindings); the coder
reports the code it printed (driver `printed_codes()`: (epoch, code), code None when the coder
cannot say). Both streams are the same sequence of prints, each may lag the other, so they pair
off in order: a pair that differs is a PRINT_MISMATCH (the pack carries another code than the one
the ledger gave its unit).

The check is armed only from a confirmed coder CLEAR on (`restart`): then both streams start
empty together. Before it (an agent that resumes a boot: reports of the old connection are lost)
nothing is compared. A report of a later epoch than the one armed means PRINTED lines were lost
with a connection: reports pair with the binding of the same code further on, the bindings
skipped (their reports lost) are not compared, and strict pairing resumes from there. After a
mismatch the streams are no longer known to be aligned: the check disarms until the next CLEAR."""

from __future__ import annotations

import collections
from dataclasses import dataclass

MAX_PENDING = 4096  # unpaired entries kept per stream; beyond, the check disarms (never unbounded)


@dataclass(frozen=True)
class Mismatch:
    unit: tuple  # (device_id, boot_id, unit_seq) the ledger bound
    bound: str  # the code the ledger bound to it
    printed: str | None  # the code the coder reported (None: it could not say)


class PrintCheck:
    def __init__(self):
        self.armed = False
        self.epoch = 0  # the reports' epoch since the last restart
        self.gap = False  # reports were lost since the last pair: pair by code, not by position
        self.reports: collections.deque = collections.deque()  # codes reported, not yet paired
        self.bound: collections.deque = collections.deque()  # (unit key, code) bound, not yet paired
        self.checked = 0  # pairs compared (a clean run: all equal)
        self.unverified = 0  # bindings passed over because their report was lost

    def snapshot(self):
        return self.armed, self.epoch, self.gap, collections.deque(self.reports), collections.deque(self.bound)

    def restore(self, state) -> None:
        self.armed, self.epoch, self.gap, self.reports, self.bound = state

    def restart(self, epoch: int) -> None:
        """A CLEAR was confirmed at the coder's `epoch`: both streams start afresh (armed)."""
        self.armed, self.epoch, self.gap = True, epoch, False
        self.reports.clear()
        self.bound.clear()

    def disarm(self) -> None:
        self.armed = False
        self.reports.clear()
        self.bound.clear()

    def add_reports(self, reports) -> None:
        for epoch, code in reports:
            if not self.armed or epoch < self.epoch:
                continue  # printed before the CLEAR that armed us
            if epoch > self.epoch:
                self.epoch, self.gap = epoch, True
            self.reports.append(code)

    def add_bindings(self, bindings) -> None:
        if self.armed:
            self.bound.extend(bindings)

    def pairs(self) -> list[Mismatch]:
        """Pair what both streams have; → the mismatches (the check disarms at the first)."""
        out: list[Mismatch] = []
        while self.armed and self.reports and self.bound:
            code = self.reports[0]
            if self.gap:
                if code is None:  # no code to re-align by: nothing can be compared until a CLEAR
                    self.disarm()
                    break
                at = next((i for i, (_, c) in enumerate(self.bound) if c == code), None)
                if at is None:
                    break  # its binding is not in yet (or this is a mismatch: told once aligned)
                for _ in range(at):
                    self.bound.popleft()
                self.unverified += at
                self.gap = False
            self.reports.popleft()
            unit, bound = self.bound.popleft()
            self.checked += 1
            if code != bound:
                out.append(Mismatch(unit, bound, code))
                self.disarm()
        if len(self.reports) > MAX_PENDING or len(self.bound) > MAX_PENDING:
            self.disarm()
        return out
