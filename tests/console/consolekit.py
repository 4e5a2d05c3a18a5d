"""What the console's tests share (not in conftest.py: test modules import this by its own name):
users and passwords, `serialine console` as a process, logging in, reading a PDF back."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rigs import LoggedProc, service_lines

CHROMIUM = "/usr/bin/chromium"
SERIALINE = str(Path(sys.executable).parent / "serialine")
PASSWORD = {"admin": "Secret-pass-0001", "olga": "Secret-pass-0002", "quinn": "Secret-pass-0003",
            "rita": "Secret-pass-0004", "ernst": "Secret-pass-0005"}
PEOPLE = [("olga", "operator", "Olga Operator"), ("quinn", "qa", "Quinn Qualität"),
          ("rita", "qa", "Rita Release"), ("ernst", "engineer", "Ernst Engineer")]
MAX_FAILURES = 3


def add_users(db: Path) -> None:
    from serialine.host import db as dbmod
    from serialine.host import users
    conn = dbmod.connect(str(db))
    try:
        users.add(conn, "admin", "admin", PASSWORD["admin"], by="admin", reason="first admin",
                  full_name="Ada Admin")
        for name, role, full in PEOPLE:
            users.add(conn, name, role, PASSWORD[name], by="admin", reason="console test", full_name=full)
        users.set_setting(conn, "login.max_failures", MAX_FAILURES, by="admin", reason="console test")
    finally:
        conn.close()


class ConsoleProc(LoggedProc):
    """`serialine console` on a free port; `url` is where it says it serves."""

    what = "the console"

    def __init__(self, db: Path, control: str | None = None, extra: list[str] = ()):
        super().__init__([SERIALINE, "console", "--db", str(db), "--port", "0", *extra]
                         + (["--control", control] if control else []))
        self.url = self.wait_log(r"on (https?://\S+?)/? ")[1]


@contextlib.contextmanager
def agent_line(tmp_path: Path, edit=None):
    """(rig, line file, ledger, batch, agent): rigs.service_lines' line with the console's users and
    `serialine agent run` on it, ready. The agent is killed at the end (one stopped before is left)."""
    from test_service import Agent
    with service_lines(tmp_path) as make:
        rig, cfg, db, batch = make(edit)
        add_users(db)
        agent = Agent(cfg, batch)
        try:
            agent.wait_status(lambda s: s["ready"])
            yield rig, cfg, db, batch, agent
        finally:
            agent.kill()


def login(page, url: str, name: str, password: str | None = None):
    page.goto(url + "/login")
    page.fill("#user", name)
    page.fill("#password", PASSWORD[name] if password is None else password)
    page.click("#login")


def logout(page):
    page.click("header form.who button")
    page.wait_for_selector("#login")


def pdftotext(data: bytes, tmp: Path) -> str:
    exe = shutil.which("pdftotext")
    if exe is None:
        pytest.fail("pdftotext is missing: apt-get install poppler-utils (tools/dev.py does it as root)")
    (tmp / "record.pdf").write_bytes(data)
    subprocess.run([exe, "-layout", str(tmp / "record.pdf"), str(tmp / "record.txt")], check=True)
    return (tmp / "record.txt").read_text()
