"""Watches the bytes the device receives for VERDICT frames: the virtual clock's barrier needs to
know that the host's verdict for a unit is on its way before it lets time pass that unit's deadline.
Uses the host link's own deframer and decoder, so it sees exactly the frames the device will accept."""

from __future__ import annotations

import threading
import time

from serialine.host.link import Deframer, decode
from serialine.protocol.schema import BY_NAME

VERDICT = BY_NAME["VERDICT"].msg_type


class VerdictTap:
    def __init__(self):
        self._deframer = Deframer()
        self._lock = threading.Lock()
        self.cond = threading.Condition(self._lock)
        self.verdicts: dict[int, int] = {}  # this boot: unit_seq -> times seen (retransmits count)
        self.first_seen: dict[tuple[int, int], float] = {}  # (boot_no, unit_seq) -> monotonic s
        self.boot_no = 0
        self.frames = 0

    def __call__(self, data: bytes) -> None:
        for frame in self._deframer.feed(data):
            try:
                msg_type, _, _, fields = decode(frame)
            except Exception:
                continue
            with self.cond:
                self.frames += 1
                if msg_type == VERDICT:
                    u = fields["unit_seq"]
                    self.verdicts[u] = self.verdicts.get(u, 0) + 1
                    self.first_seen.setdefault((self.boot_no, u), time.monotonic())
                self.cond.notify_all()

    def count(self) -> int:
        with self._lock:
            return len(self.verdicts)

    def wait_for(self, n: int, timeout: float) -> bool:
        """Block until verdicts for at least n distinct units have gone by (or timeout)."""
        with self.cond:
            return self.cond.wait_for(lambda: len(self.verdicts) >= n, timeout)

    def reset(self) -> None:
        """A new device boot numbers its units from 0 again."""
        with self._lock:
            self.verdicts.clear()
            self.boot_no += 1
