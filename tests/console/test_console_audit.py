"""The audit trail page: filters by user, kind and time, and `audit verify`'s result, also when a
record of the trail itself was edited behind the ledger's back."""

from __future__ import annotations

import sqlite3

from consolekit import add_users, login
from test_service import make_batch


def test_filters_and_a_trail_edited_behind_the_ledgers_back(tmp_path, consoles, page):
    db = tmp_path / "serialine.db"
    make_batch(db)
    add_users(db)
    c = consoles(db)
    login(page, c.url, "olga", "wrong-password-1")
    login(page, c.url, "quinn")
    page.wait_for_selector("#me")

    page.goto(c.url + "/audit")
    assert page.inner_text("#verify").startswith("verified: audit log intact")
    page.fill("input[name=user]", "olga")
    page.fill("input[name=kind]", "user.")
    page.click("#filter")
    trail = page.inner_text("#trail")
    assert "user.login_failed" in trail and "quinn" not in trail, trail
    page.goto(c.url + "/audit?kind=batch.&user=qa-anna")
    rows = page.locator("#trail tr").count() - 1
    assert rows == 2 and "batch.create" in page.inner_text("#trail")  # batch.create, batch.start
    page.goto(c.url + "/audit?since=2999-01-01")
    assert page.locator("#trail tr").count() == 1  # the heading only
    page.goto(c.url + "/audit?until=2000-01-01T00:00")
    assert page.locator("#trail tr").count() == 1
    page.goto(c.url + "/audit?since=yesterday")
    assert "since 'yesterday': want an ISO date or time" in page.inner_text("#error")

    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET user = 'mallory' WHERE action = 'batch.create'")
    conn.commit()
    (seq,) = conn.execute("SELECT seq FROM audit WHERE action = 'batch.create'").fetchone()
    conn.close()
    page.goto(c.url + "/audit")
    verdict = page.inner_text("#verify")
    assert verdict.startswith("VERIFY FAILED") and f"record {seq}" in verdict, verdict
