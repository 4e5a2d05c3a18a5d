"""Logging in to the console in a real browser: refusals, lockout, the session cookie, CSRF."""

from __future__ import annotations

import sqlite3
import urllib.error
import urllib.request

from consolekit import MAX_FAILURES, PASSWORD, add_users, login, logout
from test_service import make_batch


def _ledger(tmp_path):
    db = tmp_path / "serialine.db"
    make_batch(db)
    add_users(db)
    return db


def test_wrong_password_refused_then_locked_out_and_the_right_one_refused_too(tmp_path, consoles, page):
    db = _ledger(tmp_path)
    c = consoles(db)
    login(page, c.url, "olga", "not-her-password")
    assert "wrong password for olga (1 of 3 before a lockout)" in page.inner_text("#error")
    for _ in range(MAX_FAILURES - 1):
        login(page, c.url, "olga", "still-not-it")
    assert "locked out until" in page.inner_text("#error")
    login(page, c.url, "olga")  # the right password, but locked
    assert "olga is locked out until" in page.inner_text("#error")
    assert page.url.endswith("/login")
    login(page, c.url, "nobody", "whatever-pass")
    assert "unknown user 'nobody'" in page.inner_text("#error")
    conn = sqlite3.connect(db)
    actions = [a for (a,) in conn.execute("SELECT action FROM audit WHERE action LIKE 'user.lo%' ORDER BY seq")]
    conn.close()
    assert actions.count("user.login_failed") == MAX_FAILURES + 2 and "user.locked" in actions, actions
    assert "user.login" not in actions


def test_login_session_cookie_logout_and_every_page_behind_it(tmp_path, consoles, page):
    db = _ledger(tmp_path)
    c = consoles(db)
    for path in ("/operator", "/batches", "/batch/B1", "/audit", "/trends", "/batch/B1.pdf"):
        page.goto(c.url + path)
        assert page.url.startswith(c.url + "/login"), path
    login(page, c.url, "quinn")
    page.wait_for_selector("#me")
    assert "Quinn Qualität (quinn, qa)" in page.inner_text("#me")
    cookie = next(x for x in page.context.cookies() if x["name"] == "serialine_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # the page's own assets come from this server only
    assert page.evaluate("typeof htmx") == "object"
    assert page.evaluate("[...document.scripts].map(s => s.src)") == [c.url + "/static/htmx.min.js"]
    logout(page)
    assert "logged out" in page.inner_text("#message")
    page.goto(c.url + "/audit")
    assert page.url.startswith(c.url + "/login")
    conn = sqlite3.connect(db)
    ends = conn.execute("SELECT user, json_extract(detail, '$.why') FROM audit WHERE action='user.logout'").fetchall()
    conn.close()
    assert ends == [("quinn", "logout")], ends
    # the old token is gone on the server: a copy of the cookie is worthless
    req = urllib.request.Request(c.url + "/audit", headers={"Cookie": f"serialine_console={cookie['value']}"})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(req)
        raise AssertionError("an ended session still served the audit trail")
    except urllib.error.HTTPError as exc:
        assert exc.code == 303 and exc.headers["Location"].startswith("/login")


def test_a_post_without_the_sessions_csrf_token_is_refused(tmp_path, consoles, page):
    db = _ledger(tmp_path)
    c = consoles(db)
    login(page, c.url, "quinn")
    page.wait_for_selector("#me")
    resp = page.context.request.post(c.url + "/batch/B1/sign", form={"meaning": "reviewed", "password": "x"},
                                     max_redirects=0)
    assert resp.status == 409 and "security token does not match" in resp.text()
    resp = page.context.request.post(c.url + "/operator/command", form={"command": "stop", "reason": "test stop",
                                                                       "csrf": "forged"})
    assert "security token does not match" in resp.text() and 'class="bad"' in resp.text()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None


def test_a_ledger_without_users_says_how_to_add_the_first(tmp_path, consoles, page):
    db = tmp_path / "serialine.db"
    make_batch(db)
    c = consoles(db)
    page.goto(c.url + "/operator")
    assert "This ledger has no users yet" in page.inner_text("main")
    login(page, c.url, "olga")
    assert "unknown user 'olga'" in page.inner_text("#error")


def test_an_operator_screen_whose_session_ended_goes_to_the_login_page(tmp_path, consoles, page):
    db = _ledger(tmp_path)
    c = consoles(db)
    login(page, c.url, "olga")
    page.wait_for_selector("#line-state")  # the operator screen, polling every 0.5 s
    other = page.context.new_page()  # the same browser, another tab: logs out
    other.goto(c.url + "/batches")
    logout(other)
    page.wait_for_url(c.url + "/login?next=/operator", timeout=10000)  # the poll was told to go there
    assert page.locator("#login").is_visible()
    page.fill("#user", "olga")
    page.fill("#password", PASSWORD["olga"])
    page.click("#login")
    page.wait_for_selector("#line-state")  # and back where it was
