"""Faults on the serial link: THE relay between two pseudo-terminal pairs (the simulator's and
`serialine selftest`'s) that corrupts and drops bytes and duplicates chunks at seeded rates and goes
dark during outages. The device opens one slave, the host the other; with no faults configured the
relay is a transparent wire.

Other faults (device reboot, host kill -9 or SIGTERM, camera connection dropped, bin full) are events at a unit number that the
orchestrator (run.py) carries out; `FaultPlan` tells it which ones are due."""

from __future__ import annotations

import os
import random
import select
import threading
import tty
from dataclasses import dataclass, field

from .scenario import Faults


def open_pty() -> tuple[int, str, int]:
    """A raw pty: (master fd, slave path, slave fd). The slave stays open here so the master never sees EIO
    while the other side reconnects (a restarting host or device)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    return master, path, slave


@dataclass
class LinkStats:
    bytes: int = 0
    corrupted: int = 0
    dropped: int = 0
    duplicated: int = 0  # chunks
    dark_dropped: int = 0


class FaultyRelay:
    """Copies bytes both ways between two pty masters, with faults: per byte, `loss` drops it and
    `corrupt` flips one of its bits; per chunk read, `dup` sends it twice. `device_path` and
    `host_path` are what the two ends open."""

    def __init__(self, corrupt: float = 0.0, loss: float = 0.0, seed: int = 0, *, dup: float = 0.0):
        self.corrupt, self.loss, self.dup = corrupt, loss, dup
        self.rng = random.Random(seed)
        self._dev_m, self.device_path, self._dev_s = open_pty()
        self._host_m, self.host_path, self._host_s = open_pty()
        self.dark = False  # an outage: everything is lost both ways
        self.stats = {"to_host": LinkStats(), "to_device": LinkStats()}
        # taps: called with the bytes each end will actually receive (after the faults)
        self.taps = {"to_host": None, "to_device": None}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="FaultyRelay")

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        for fd in (self._dev_m, self._dev_s, self._host_m, self._host_s):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def totals(self) -> dict:
        """The stats of both ways summed."""
        a, b = (vars(v) for v in self.stats.values())
        return {k: a[k] + b[k] for k in a}

    def mangle(self, data: bytes, st: LinkStats) -> bytes:
        st.bytes += len(data)
        if self.dark:
            st.dark_dropped += len(data)
            return b""
        if not (self.corrupt or self.loss or self.dup):
            return data
        out = bytearray()
        for b in data:
            x = self.rng.random()
            if x < self.loss:
                st.dropped += 1
                continue
            if x < self.loss + self.corrupt:
                st.corrupted += 1
                b ^= 1 << self.rng.randrange(8)
            out.append(b)
        if self.dup and self.rng.random() < self.dup:
            st.duplicated += 1
            out = out + out
        return bytes(out)

    def _run(self):
        route = {self._dev_m: (self._host_m, "to_host"), self._host_m: (self._dev_m, "to_device")}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(list(route), [], [], 0.05)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                dst, way = route[fd]
                data = self.mangle(data, self.stats[way])
                if data and self.taps[way] is not None:
                    self.taps[way](data)
                if data:
                    try:
                        os.write(dst, data)
                    except OSError:
                        pass


@dataclass
class FaultPlan:
    """Unit-numbered faults, each fired once when the line detects that unit."""

    faults: Faults
    fired: set = field(default_factory=set)

    def due(self, unit: int) -> list[tuple[str, float]]:
        """Faults to fire when pack `unit` is detected: [(kind, arg)]."""
        out = []
        f = self.faults
        for at, ms in f.link_outages:
            if at == unit and ("outage", at) not in self.fired:
                self.fired.add(("outage", at))
                out.append(("outage", ms))
        for kind, ats in (("device_reboot", f.device_reboot_at), ("host_kill", f.host_kill_at),
                          ("host_term", f.host_term_at), ("camera_drop", f.camera_drop_at)):
            if unit in ats and (kind, unit) not in self.fired:
                self.fired.add((kind, unit))
                out.append((kind, 0.0))
        return out
