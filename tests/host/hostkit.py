"""Helpers shared by the host tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

from serialine.host.db import transaction
from serialine.host.ledger import Ledger

GTIN = "09506000134352"
PREFIX_LEN = 7


class Line:
    """Plays the line device's events into a ledger (what the link would deliver)."""

    def __init__(self, ledger: Ledger, device_id="dev1", boot_id=7):
        self.ledger, self.device_id, self.boot_id, self.event_seq = ledger, device_id, boot_id, 0

    def event(self, name, **fields):
        self.event_seq += 1
        fields["event_seq"] = self.event_seq
        return name, fields

    def store(self, events):
        with transaction(self.ledger.conn):
            out = [self.ledger.store(self.device_id, self.boot_id, n, f) for n, f in events]
            self.ledger.flush_events()
        return out

    def unit(self, u, outcome=1, reason=0, read="good", grade="A"):
        """One unit through the line: detected, printed, inspected, judged, outcome → verdict."""
        L = self.ledger
        self.store([self.event("UNIT_DETECTED", unit_seq=u, pos=0, t_us=0, flags=0),
                    self.event("UNIT_PRINTED", unit_seq=u, pos=0, t_us=0),
                    self.event("UNIT_INSPECTED", unit_seq=u, pos=0, t_us=0)])
        code = L.expected_code(self.device_id, self.boot_id, u)
        data = "]d2" + code if read == "good" else read
        with transaction(L.conn):
            v, r, s = L.judge.decide(data, grade, code)
            L.record_verdict(self.device_id, self.boot_id, u, v, r, s, grade)
        self.store([self.event("UNIT_OUTCOME", unit_seq=u, outcome=outcome, reason=reason, gate_error=0, pos=0, t_us=0)])
        return v, r, s


def cli_line(dbfile, setup: list[list[str]], queued: int) -> "Line":
    """A ledger file set up by `serialine batch` commands (`setup`, as user ann), its batch B1 with
    `queued` coder jobs, and a Line on it (the ledger's connection: line.ledger.conn)."""
    from serialine.host import cli_batch, db
    for argv in setup:
        assert cli_batch.main([*argv, "--db", str(dbfile), "--user", "ann"]) == 0
    ledger = Ledger(db.connect(str(dbfile)), "B1")
    with transaction(ledger.conn):
        ledger.queue_codes(queued)
    return Line(ledger)
