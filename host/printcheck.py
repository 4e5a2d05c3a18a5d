"""The coder's own print reports cross-check the print binding (docs/devices.md "Print cross-check").

The ledger binds each UNIT_PRINTED to the oldest queued job (ledger.Ledger.bindings); the coder
reports the code it printed (driver `printed_codes()`: (epoch, code), code None when the coder
cannot say). Both streams are the same sequence of prints, each may lag the other, so they pair
off in order: a pair that differs is a PRINT_MISMATCH (the pack carries another code than the one
the ledger gave its unit).

Fail-safe: the streams are known to line up only from a confirmed coder CLEAR on (`restart`).
Whenever that is no longer known (before the first CLEAR, after a mismatch, an unknown report, lost
reports, too many unpaired entries, a coder that ran dry) the check is not armed and every binding
it gets is a Mismatch too (`printed` UNTIED): that unit FAILs, until the next CLEAR. A report of a
later epoch than the one armed means the connection changed and PRINTED lines may be lost (`gap`):
the first report after it must name the oldest unpaired binding's code (nothing was lost), else the
check disarms with that binding as the first untied one. A coder family that gives no reports at
all (`on` False) has no cross-check: nothing is compared and nothing fails for it."""

from __future__ import annotations

import collections
from dataclasses import dataclass

MAX_PENDING = 4096  # unpaired entries kept per stream; beyond, the check disarms (never unbounded)
UNTIED = "untied"  # Mismatch.printed of a binding no report can be tied to (the check is not armed)
NOT_CLEARED = "no coder CLEAR confirmed yet"  # why the check is not armed when it never was


@dataclass(frozen=True)
class Mismatch:
    unit: tuple  # (device_id, boot_id, unit_seq) the ledger bound
    bound: str  # the code the ledger bound to it
    printed: str | None  # the code the coder reported (None: it could not say; UNTIED: see above)
    why: str = ""  # for UNTIED: why reports and bindings are not known to line up


class PrintCheck:
    def __init__(self, on: bool = True):
        self.on = on  # the coder reports its prints (else there is nothing to check against)
        self.armed = False  # reports and bindings known to line up (from a CLEAR)
        self.why = NOT_CLEARED  # why not armed
        self.epoch = 0  # the reports' epoch since the last restart
        self.gap = False  # a new connection since the last pair: the next report must name the oldest binding
        self.reports: collections.deque = collections.deque()  # codes reported, not yet paired
        self.bound: collections.deque = collections.deque()  # (unit key, code) bound, not yet paired
        self.checked = 0  # pairs compared (a clean run: all equal)
        self.untied = 0  # bindings failed because no report could be tied to them
        self.loose: list[Mismatch] = []  # untied bindings not yet handed out by pairs()

    def snapshot(self):
        return (self.armed, self.why, self.epoch, self.gap, collections.deque(self.reports),
                collections.deque(self.bound), self.checked, self.untied, list(self.loose))

    def restore(self, state) -> None:
        (self.armed, self.why, self.epoch, self.gap, reports, bound, self.checked, self.untied, loose) = state
        self.reports, self.bound, self.loose = collections.deque(reports), collections.deque(bound), list(loose)

    def restart(self, epoch: int) -> None:
        """A CLEAR was confirmed at the coder's `epoch`: both streams start afresh (armed). A binding
        still waiting for its report is untied (the report can no longer come)."""
        if self.armed and self.bound:
            self.disarm("no print report came for it before the coder's CLEAR")
        self.armed, self.why, self.epoch, self.gap = self.on, "", epoch, False
        self.reports.clear()
        self.bound.clear()

    def disarm(self, why: str) -> None:
        """Reports and bindings no longer known to line up: the bindings not yet paired are untied
        (their units FAIL, handed out by `pairs`), and every later binding too until `restart`."""
        self._untie(self.bound, why)
        if self.armed:
            self.why = why
        self.armed = False
        self.reports.clear()
        self.bound.clear()

    def _untie(self, bindings, why: str) -> None:
        if self.on:
            out = [Mismatch(unit, code, UNTIED, why) for unit, code in bindings]
            self.untied += len(out)
            self.loose += out

    def add_reports(self, reports) -> None:
        for epoch, code in reports:
            if not self.armed or epoch < self.epoch:
                continue  # printed before the CLEAR that armed us (or nothing can be tied now)
            self.connection(epoch)
            self.reports.append(code)

    def connection(self, epoch: int) -> None:
        """The driver's report stream is at `epoch` (a later one: PRINTED lines may have been lost)."""
        if self.armed and epoch > self.epoch:
            self.epoch, self.gap = epoch, True

    def waiting(self, unit: tuple) -> bool:
        """`unit`'s binding still waits for its report: not checked yet (its verdict waits)."""
        return any(u == unit for u, _ in self.bound)

    def add_bindings(self, bindings) -> None:
        if self.armed:
            self.bound.extend(bindings)
        else:
            self._untie(bindings, self.why)

    def pairs(self) -> list[Mismatch]:
        """Pair what both streams have; → the mismatches (the check disarms at the first) and the
        untied bindings (`printed` UNTIED) since the last call."""
        out: list[Mismatch] = []
        while self.armed and self.reports and self.bound:
            code, (unit, bound) = self.reports[0], self.bound[0]
            if code != bound and self.gap:  # this report is not the oldest binding's: reports were lost
                self.disarm("PRINTED lines were lost with the coder's connection (the first report after it"
                            " names " + ("no code" if code is None else "another code") + ")")
                break
            self.reports.popleft()
            self.bound.popleft()
            self.checked += 1
            self.gap = False
            if code != bound:
                out.append(Mismatch(unit, bound, code))
                self.disarm("the coder printed a code it cannot name" if code is None
                            else f"unit {unit[0]}:{unit[1]}:{unit[2]} was misprinted")
        if len(self.reports) > MAX_PENDING or len(self.bound) > MAX_PENDING:
            self.disarm(f"more than {MAX_PENDING} prints unpaired")
        out, self.loose = out + self.loose, []
        return out
