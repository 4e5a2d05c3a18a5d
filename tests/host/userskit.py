"""Helpers for the users / signatures / release tests: a closed batch in a real ledger file, users
added through the API, and the `serialine` CLI run as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from serialine.host import db, masterdata, reconcile, serials, users
from serialine.host.db import transaction
from serialine.host.ledger import Ledger

from hostkit import GTIN, PREFIX_LEN, Line

PASSWORDS = {"root": "admin-secret-1", "ann": "smith-secret-1", "bob": "jones-secret-1", "olga": "floor-secret-1",
             "eve": "plant-secret-1"}
PEOPLE = {"root": ("admin", "Rita Root"), "ann": ("qa", "Ann Smith"), "bob": ("qa", "Bob Jones"),
          "olga": ("operator", "Olga Ops"), "eve": ("engineer", "Eve Engel")}
SITE = "urn:epc:id:sgln:9506000.13435.0"


def closed_batch(path, market="EU_FMD", tz=None, batch="B1", packs=4) -> str:
    """A ledger at `path` with one closed batch of `packs` passed packs (cases of 3, pallets of 2)."""
    c = db.connect(str(path))
    try:
        masterdata.add_product(c, GTIN, "Aspirin 100 mg", market, PREFIX_LEN, user="setup")
        if tz:
            masterdata.set_location(c, masterdata.Location(SITE, "Plant", tz=tz), user="setup")
        serials.generate(c, GTIN, max(50, packs + 10))
        masterdata.create_batch(c, batch, GTIN, "L1", "2030-01-31", 10, 3, 2, user="setup")
        masterdata.start_batch(c, batch, user="setup")
        ledger = Ledger(c, batch)
        with transaction(c):
            ledger.queue_codes(packs + 2)
        line = Line(ledger)
        for u in range(packs):
            line.unit(u)
        reconcile.close_batch(c, batch, "setup")
    finally:
        c.close()
    return str(path)


def add_people(conn, *names) -> None:
    """root (admin) first, then the others named (API; the CLI's own path is tested separately)."""
    if not users.present(conn):
        users.add(conn, "root", "admin", PASSWORDS["root"], by="setup", reason="first admin", full_name="Rita Root")
    for name in names:
        role, full = PEOPLE[name]
        users.add(conn, name, role, PASSWORDS[name], by="root", reason="joins the site", full_name=full)


def cli(*argv, db_path=None, stdin: str | None = None, password: str | None = None, check=False):
    """`serialine ARGV...` in a subprocess (stdin not a terminal); `password` via $SERIALINE_PASSWORD."""
    env = {k: v for k, v in os.environ.items() if k not in ("SERIALINE_PASSWORD", "SERIALINE_USER", "SERIALINE_DB")}
    if password is not None:
        env["SERIALINE_PASSWORD"] = password
    args = [sys.executable, "-m", "serialine.host.cli", *argv] + (["--db", str(db_path)] if db_path else [])
    r = subprocess.run(args, input=stdin if stdin is not None else "", capture_output=True, text=True, env=env,
                       timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{argv}: rc {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def on_tty(*argv, db_path, answers=(), timeout=60.0):
    """`serialine ARGV...` on a pseudo-terminal (its controlling tty: getpass prompts there): each
    answer is typed after the next prompt ending in ': '. → (exit status, everything shown)."""
    import pty
    import select
    import time
    env = {k: v for k, v in os.environ.items() if k not in ("SERIALINE_PASSWORD", "SERIALINE_USER", "SERIALINE_DB")}
    args = [sys.executable, "-m", "serialine.host.cli", *argv, "--db", str(db_path)]
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execve(sys.executable, args, env)
    shown, pending, deadline, answered = b"", list(answers), time.monotonic() + timeout, 0
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
                if pending and shown.endswith(b": ") and len(shown) > answered:  # a prompt, not its newline
                    time.sleep(0.05)  # getpass flushes typed-ahead input when it turns echo off
                    os.write(fd, pending.pop(0).encode() + b"\n")
                    answered = len(shown)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"{argv}: still running after {timeout} s; it showed {shown!r}")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace").replace("\r\n", "\n")
