"""Batch release (issue 14): the batch closes, QA signs its record "reviewed", a second person signs it
"released"; an operator cannot, the reviewer cannot also release; EU FMD waits until the outbox has
delivered the batch's events. All through `serialine batch review|release` subprocesses."""

import time

import pytest

from serialine.host import db, release
from serialine.host.epcis import outbox

from userskit import PASSWORDS, add_people, cli, closed_batch


def sign(path, verb, who, password=None, *extra):
    return cli("batch", verb, "B1", "--user", who, *extra, db_path=path,
               stdin=(password or PASSWORDS[who]) + "\n")


def deliver_all(conn, batch="B1", target="https://emvs.example/capture"):
    seqs = [s for (s,) in conn.execute("SELECT seq FROM epcis_outbox WHERE batch_id=? ORDER BY seq", (batch,))]
    outbox.mark_delivered(conn, target, batch, seqs, time.time())
    return len(seqs)


def test_qa_reviews_a_second_person_releases_and_nobody_does_both(tmp_path):
    path = closed_batch(tmp_path / "l.db", market="US_DSCSA")
    conn = db.connect(path)
    add_people(conn, "ann", "bob", "olga")
    r = sign(path, "release", "bob")
    assert r.returncode == 1 and r.stderr == "error: batch B1 is not reviewed yet: QA signs it first (serialine batch review B1)\n"
    r = sign(path, "review", "olga")
    assert r.returncode == 1 and r.stderr == "error: olga (operator) may not do batch.review: it takes the role qa\n"
    r = sign(path, "review", "ann", None, "--reason", "record complete")
    assert r.returncode == 0, r.stderr
    assert "batch B1: Reviewed by Ann Smith (ann) on " in r.stdout and " UTC; record sha256 " in r.stdout
    r = sign(path, "review", "bob")
    assert r.returncode == 1 and "already reviewed (Reviewed by Ann Smith (ann)" in r.stderr
    r = sign(path, "release", "ann")
    assert r.returncode == 1 and r.stderr == "error: ann reviewed batch B1: a second person must release it\n"
    r = sign(path, "release", "olga")
    assert r.returncode == 1 and "olga (operator) may not do batch.release" in r.stderr
    assert conn.execute("SELECT user, json_extract(detail, '$.action') FROM audit WHERE action='user.refused'"
                        " ORDER BY seq").fetchall() == [("olga", "batch.review"), ("olga", "batch.release")]
    assert release.status(conn, "B1")["stage"] == "reviewed: awaiting release"
    r = sign(path, "release", "bob")
    assert r.returncode == 0 and "Released by Bob Jones (bob)" in r.stdout, r.stderr
    st = release.status(conn, "B1")
    assert st["stage"] == "released" and st["reviewed"]["user"] == "ann" and st["released"]["user"] == "bob"
    rows = conn.execute("SELECT meaning, s.user, full_name, a.action FROM signature s JOIN audit a ON a.seq = s.audit_seq"
                        " ORDER BY signature_id").fetchall()
    assert rows == [("reviewed", "ann", "Ann Smith", "signature"), ("released", "bob", "Bob Jones", "signature")]
    assert cli("audit", "verify", db_path=path).returncode == 0


def test_an_open_batch_cannot_be_reviewed(tmp_path):
    path = closed_batch(tmp_path / "l.db", market="US_DSCSA")
    conn = db.connect(path)
    add_people(conn, "ann")
    cli("batch", "reopen", "B1", "--reason", "recount the cases", "--user", "ann", db_path=path,
        password=PASSWORDS["ann"], check=True)
    r = sign(path, "review", "ann")
    assert r.returncode == 1 and r.stderr == "error: batch B1 is reopened: only a closed batch can be reviewed\n"


def test_eu_fmd_release_waits_for_the_outbox(tmp_path):
    path = closed_batch(tmp_path / "l.db", market="EU_FMD")
    conn = db.connect(path)
    add_people(conn, "ann", "bob")
    assert sign(path, "review", "ann").returncode == 0
    (pending,) = conn.execute("SELECT count(*) FROM epcis_outbox WHERE batch_id='B1'").fetchone()
    assert pending > 0
    r = sign(path, "release", "bob")
    assert r.returncode == 1 and r.stderr == (
        f"error: batch B1 waits for the outbox: {pending} EPCIS event(s) not yet delivered upstream"
        " (EU_FMD wants the batch's data before release; serialine outbox)\n")
    assert conn.execute("SELECT count(*) FROM signature WHERE meaning='released'").fetchone() == (0,)
    assert deliver_all(conn) == pending
    assert release.pending_events(conn, "B1") == 0
    r = sign(path, "release", "bob")
    assert r.returncode == 0, r.stderr
    record = release.batch_record(conn, "B1")
    assert record["delivery"]["undelivered"] == 0 and record["release"]["stage"] == "released"
    assert [s["meaning"] for s in record["signatures"]] == ["reviewed", "released"]
    # delivery is shown, not signed: the signatures still hold after it moved on
    assert cli("audit", "verify", db_path=path).returncode == 0


def test_the_batch_record_holds_what_qa_signs(tmp_path):
    path = closed_batch(tmp_path / "l.db", market="EU_FMD", tz="Europe/Berlin", packs=4)
    conn = db.connect(path)
    r = cli("batch", "record", "B1", db_path=path, check=True)
    import json
    record = json.loads(r.stdout)
    assert record == json.loads(json.dumps(release.batch_record(conn, "B1")))
    assert record["product"]["name"] == "Aspirin 100 mg" and record["batch"]["lot"] == "L1"
    assert record["batch"]["expiry"] == "2030-01-31" and record["batch"]["tz"] == "Europe/Berlin"
    assert record["units"] == [{"outcome": "PASSED", "reason": "OK", "verdict_reason": "OK", "test": False, "count": 4}]
    assert record["serials"]["commissioned"] == 4 and record["batch"]["planned"] == 10 and record["batch"]["made"] == 4
    assert record["containers"]["cases"] == 2 and record["containers"]["pallets"] == 1
    assert [h["action"] for h in record["history"]] == ["batch.create", "batch.start", "batch.close"]
    assert record["reconciliation"]["problems"] == []
    assert record["release"]["stage"] == "closed: awaiting review" and record["release"]["upload_before_release"]
    add_people(conn, "ann")
    s = release.review(conn, "B1", "ann", PASSWORDS["ann"])
    assert s.tz == "Europe/Berlin" and s.local_at.endswith("+01:00") and s.at.endswith("+00:00")
    assert s.content_sha256 == record["content_sha256"]
    assert s.manifestation().endswith(" Europe/Berlin)") and "Reviewed by Ann Smith (ann) on " in s.manifestation()


def test_which_markets_wait_for_the_outbox_is_the_market_profile(tmp_path, monkeypatch):
    import dataclasses

    from serialine.host import masterdata
    assert masterdata.PROFILES["EU_FMD"].upload_before_release
    assert not masterdata.PROFILES["US_DSCSA"].upload_before_release
    path = closed_batch(tmp_path / "l.db", market="US_DSCSA")
    conn = db.connect(path)
    add_people(conn, "ann", "bob")
    assert not release.status(conn, "B1")["upload_before_release"]
    release.review(conn, "B1", "ann", PASSWORDS["ann"])
    # a market that wants the data first, given on its profile alone: release reads it there
    monkeypatch.setitem(masterdata.PROFILES, "US_DSCSA",
                        dataclasses.replace(masterdata.PROFILES["US_DSCSA"], upload_before_release=True))
    assert release.status(conn, "B1")["upload_before_release"]
    pending = release.pending_events(conn, "B1")
    with pytest.raises(release.ReleaseError, match=f"waits for the outbox: {pending} EPCIS event"):
        release.release(conn, "B1", "bob", PASSWORDS["bob"])
    deliver_all(conn)
    assert release.release(conn, "B1", "bob", PASSWORDS["bob"]).meaning == "released"
