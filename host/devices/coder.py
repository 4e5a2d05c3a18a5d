"""Coder (printer) driver: PUSH codes into the coder's buffer ahead of the line (docs/devices.md)."""

from __future__ import annotations

from .lineclient import DeviceError, LineClient, escape_code


class Coder(LineClient):
    UNSOLICITED = ("PRINTED", "EMPTY")

    def _ok(self, reply: str, what: str) -> int:
        word, _, rest = reply.partition(" ")
        if word != "OK":
            raise DeviceError(f"coder refused {what}: {reply}")
        return int(rest)

    def push(self, code: str) -> int:
        """Queue one code; returns the buffer depth."""
        return self._ok(self.request("PUSH " + escape_code(code)), "PUSH")

    def clear(self) -> None:
        self._ok(self.request("CLEAR"), "CLEAR")

    def depth(self) -> int:
        return self._ok(self.request("DEPTH"), "DEPTH")
