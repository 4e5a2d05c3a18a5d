"""Store-and-forward: delivers the outbox to one target, in order per batch, in documents of up
to `doc_size` events. A document counts as delivered only after the sink confirmed it; then the
target's progress is recorded in SQLite, so a crash before that means a resend (at-least-once;
the eventIDs make it idempotent upstream). A failure keeps the events, records the sink's
message and schedules the next try with exponential backoff; the batch waits, later batches
still go. Each target has its own progress (outbox.py): one forwarder per target."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from serialine.host import audit
from serialine.host.epcis import document as doc, outbox
from serialine.host.epcis.sinks import SinkError, redact


def target_of(sink) -> str:
    """The identity a target's delivery is kept under: its address without credentials (sinks
    take those from elsewhere), a directory as its absolute path."""
    from serialine.host.epcis.sinks.directory import DirectorySink
    if isinstance(sink, DirectorySink):
        return f"directory:{Path(sink.path).resolve()}"
    if hasattr(sink, "url"):
        return redact(sink.url)
    if hasattr(sink, "topic"):
        return f"mqtt://{sink.host}:{sink.port}/{sink.topic}"
    raise ValueError(f"cannot tell the target of a {type(sink).__name__}: pass target=")


class Forwarder:
    def __init__(self, conn: sqlite3.Connection, sink, doc_size: int = 100,
                 backoff_base: float = 1.0, backoff_max: float = 300.0, clock=time.time,
                 target: str | None = None):
        if doc_size < 1:
            raise ValueError("doc_size must be at least 1")
        self.conn, self.sink, self.doc_size = conn, sink, doc_size
        self.target = target or target_of(sink)
        self.backoff_base, self.backoff_max, self.clock = backoff_base, backoff_max, clock
        self.audited = audit.present(conn)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failure in a row: base * 2^(attempts-1), capped."""
        return min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1))

    def run_once(self, batch_id: str | None = None) -> int:
        """Deliver everything that is due now (of one batch, if given); returns the number of
        events delivered."""
        delivered = 0
        for batch in outbox.pending_batches(self.conn, self.target) if batch_id is None else [batch_id]:
            while (chunk := outbox.next_chunk(self.conn, self.target, batch, self.doc_size, self.clock())):
                seqs = [seq for seq, _, _ in chunk]
                name = f"{batch}-{seqs[0]:012d}"
                # each document carries the audit chain's head, so a receiver holds an anchor
                # that a truncated or rewritten trail cannot match
                head = (None if not self.audited else audit.head(self.conn) if self.conn.in_transaction
                        else audit.anchor(self.conn, f"EPCIS document {name} to {self.target}"))
                try:
                    self.sink.send(doc.epcis_document([event for _, _, event in chunk], audit_head=head), name)
                except SinkError as exc:
                    attempts = outbox.attempts(self.conn, self.target, batch)
                    outbox.record_failure(self.conn, self.target, batch, seqs, str(exc),
                                          self.clock() + self.backoff(attempts + 1))
                    break
                outbox.mark_delivered(self.conn, self.target, batch, seqs, self.clock())
                delivered += len(seqs)
        return delivered

    def run(self, stop: threading.Event, idle: float = 0.5) -> None:
        """Forward until `stop` is set, sleeping `idle` seconds when nothing is due."""
        while not stop.is_set():
            if not self.run_once():
                stop.wait(idle)
