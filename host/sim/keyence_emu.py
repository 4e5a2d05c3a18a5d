"""A Keyence SR series emulator for the simulator and the tests: SimCamera's reads and faults, spoken
as the SR reader's command and data format (docs/devices.md "Keyence SR series" names the document).

  host>    CMD[,param…] CR (an LF after the CR is ignored)
  reader<  OK,CMD[,value…] CR | ER,CMD,ee CR
           ee (the SR-X table): 00 undefined command, 01 wrong number of parameters, 02 parameter 1
           out of range; LON while a read is in progress: 20 (not allowed in the present state —
           the manual says only that it is an error)
  commands KEYENCE → OK,KEYENCE,<model>,<versions>;
           LON / LOFF (LON reads nothing here: LOFF then outputs the read-error string),
           RP,<no> / WP,<no>,<value> on a small table of parameter numbers (made up: the stored
           pages give no numbers, so only their shape is the reader's)
Read data (one line per trigger, CR):
  <symbol ID><read data>:<ISO/IEC 15415 overall grade>    (GS as the raw byte 0x1D)
  ERROR                                                   the read-error string
Faults beyond SimCamera's: `garbage` sends a stray reply (a line besides the results, which the
driver must alarm on and not count); `drop()` closes the connection."""

from __future__ import annotations

import random

from .camera import SYMBOLOGY, SimCamera

PARAMS = {"100": "1", "101": "0"}  # hypothetical parameter numbers, values "0".."9"


class KeyenceEmu(SimCamera):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.params = dict(PARAMS)
        self.reading = False
        self.model = "SR-X300"
        self.commands: list[str] = []

    def send(self, line: str) -> bool:
        """One CR-terminated line (the SR reader ends every line with CR, no LF)."""
        with self._lock:
            c = self._client
            if c is None:
                return False
            try:
                c.sendall(line.encode("ascii", "replace") + b"\r")
                return True
            except OSError:
                self._client = None
                self.connected.clear()
                return False

    def _result_line(self, n: int, grade: str, data: str) -> str:
        return f"{SYMBOLOGY}{data}:{grade}"

    def _no_read_line(self, n: int) -> str:
        return "ERROR"

    def _garbage(self, n: int, rng: random.Random) -> str:
        # lines a reader sends besides its results (stray replies): never a result (docs/devices.md)
        return rng.choice(["OK,LON", "ER,LOFF,15", "OK,WP"])

    def handle(self, line: str) -> None:
        line = line.rstrip("\r")
        self.commands.append(line)
        if line:
            self.send(self._answer(line))
        return None  # replies go out CR-terminated through send()

    def _answer(self, line: str) -> str:
        word, *params = line.split(",")
        if word == "KEYENCE":
            return "ER,KEYENCE,01" if params else f"OK,KEYENCE,{self.model},1.00,emulator"
        if word == "LON" and not params:
            if self.reading:
                return "ER,LON,20"
            self.reading = True
            return "OK,LON"
        if word == "LOFF" and not params:
            was, self.reading = self.reading, False
            if was:
                self.triggers += 1
                self.send("OK,LOFF")
                return self._no_read_line(self.triggers)
            return "OK,LOFF"
        if word == "RP":
            if len(params) != 1:
                return "ER,RP,01"
            return f"OK,RP,{self.params[params[0]]}" if params[0] in self.params else "ER,RP,02"
        if word == "WP":
            if len(params) != 2:
                return "ER,WP,01"
            no, value = params
            if no not in self.params or not (len(value) == 1 and value.isdigit()):
                return "ER,WP,02"
            self.params[no] = value
            return "OK,WP"
        return f"ER,{word[:8] or '?'},00"
