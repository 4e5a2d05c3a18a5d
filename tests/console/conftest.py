"""The console as a person uses it: `serialine console` as a process, Debian's chromium driven by
Playwright (its own browser download is not reachable here), a real ledger made with the real CLI
and real users (host/users.py). Shared helpers: consolekit.py."""

from __future__ import annotations

import os

import pytest

from consolekit import CHROMIUM, ConsoleProc


# one browser per module, not per session: Playwright's sync API keeps an asyncio loop running in
# this thread while it lives, and later tests' asyncio.run() (tests/opcua) would find it
@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (tools/dev.py does it as root)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    p = ctx.new_page()
    p.set_default_timeout(15000)
    yield p
    ctx.close()


@pytest.fixture
def consoles():
    made = []

    def start(db, control=None, extra=()):
        c = ConsoleProc(db, control, list(extra))
        made.append(c)
        return c

    yield start
    for c in made:
        c.close()


