"""`serialine outbox --resend` on a ledger with users (issue 14): a resend changes what a receiver
gets, so `--user` proves it (action config.change) before anything is sent; `epcis export` only
reads and needs no password."""

import json

from serialine.host import db
from serialine.host.epcis.capture_server import CaptureServer

from userskit import PASSWORDS, add_people, cli, closed_batch


def resend(path, url, who, password=None, reason="the EMVS lost its store"):
    return cli("outbox", "--resend", "--batch", "B1", "--to", url, "--user", who, "--reason", reason,
               db_path=path, password=password if password is not None else PASSWORDS[who])


def resends(conn):
    return conn.execute("SELECT user FROM audit WHERE action='outbox.resend'").fetchall()


def test_a_resend_is_proved_by_a_user_who_may_change_the_configuration(tmp_path):
    path = closed_batch(tmp_path / "l.db")
    conn = db.connect(path)
    add_people(conn, "olga", "eve")
    (events,) = conn.execute("SELECT count(*) FROM epcis_outbox WHERE batch_id='B1'").fetchone()
    with CaptureServer() as server:
        r = resend(path, server.url, "olga")
        assert r.returncode == 1 and r.stderr == (
            "serialine outbox: olga (operator) may not do config.change: it takes the role admin or engineer\n")
        r = resend(path, server.url, "eve", "guessed-password")
        assert r.returncode == 1 and r.stderr.startswith("serialine outbox: wrong password for eve"), r.stderr
        r = resend(path, server.url, "eve", reason="r")  # said before any password is asked
        assert r.returncode == 1 and "a reason is required" in r.stderr
        assert not server.events and resends(conn) == []
        r = resend(path, server.url, "eve")
        assert r.returncode == 0, r.stderr
        assert f"resent {events} of {events} events of batch B1" in r.stdout
        assert len(server.events) == events
    assert resends(conn) == [("eve",)]
    assert conn.execute("SELECT user, json_extract(detail, '$.action') FROM audit WHERE action='user.refused'"
                        ).fetchall() == [("olga", "config.change")]


def test_epcis_export_needs_no_password(tmp_path):
    path = closed_batch(tmp_path / "l.db")
    conn = db.connect(path)
    add_people(conn, "olga")
    r = cli("epcis", "export", "--batch", "B1", "--out", str(tmp_path / "out"), db_path=path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "B1.jsonld").read_text())["epcisBody"]["eventList"]
