"""The whole story in a browser: an operator starts a simulated line from the console and sees the
counts rise; the batch closes; an operator cannot sign it; QA reviews, a second QA releases (after
the outbox delivered, as EU FMD wants); the PDF record holds both signatures; a record changed
behind the ledger's back makes the audit page show the verify failure.

The line is tests/host/test_service.py's rig (the firmware in the MicroPython unix port on a pty,
the simulated coder and camera) under `serialine agent run`, on a line file that does not start
the line by itself: the operator's Start in the console does."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

from consolekit import PASSWORD, SERIALINE, agent_line, login, logout, pdftotext
from test_service import wait_for

# the README's screenshots: SERIALINE_CONSOLE_SCREENSHOTS=1 writes them to docs/img/, else to the test's tmp folder
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def _count(page, sel: str) -> int:
    return int(page.inner_text(sel).strip() or 0)


def _until(cond, timeout: float, what: str):
    """Poll from Python: the page's CSP forbids the eval Playwright's wait_for_function would need."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def _command(page, which: str, reason: str) -> None:
    page.fill("#command-password", PASSWORD["olga"])  # for an agent that checks users (control.ledger_authorizer)
    page.fill("#reason", reason)
    page.click(f"#{which}")


def _cli(*argv, user: str, db: Path) -> str:
    env = dict(os.environ, SERIALINE_PASSWORD=PASSWORD[user])
    p = subprocess.run([SERIALINE, *argv, "--db", str(db), "--user", user], env=env, capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert p.returncode == 0, (argv, p.stdout, p.stderr)
    return p.stdout


def test_operator_runs_the_line_qa_reviews_and_releases_and_a_changed_record_fails_verify(tmp_path, consoles, page):
    IMG = DOCS_IMG if os.environ.get("SERIALINE_CONSOLE_SCREENSHOTS") else tmp_path / "img"
    with agent_line(tmp_path, lambda text: text.replace("start_on_boot = true", "start_on_boot = false")) as (
            rig, cfg, db, batch, agent):
        control = agent.wait_log(r"control interface on http://(\S+)")[1]
        c = consoles(db, control, ["--config", str(cfg)])  # the line file: the gate window for the gate chart

        # the operator starts the line and watches it live
        login(page, c.url, "olga")
        page.wait_for_selector("#line-state")
        assert page.inner_text("#batch") == batch
        assert _count(page, "#count-detected") == 0
        _command(page, "start", "x")
        page.wait_for_selector("#command-result.bad")
        assert "a reason is required" in page.inner_text("#command-result")
        _command(page, "start", "shift start")
        page.wait_for_selector("#command-result.good")
        assert "start sent by olga" in page.inner_text("#command-result")
        _until(lambda: _count(page, "#count-good") >= 3, 60, "3 good packs on the operator screen")
        first = _count(page, "#count-detected")
        _until(lambda: _count(page, "#count-detected") > first, 30, "the counts rise without a reload")
        assert page.inner_text("#line-state") == "RUNNING"

        # the camera drops its connection: the alarm says what it means and what to do, and the
        # agent's interlock refuses a start until the operator clears
        rig.camera.drop()
        _until(lambda: "CAMERA_LOST" in page.inner_text("#alarms"), 20, "the camera alarm on the operator screen")
        alarms = page.inner_text("#alarms")
        assert "the connection to the camera is gone" in alarms and "check the camera is on" in alarms, alarms
        _until(lambda: "CAMERA_BACK" in page.inner_text("#alarms"), 20, "the camera back")
        _command(page, "start", "restart after camera")
        _until(lambda: "refused" in page.inner_text("#result"), 15, "start refused under the latched stop")
        assert "line.start refused" in page.inner_text("#result"), page.inner_text("#result")
        assert page.input_value("#command-password") == ""  # used once, then emptied
        _command(page, "clear", "restart after camera")
        _until(lambda: "clear sent by olga" in page.inner_text("#result"), 15, "the clear accepted")
        n = _count(page, "#count-detected")
        _until(lambda: _count(page, "#count-detected") > n, 30, "the line runs again after the clear")
        IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMG / "console-operator.png"), full_page=True)

        _command(page, "stop", "end of the test run")
        _until(lambda: "stop sent by olga" in page.inner_text("#result"), 15, "the stop confirmed")
        wait_for(lambda: rig.state != 2, 20, "the device stops", rig)
        assert agent.stop() == 0, agent.log

    conn = sqlite3.connect(db)
    starts = conn.execute("SELECT user, json_extract(detail, '$.reason') FROM audit WHERE action='line.start'").fetchall()
    conn.close()
    assert starts == [("olga", "shift start")], starts

    _cli("batch", "close", batch, user="ernst", db=db)

    # an operator may not sign
    page.goto(f"{c.url}/batch/{batch}")
    page.select_option("#meaning", "released")
    page.fill("#sign-password", PASSWORD["olga"])
    page.click("#sign-button")
    assert "olga (operator) may not do batch.release: it takes the role qa" in page.inner_text("#sign-result")
    conn = sqlite3.connect(db)
    refused = conn.execute("SELECT user, json_extract(detail, '$.action') FROM audit WHERE action='user.refused'").fetchall()
    signed = conn.execute("SELECT count(*) FROM signature").fetchone()[0]
    conn.close()
    assert refused == [("olga", "batch.release")] and signed == 0, refused
    logout(page)

    # QA reviews: a wrong password is no signature
    login(page, c.url, "quinn", )
    page.goto(f"{c.url}/batch/{batch}")
    page.fill("#sign-password", "not-quinns")
    page.click("#sign-button")
    assert "wrong password for quinn" in page.inner_text("#sign-result")
    page.select_option("#meaning", "reviewed")
    page.fill("#sign-password", PASSWORD["quinn"])
    page.click("#sign-button")
    assert "signed as reviewed by Quinn Qualität" in page.inner_text("#sign-result")
    # the same person may not release it too
    page.select_option("#meaning", "released")
    page.fill("#sign-password", PASSWORD["quinn"])
    page.click("#sign-button")
    assert "quinn reviewed batch B1: a second person must release it" in page.inner_text("#sign-result")
    logout(page)

    # a second QA releases once the outbox delivered the batch's events (EU FMD)
    login(page, c.url, "rita")
    page.goto(f"{c.url}/batch/{batch}")
    page.select_option("#meaning", "released")
    page.fill("#sign-password", PASSWORD["rita"])
    page.click("#sign-button")
    assert "waits for the outbox" in page.inner_text("#sign-result")
    subprocess.run([SERIALINE, "outbox", "--db", str(db), "--forward", f"directory:{tmp_path / 'epcis'}"],
                   check=True, capture_output=True, timeout=120)
    page.goto(f"{c.url}/batch/{batch}")
    page.select_option("#meaning", "released")
    page.fill("#sign-password", PASSWORD["rita"])
    page.click("#sign-button")
    assert "signed as released by Rita Release" in page.inner_text("#sign-result")
    sigs = page.inner_text("#signatures")
    assert re.search(r"Reviewed by Quinn Qualität \(quinn\) on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", sigs), sigs
    assert re.search(r"Released by Rita Release \(rita\) on ", sigs), sigs
    assert page.inner_text("#stage") == "released"
    page.screenshot(path=str(IMG / "console-batch-record.png"), full_page=False)

    # the printable record holds the signatures
    resp = page.context.request.get(f"{c.url}/batch/{batch}.pdf")
    assert resp.status == 200 and resp.headers["content-type"] == "application/pdf"
    text = " ".join(pdftotext(resp.body(), tmp_path).split())
    assert "Batch record B1" in text
    assert re.search(r"Reviewed by Quinn Qualität \(quinn\) on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text), text
    assert re.search(r"Released by Rita Release \(rita\) on \d{4}-", text), text

    # the audit trail, filtered, and verify's word
    page.goto(f"{c.url}/audit?user=olga&kind=line.")
    assert "verified" in page.inner_text("#verify")
    trail = page.inner_text("#trail")
    assert "line.start" in trail and "line.stop" in trail and "signature" not in trail
    page.goto(f"{c.url}/audit?batch={batch}&kind=signature")
    assert page.inner_text("#trail").count("signature") == 2

    # a record changed behind the ledger's back
    conn = sqlite3.connect(db)
    conn.execute("UPDATE batch SET planned = planned + 1 WHERE batch_id = ?", (batch,))
    conn.commit()
    conn.close()
    page.goto(f"{c.url}/audit")
    verdict = page.inner_text("#verify")
    assert verdict.startswith("VERIFY FAILED"), verdict

    # the trends draw from the same ledger
    page.goto(f"{c.url}/trends?batch={batch}")
    for chart in ("rejects", "grades", "gate", "latency"):
        ok = page.evaluate(f"document.querySelector('#chart-{chart}').naturalWidth > 0")
        assert ok, chart
    page.screenshot(path=str(IMG / "console-trends.png"), full_page=True)
