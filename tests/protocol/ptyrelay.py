"""A faulty wire between two pseudo-terminals: the device opens one tty, the host the other,
and a thread copies bytes between their masters, corrupting, dropping and duplicating them at
configurable rates (per byte / per chunk), or cutting the wire altogether (link loss)."""

from __future__ import annotations

import os
import random
import select
import threading
import tty


class PtyRelay:
    def __init__(self, *, corrupt: float = 0.0, drop: float = 0.0, dup: float = 0.0,
                 seed: int = 1) -> None:
        self.corrupt, self.drop, self.dup = corrupt, drop, dup  # per byte, per byte, per chunk
        self.cut = False  # True: everything is lost in both directions
        self.rng = random.Random(seed)
        self.stats = dict(bytes=0, corrupted=0, dropped=0, duplicated=0, cut=0)
        self._fds = []
        self.paths = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo or line editing before the far end configures it
            self._fds.append((master, slave))
            self.paths.append(os.ttyname(slave))
        self.device_path, self.host_path = self.paths
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PtyRelay":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        for master, slave in self._fds:
            for fd in (master, slave):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fds = []

    def _mangle(self, data: bytes) -> bytes:
        if self.cut:
            self.stats["cut"] += len(data)
            return b""
        self.stats["bytes"] += len(data)
        if not (self.corrupt or self.drop or self.dup):
            return data
        rng, out = self.rng, bytearray()
        for b in data:
            r = rng.random()
            if r < self.drop:
                self.stats["dropped"] += 1
                continue
            if r < self.drop + self.corrupt:
                b ^= 1 << rng.randrange(8)
                self.stats["corrupted"] += 1
            out.append(b)
        if rng.random() < self.dup:
            self.stats["duplicated"] += 1
            out = out + out
        return bytes(out)

    def _run(self) -> None:
        dev_master, host_master = self._fds[0][0], self._fds[1][0]
        peer = {dev_master: host_master, host_master: dev_master}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(list(peer), [], [], 0.05)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue  # the far end closed its tty (e.g. the device restarted)
                data = self._mangle(data)
                if data:
                    try:
                        os.write(peer[fd], data)
                    except OSError:
                        pass
