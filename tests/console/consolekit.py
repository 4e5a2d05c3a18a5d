"""What the console's tests share (not in conftest.py: test modules import this by its own name):
users and passwords, `serialine console` as a process, logging in, reading a PDF back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HOST_TESTS = Path(__file__).resolve().parent.parent / "host"
if str(HOST_TESTS) not in sys.path:  # the service rig of tests/host/test_service.py (the line around the device)
    sys.path.insert(0, str(HOST_TESTS))

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


class ConsoleProc:
    def __init__(self, db: Path, control: str | None = None, extra: list[str] = ()):
        args = [SERIALINE, "console", "--db", str(db), "--port", "0", *extra] + (["--control", control] if control else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        end = time.monotonic() + 30
        self.url = None
        while time.monotonic() < end and self.url is None:
            for line in list(self.lines):
                m = re.search(r"on (https?://\S+?)/? ", line)
                if m:
                    self.url = m[1]
            if self.proc.poll() is not None:
                raise AssertionError(f"console exited {self.proc.returncode}:\n" + "\n".join(self.lines))
            time.sleep(0.05)
        assert self.url, "\n".join(self.lines)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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
