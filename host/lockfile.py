"""Advisory lock files (fcntl): who holds one says so in it, and the kernel drops the lock however
the holder's process ends. One agent per device (host/agent.py), one run per sim --out
(host/sim/run.py), and the batch commands that must not act under a running agent
(host/lifecycle.py) all ask here."""

from __future__ import annotations

import fcntl


class Held(Exception):
    """The lock is held by another process; `holder` is what it wrote ("" if nothing)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def hold(path: str, holder: str):
    """Take the lock at `path` and write `holder` into it → the open file (close it to release).
    Held if another process has it."""
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        text = f.read().strip()
        f.close()
        raise Held(text) from None
    f.seek(0)
    f.truncate()
    f.write(holder + "\n")
    f.flush()
    return f


def holder(path: str) -> str | None:
    """What the live holder of the lock at `path` wrote, or None when nobody holds it."""
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip()
        fcntl.flock(f, fcntl.LOCK_UN)
        return None
