"""An emulated Videojet coder speaking the Videojet (Zipher) Text Communications Protocol, as the
public Videojet DataFlex 6530 Service Manual (Rev AA, appendix B) documents it (docs/devices.md):
a drop-in for SimCoder (same constructor arguments, same `trigger()` for the line model).

ASCII over TCP, each message ended by CR (a CR LF pair is accepted: the LF is ignored); a command
answers `ACK` (default success) or `ERR` (default failure), `GST` answers `STS|…|`:
  SEL|<job>|<data>|…|        select a job, data into its variable fields in order
  SLA|<job>|<field>=<data>|…| select a job, data into named fields
  JDU|<data>|…|              update the selected job's fields in order        (ERR: no job selected)
  JDA|<field>=<data>|…|      update named fields; an unknown field name is ignored, not an error
  PRN                        print once now                                   (ERR: not running)
  SST|<state>|               0 shut down (never directly: ERR), 1 start up, 2 shut down, 3 run, 4 offline
  GST                        STS|<state>|<error 0 none, 1 warnings, 2 faults>|<job>|<batch count>|<total count>|
  CAF                        clear all faults                                 (ERR: a fault that is not user-clearable)
Anything else, an over-long line or one that is not ASCII: ERR.

What the printer holds is the job's field data, not a queue: each print uses the field's present
value; data updated since the last print prints once fresh, after that the same data prints again
(`trigger` says "duplicate"). A print moves both counts; the protocol sends nothing unsolicited, so
the host learns of prints from the counts (`GST`). Not running (offline, shut down, a fault): a
trigger prints nothing and moves no count.

Faults: the physical ones of CoderModel (misprint, skip, smear), `stray_reply` (an unsolicited
`ACK` after a print), `reply_delay_s`, `drop()`, and `fault(clearable=True)` (offline with a fault)."""

from __future__ import annotations

from ..devices.lineclient import GS
from .coder import CoderModel

SHUT_DOWN, STARTING_UP, SHUTTING_DOWN, RUNNING, OFFLINE = range(5)
DEFAULT_JOBS = {"SERIALINE": ("SERIAL",)}  # job name -> its variable fields, in order


class VideojetEmu(CoderModel):
    EOL = b"\r"
    TOO_LONG = NOT_ASCII = "ERR"

    def __init__(self, misprint=0.0, skip=0.0, smear=0.0, stray_reply=0.0, seed=0, *, jobs=None,
                 selected="SERIALINE", running=True, **kw):
        super().__init__(misprint=misprint, skip=skip, smear=smear, stray_reply=stray_reply, seed=seed, **kw)
        self.jobs = dict(DEFAULT_JOBS if jobs is None else jobs)
        self.job = selected if selected in self.jobs else ""
        self.fields: dict[str, str] = {}
        self.state = RUNNING if running and self.job else OFFLINE
        self.error = 0
        self._clearable = True
        self.batch_count = self.total_count = 0
        self.last = ""  # what the variable field printed last (printed again until updated)
        self.commands: list[str] = []  # every command line received, for tests
        # for tests, prints tied to the protocol (no wall clock): (command prefix, "before" | "after"),
        # one print when the next command with that prefix arrives, before it is carried out or after
        # it (before its reply goes out)
        self.prints_at: list[tuple[str, str]] = []
        self.log: list[str | None] = []  # each counted print: the fresh job it carried, None for none
        self._asked = True  # a GST answered since the field was last loaded

    @property
    def field(self) -> str:
        """The selected job's first variable field (the one a serialisation job fills)."""
        names = self.jobs.get(self.job, ())
        return names[0] if names else ""

    @property
    def loaded(self) -> bool:
        """Fresh data waits in the field (the next print is a job, not the old data again): a
        virtual-time simulator may hold its clock until the host has loaded it. Loaded means the
        host has also asked the counts since (its GST closes the window in which a print could have
        used either data: a print inside it is in doubt and fails its unit)."""
        return self.depth > 0 and self._asked

    def handle(self, line: str) -> str:
        self.commands.append(line)
        self._hooked(line, "before")
        reply = self._handle(line)
        self._hooked(line, "after")
        return reply

    def _hooked(self, line: str, when: str) -> None:
        for i, (prefix, at) in enumerate(self.prints_at):
            if at == when and line.startswith(prefix):
                del self.prints_at[i]
                self.trigger(0)
                return

    def _handle(self, line: str) -> str:
        cmd, rest = line[:3], line[3:].rstrip(" ")
        if rest and not (rest.startswith("|") and rest.endswith("|") and len(rest) >= 2):
            return "ERR"
        args = rest[1:-1].split("|") if rest else []
        with self._buf_lock:
            if cmd in ("SEL", "SLA") and args:
                if args[0] not in self.jobs:
                    return "ERR"
                self.job, self.fields, self.batch_count = args[0], {}, 0
                self.buffer.clear()
                self.last = ""
                return self._update(args[1:], named=cmd == "SLA")
            if cmd in ("JDU", "JDA") and args:
                return self._update(args, named=cmd == "JDA") if self.job else "ERR"
            if cmd == "GST" and not rest:
                self._asked = True
                return f"STS|{self.state}|{self.error}|{self.job}|{self.batch_count}|{self.total_count}|"
            if cmd == "SST" and len(args) == 1:
                return self._set_state(args[0])
            if cmd == "CAF" and not rest:
                if self.error == 2 and not self._clearable:
                    return "ERR"
                self.error = 0
                return "ACK"
            if cmd == "PRN" and not rest and self.state != RUNNING:
                return "ERR"
        if cmd == "PRN" and not rest:
            self.trigger(0)
            return "ACK"
        return "ERR"

    def _update(self, values: list[str], named: bool) -> str:
        names = self.jobs[self.job]
        pairs = []
        for i, v in enumerate(values):
            if named:
                name, eq, v = v.partition("=")
                if not eq:
                    return "ERR"
            else:
                name = names[i] if i < len(names) else ""
            pairs.append((name, v))
        for name, v in pairs:
            if name not in names:
                continue  # the manual: an invalid field name is ignored, not an error
            if not all(c == GS or " " <= c <= "~" for c in v):
                return "ERR"
            self.fields[name] = v
            if name == self.field:
                self.buffer.clear()
                if v:
                    self.buffer.append(v)  # fresh data: prints once as such
                    self._asked = False
                self.last = v
        return "ACK"

    def _set_state(self, arg: str) -> str:
        if arg not in ("1", "2", "3", "4"):
            return "ERR"  # 0 is never entered directly (shut down is reached through 2)
        want = int(arg)
        if want == RUNNING and (not self.job or self.error == 2 or self.state != OFFLINE and self.state != RUNNING):
            return "ERR"
        if want == STARTING_UP:
            if self.state != SHUT_DOWN:
                return "ERR"
            want = OFFLINE  # starting up takes no time here
        elif want == SHUTTING_DOWN:
            if self.state not in (OFFLINE, RUNNING):
                return "ERR"
            want = SHUT_DOWN
        elif want == OFFLINE and self.state not in (OFFLINE, RUNNING):
            return "ERR"
        self.state = want
        return "ACK"

    def fault(self, clearable: bool = True) -> None:
        """A fault stops printing: offline, error state 2, until CAF (and SST|3|)."""
        with self._buf_lock:
            self.state, self.error, self._clearable = OFFLINE, 2, clearable

    def _take(self) -> tuple[str, str] | None:
        with self._buf_lock:
            if self.state != RUNNING:
                self.faults["offline"] += 1
                return None
            self.batch_count += 1
            self.total_count += 1
            fresh = self.buffer.popleft() if self.buffer else None
            self.log.append(fresh)
            if fresh is not None:
                return fresh, ""
            if self.last:
                return self.last, "duplicate"
            return None  # an empty field: the job printed without a code

    def stray_line(self) -> str:
        return "ACK"
