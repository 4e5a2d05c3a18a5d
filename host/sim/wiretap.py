"""Watches the bytes the device receives for VERDICT frames: the virtual clock's barrier needs to
know that the host's verdict for a unit is on its way before it lets time pass that unit's deadline.
Uses the host's one stream decoder (protocol.fastcodec), so it sees exactly the intact frames."""

from __future__ import annotations

import threading
import time

from serialine.protocol.fastcodec import StreamDecoder, ValueOutOfRange
from serialine.protocol.schema import BY_NAME

VERDICT = BY_NAME["VERDICT"].msg_type
ACK = BY_NAME["ACK"].msg_type
HELLO = BY_NAME["HELLO"].msg_type


class VerdictTap:
    def __init__(self):
        self._decoder = StreamDecoder()
        self._lock = threading.Lock()
        self.cond = threading.Condition(self._lock)
        self.verdicts: dict[int, int] = {}  # this boot: unit_seq -> times seen (retransmits count)
        self.first_seen: dict[tuple[int, int], float] = {}  # (boot_no, unit_seq) -> monotonic s
        self.boot_no = 0
        self.frames = 0
        self.acks = 0  # ACK frames: the host has stored what the device sent
        self.acked: int | None = None  # this session: the device seq the latest ACK awaits next (mod 256)

    def __call__(self, data: bytes) -> None:
        for msg_type, _, ack, fields in self._decoder.feed(data):
            with self.cond:
                self.frames += 1
                if msg_type == ACK:
                    self.acks += 1
                    self.acked = ack
                elif msg_type == HELLO:  # a new session numbers the device's events from 0
                    self.acked = None
                if msg_type == VERDICT and not isinstance(fields, ValueOutOfRange):
                    u = fields[0]  # unit_seq
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

    def wait_ack(self, seen: int, timeout: float) -> int:
        """Block until more than `seen` ACK frames have gone by (or timeout); how many have."""
        with self.cond:
            self.cond.wait_for(lambda: self.acks > seen, timeout)
            return self.acks

    def wait_frames(self, seen: int, timeout: float) -> int:
        """Block until more than `seen` frames have gone by (or timeout); how many have."""
        with self.cond:
            self.cond.wait_for(lambda: self.frames > seen, max(0.0, timeout))
            return self.frames

    def _stored(self, mark: int) -> bool:  # (the lock held)
        return self.acked is not None and (self.acked - mark) & 0xFF < 0x80

    def stored(self, mark: int) -> bool:
        """Has the host acknowledged (stored) every device event before link seq `mark` (a device's
        StepStatus.event_mark)? An ACK names the seq it awaits next; later events may be acked too."""
        with self._lock:
            return self._stored(mark)

    def wait_stored(self, mark: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self._stored(mark), timeout)

    def reset(self) -> None:
        """A new device boot numbers its units from 0 again."""
        with self._lock:
            self.verdicts.clear()
            self.acked = None
            self.boot_no += 1
