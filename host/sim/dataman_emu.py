"""A Cognex DataMan emulator for the simulator and the tests: SimCamera's reads and faults, spoken as
DMCC and formatted result output (docs/devices.md "Cognex DataMan" names the document it follows).

DMCC as the emulator answers it:
  host>    ||[<checksum>[:<command-id>]]>COMMAND [args] CR LF   (case-insensitive; checksum 1: the
           byte before CR LF is the XOR of the bytes before it, else status 103)
  reader<  ||<checksum>:<command-id>[<status>]<value> CR LF      only when COM.DMCC-RESPONSE is 1
           (extended); silent (0, the reader's default) answers nothing, not even errors.
  status   0 no error, 101 command invalid, 102 parameter invalid (unknown parameter, bad or
           read-only value), 103 checksum incorrect.
  commands GET <param>, SET <param> <value>, TRIGGER ON|OFF (a software trigger reads nothing: a
           no-read result), a line without the `||…>` header is ignored (as the reader does).
Result output (the reader's formatted output, one line per trigger, CR LF):
  <ISO 15415 overall grade>,<symbology identifier><data>   (GS as the raw byte 0x1D)
  NOREAD                                                     the configured no-read string
Faults beyond SimCamera's: `garbage` sends a late, stray or mangled DMCC reply (lines besides the
results, which the driver must alarm on and not count); `drop()` closes the connection; `set_param(name, value)` changes the
reader's settings behind the host's back (a test of the driver's checks)."""

from __future__ import annotations

import random

from .camera import SYMBOLOGY, SimCamera

PARAMS = {  # name: (value, allowed values or None for read-only)
    "DEVICE.TYPE": ("DataMan 475V", None),
    "DEVICE.FIRMWARE-VER": ("6.1.16", None),
    "COM.DMCC-RESPONSE": ("0", {"0", "1"}),
    "SYMBOL.DATAMATRIX": ("ON", {"ON", "OFF"}),
    "SYMBOL.QR": ("OFF", {"ON", "OFF"}),
    "TRIGGER.TYPE": ("0", {"0", "1", "2", "3", "4", "5"}),
}


class DataManEmu(SimCamera):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.params = {k: v for k, (v, _) in PARAMS.items()}
        self.allowed = {k: a for k, (_, a) in PARAMS.items()}
        self.commands: list[str] = []  # every command line received, for the tests

    def set_param(self, name: str, value: str, read_only: bool = False) -> None:
        self.params[name] = value
        if read_only:
            self.allowed[name] = None

    def _result_line(self, n: int, grade: str, data: str) -> str:
        return f"{grade},{SYMBOLOGY}{data}\r"  # LineServer adds the LF

    def _no_read_line(self, n: int) -> str:
        return "NOREAD\r"

    def _garbage(self, n: int, rng: random.Random) -> str:
        # lines a reader sends besides its results (a late reply, a mangled one): never a result, so
        # a driver that counts results itself must not count them either (docs/devices.md)
        return rng.choice(["||0:99[0]late\r", "||0:98[104]\r", "||garbled\r"])

    def handle(self, line: str) -> str | None:
        self.commands.append(line)
        if not line.startswith("||") or ">" not in line:
            return None  # not DMCC: the reader ignores it
        header, _, body = line[2:].partition(">")
        check, _, cid = header.partition(":")
        self._header = header  # the reply echoes it (reply checksums are not emulated)
        if check not in ("", "0", "1") or (cid and not cid.isdigit()):
            return self._reply(check, cid, 101)
        if check == "1":
            if not body:
                return self._reply(check, cid, 103)
            xor = 0
            for b in (line[:-1]).encode("ascii", "replace"):
                xor ^= b
            if xor != ord(body[-1]):
                return self._reply(check, cid, 103)
            body = body[:-1]
        words = body.split(" ", 2)
        cmd = words[0].upper()
        if cmd == "GET" and len(words) == 2:
            param = words[1].upper()
            if param not in self.params:
                return self._reply(check, cid, 102)
            return self._reply(check, cid, 0, self.params[param])
        if cmd == "SET" and len(words) == 3:
            param, value = words[1].upper(), words[2].strip('"').upper()
            allowed = self.allowed.get(param, None)
            if param not in self.params or allowed is None or value not in allowed:
                return self._reply(check, cid, 102)
            was_silent = self.params["COM.DMCC-RESPONSE"] == "0"
            self.params[param] = value
            if param == "COM.DMCC-RESPONSE" and was_silent:
                return None  # the switch takes effect after this command: silent still
            return self._reply(check, cid, 0)
        if cmd == "TRIGGER" and len(words) == 2 and words[1].upper() in ("ON", "OFF"):
            reply = self._reply(check, cid, 0)
            if words[1].upper() == "ON":
                self.triggers += 1
                if reply is not None:
                    self.send(reply)
                self.send(self._no_read_line(self.triggers))  # a software trigger reads nothing here
                return None
            return reply
        return self._reply(check, cid, 101)

    def _reply(self, check: str, cid: str, status: int, value: str = "") -> str | None:
        if self.params["COM.DMCC-RESPONSE"] != "1":
            return None
        return f"||{self._header}[{status}]{value}\r"
