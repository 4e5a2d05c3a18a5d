"""Rigs the tests of several folders share (tests/ is on sys.path through tests/conftest.py; import
it as `rigs`): a program run as its own process with its stderr as its log, and the service line of
tests/host/test_service.py (its Rig around the firmware, a ledger with a running batch, a line file)."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

HOST_TESTS = Path(__file__).resolve().parent / "host"
if str(HOST_TESTS) not in sys.path:  # test_service.py, imported by its own name (tests/host has no __init__.py)
    sys.path.insert(0, str(HOST_TESTS))


class LoggedProc:
    """`args` as a process (stdin closed), its stderr read line by line in a thread into `lines`;
    `wait_log` polls them with a deadline. `what` names it in a failure."""

    what = "the process"

    def __init__(self, args: list[str], env: dict | None = None, stdin=subprocess.DEVNULL):
        self.proc = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=None if env is None else {**os.environ, **env})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match:
        """The first match of `pattern` in the log from line `after` on, within `timeout` s; a process
        that exits without it fails at once (after its last lines are read)."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            exited = self.proc.poll() is not None
            if exited:
                self._reader.join(2)
            for line in self.lines[after:]:
                m = rx.search(line)
                if m:
                    return m
            if exited:
                raise AssertionError(f"{self.what} exited {self.proc.returncode} without {pattern!r}:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the log of {self.what} within {timeout} s:\n{self.log}")

    def exit_code(self, timeout: float) -> int:
        """Its exit status within `timeout` s (TimeoutExpired else); killed either way, its log read to the end."""
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()
            self._reader.join(5)

    def errors(self) -> list[str]:
        return [line for line in self.lines if " ERROR " in line]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def ledger_rows(db, sql: str, *args) -> list[tuple]:
    """A query on the ledger, read-only (beside a running agent: it waits up to 30 s for a lock)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


LINE_TEXT = """\
[identity]
line_id = "{line_id}"

[device]
port = "{port}"
board = "sim"

[line]
counts_per_mm = {cpm}
coder_at_mm = 100.0
camera_at_mm = 200.0
gate_at_mm = {gate_at}
max_speed_mm_s = 300.0

[coder]
driver = "serialine"
address = "{coder}"

[camera]
driver = "serialine"
address = "{camera}"

[ledger]
path = "{ledger}"
"""


def line_text(ledger, *, line_id: str = "line-1", port: str = "/dev/null", coder: str = "127.0.0.1:1",
              camera: str = "127.0.0.1:2", cpm: int = 4, gate_at: float = 400.0, extra: str = "") -> str:
    """A small line file the line file's reader accepts (sim board, stations at 100, 200 and `gate_at`
    mm, 300 mm/s), `extra` (more sections) after it."""
    return LINE_TEXT.format(line_id=line_id, port=port, cpm=cpm, gate_at=gate_at, coder=coder, camera=camera,
                            ledger=ledger) + extra


@contextlib.contextmanager
def service_lines(tmp_path: Path, rig_cls=None):
    """`make(edit=None, **line_file_kw)` -> (rig, line file, ledger, batch): test_service.py's Rig (or
    `rig_cls`, a subclass of it), a ledger with a running batch, and the rig's line file, its text
    changed by `edit`. Every rig made is closed at the end."""
    import test_service as ts

    made = []

    def make(edit=None, **kw):
        db = tmp_path / "serialine.db"
        batch = ts.make_batch(db)
        rig = (rig_cls or ts.Rig)(tmp_path, {})  # its geometry comes from the line file the service reads
        made.append(rig)
        cfg = ts.line_file(tmp_path / "line.toml", rig, db, **kw)
        if edit is not None:
            cfg.write_text(edit(cfg.read_text()))
        rig.f = ts.fields_of(cfg)
        return rig, cfg, db, batch

    try:
        yield make
    finally:
        for rig in made:
            rig.close()
