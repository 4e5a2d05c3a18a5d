"""Coder (printer) driver: PUSH codes into the coder's buffer ahead of the line (docs/devices.md).

Replies are matched to requests by `LineClient.request` (one outstanding, shape checked). A PUSH
whose reply is in doubt raises InDoubt: the job may or may not be queued, so the caller must treat
the coder's queue as unknown (line stop, CLEAR, write its queued jobs off). CLEAR and DEPTH are
idempotent and retried once on a fresh connection."""

from __future__ import annotations

from .lineclient import DeviceError, InDoubt, LineClient, escape_code

__all__ = ["Coder", "DeviceError", "InDoubt"]

_DEPTH = r"OK (\d{1,6})"
_REFUSED = r"ERR (?:full|bad code|line too long|not ascii)"  # definite: nothing queued


class Coder(LineClient):
    UNSOLICITED = ("PRINTED", "EMPTY")

    def __init__(self, *args, **kw):
        self.printed = 0  # PRINTED lines received (informational: prints bind by UNIT_PRINTED)
        self.empty = 0  # EMPTY lines received
        super().__init__(*args, **kw)

    def on_event(self, line: str, t: float) -> None:
        word, _, code = line.partition(" ")
        if word == "PRINTED" and code and " " not in code:
            self.printed += 1
        elif word == "EMPTY" and not code:
            self.empty += 1
        else:
            self.alarm("MALFORMED", f"coder: malformed line {line[:80]!r}")

    def push(self, code: str) -> int:
        """Queue one code; returns the buffer depth. DeviceError when the coder refused it."""
        reply = self.request("PUSH " + escape_code(code), rf"{_DEPTH}|{_REFUSED}")
        if reply.startswith("ERR"):
            raise DeviceError(f"coder refused PUSH: {reply}")
        return int(reply[3:])

    def clear(self) -> None:
        self.request("CLEAR", r"OK 0", idempotent=True)

    def depth(self) -> int:
        return int(self.request("DEPTH", _DEPTH, idempotent=True)[3:])
