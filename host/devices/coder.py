"""Coder (printer) driver: PUSH codes into the coder's buffer ahead of the line (docs/devices.md).

Replies are matched to requests by `LineClient.request` (one outstanding, shape checked). A PUSH
whose reply is in doubt raises InDoubt: the job may or may not be queued, so the caller must treat
the coder's queue as unknown (line stop, CLEAR, write its queued jobs off). CLEAR and DEPTH are
idempotent and retried once on a fresh connection.

`buffered()` is the coder's PHYSICAL depth: the depth its last reply gave, less the PRINTED lines
read after that reply (counted in stream order by the reader thread, so none is counted twice).
A lost connection may have lost PRINTED lines: the next `buffered()` asks DEPTH first.

`printed_codes()` hands over the codes the coder said it printed, in order, each with the stream
`epoch` it belongs to: a new connection (PRINTED lines may have gone with the old one) and a
confirmed CLEAR each start a new epoch, so the agent's cross-check (host/printcheck.py) never
pairs reports across a gap it cannot see."""

from __future__ import annotations

import collections

from .lineclient import MAX_EVENTS, DeviceError, InDoubt, LineClient, escape_code, unescape_code

__all__ = ["Coder", "DeviceError", "InDoubt"]

_DEPTH = r"OK (\d{1,6})"
_REFUSED = r"ERR (?:full|bad code|line too long|not ascii)"  # definite: nothing queued


class Coder(LineClient):
    UNSOLICITED = ("PRINTED", "EMPTY")

    def __init__(self, *args, **kw):
        self.printed = 0  # PRINTED lines received (prints bind to units by UNIT_PRINTED)
        self.empty = 0  # EMPTY lines received: a trigger printed nothing
        self._printed_at_reply = 0  # `printed` when the reader met the latest reply
        self._depth_at: tuple[int, int] | None = None  # (depth replied, printed at that reply)
        self.epoch = 0  # the PRINTED stream's epoch (see printed_codes)
        self._codes: collections.deque = collections.deque()  # (epoch, code) not yet handed over
        super().__init__(*args, **kw)

    def _connect(self) -> None:
        self._depth_at = None  # PRINTED lines may go with the old connection: the next reply says
        with self._state:
            self.epoch += 1
        super()._connect()

    def printed_codes(self) -> list[tuple[int, str | None]]:
        """(epoch, code) of every PRINTED line since the last call, in stream order."""
        with self._state:
            out, self._codes = list(self._codes), collections.deque()
        return out

    def _printed_code(self, code: str | None) -> None:
        with self._state:
            if len(self._codes) >= MAX_EVENTS:  # not taken: the oldest go, and the stream has a gap
                self._codes.clear()
                self.epoch += 1
            self._codes.append((self.epoch, code))

    def _line(self, sock, raw: bytes, now: float) -> None:
        if sock is self.sock and raw.startswith((b"OK", b"ERR")):
            self._printed_at_reply = self.printed
        super()._line(sock, raw, now)

    def _replied(self, reply: str) -> int:
        depth = int(reply[3:])
        self._depth_at = (depth, self._printed_at_reply)
        return depth

    def buffered(self) -> int:
        """Jobs in the coder's buffer now (at most: a PRINTED line may still be on its way)."""
        if self._depth_at is None or self.closed:
            self.depth()
        depth, printed = self._depth_at
        return max(0, depth - (self.printed - printed))

    def on_event(self, line: str, t: float) -> None:
        word, _, code = line.partition(" ")
        if word == "PRINTED":  # a print the coder reports but cannot be read is a print of no known code
            self.printed += 1
            well_formed = code and " " not in code
            self._printed_code(unescape_code(code) if well_formed else None)
            if not well_formed:
                self.alarm("MALFORMED", f"coder: malformed line {line[:80]!r} (taken as a print of an unknown code)")
        elif word == "EMPTY" and not code:
            self.empty += 1
        else:
            self.alarm("MALFORMED", f"coder: malformed line {line[:80]!r}")

    def push(self, code: str) -> int:
        """Queue one code; returns the buffer depth. DeviceError when the coder refused it."""
        reply = self.request("PUSH " + escape_code(code), rf"{_DEPTH}|{_REFUSED}")
        if reply.startswith("ERR"):
            raise DeviceError(f"coder refused PUSH: {reply}")
        return self._replied(reply)

    def clear(self) -> None:
        self._replied(self.request("CLEAR", r"OK 0", idempotent=True))
        with self._state:  # every PRINTED before the reply was read before it: the rest is new
            self.epoch += 1

    def depth(self) -> int:
        return self._replied(self.request("DEPTH", _DEPTH, idempotent=True))
