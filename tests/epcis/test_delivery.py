"""Delivery per receiver, through `serialine outbox` on a real ledger, the loopback capture server
and the directory sink: a receiver added later gets each batch's whole story in order, a new
event reaches every receiver once, and `--resend` gives one receiver one batch's history again."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest

from serialine.host import cli, db
from serialine.host.epcis import events as ev, outbox
from serialine.host.epcis.capture_server import CaptureServer

from .conftest import GTIN, all_kinds


def story_in(directory) -> list[str]:
    """eventIDs of every document the directory sink wrote, in the order it wrote them."""
    files = sorted(directory.iterdir(), key=lambda f: int(f.stem.rsplit("-", 1)[1]))
    return [e["eventID"] for f in files for e in json.loads(f.read_text())["epcisBody"]["eventList"]]


def later_event(ctx, serial: str) -> dict:
    when = datetime(2026, 11, 24, 18, tzinfo=timezone.utc)
    return ev.commissioning(ctx, [ev.sgtin_urn(GTIN, serial, 7)], "L0042", date(2028, 1, 31), when)


@pytest.fixture
def ledger(tmp_path, ctx):
    path = str(tmp_path / "ledger.db")
    conn = db.connect(path)
    with db.transaction(conn):
        for event in all_kinds(ctx, batch="B1"):
            outbox.enqueue(conn, "B1", event)
    yield path, conn
    conn.close()


def outbox_cli(path, *argv):
    return cli.main(["outbox", "--db", path, *argv])


def test_each_receiver_gets_the_whole_story_and_resend_gives_it_again(ledger, ctx, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    path, conn = ledger
    b1 = [e["eventID"] for e in outbox.batch_events(conn, "B1")]
    sink_dir = tmp_path / "sink"
    with CaptureServer() as first:
        assert outbox_cli(path, "--forward", first.url) == 0
        assert list(first.events) == b1
        port = first.port
    # a receiver added later: every event of the batch, commissioning first, not only new ones
    assert outbox_cli(path, "--forward", f"directory:{sink_dir}") == 0
    assert story_in(sink_dir) == b1

    with db.transaction(conn):
        outbox.enqueue(conn, "B1", later_event(ctx, "NEW1"))
        outbox.enqueue(conn, "B2", later_event(ctx, "NEW2"))
    new_b1, new_b2 = (e["eventID"] for e in (outbox.batch_events(conn, "B1")[-1], outbox.batch_events(conn, "B2")[0]))
    capsys.readouterr()
    assert outbox_cli(path) == 0
    shown = capsys.readouterr().out
    http_target, dir_target = f"http://127.0.0.1:{port}", f"directory:{sink_dir.resolve()}"
    rows = [line for line in shown.splitlines() if http_target in line or dir_target in line]
    assert len(rows) == 4 and all(" 1 " in line for line in rows), shown  # B1 and B2, one each, per target

    with CaptureServer(port=port) as same:      # the first receiver again: only what is new to it
        assert outbox_cli(path, "--forward", same.url) == 0
        assert set(same.events) == {new_b1, new_b2} and same.duplicates == 0
    assert outbox.counts(conn, dir_target) == {"pending": 2, "delivered": 7}
    assert outbox.counts(conn, http_target) == {"pending": 0, "delivered": 9}

    with CaptureServer(port=port) as wiped:     # it lost its store: resend B1's whole history
        capsys.readouterr()
        assert outbox_cli(path, "--resend", "--batch", "B1", "--to", wiped.url, "--user", "qa",
                          "--reason", "receiver restored from an empty store") == 0
        assert list(wiped.events) == b1 + [new_b1]   # in order, and only that batch
    assert "resent 8 of 8 events of batch B1" in capsys.readouterr().out
    user, action, detail = conn.execute("SELECT user, action, detail FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    assert (user, action) == ("qa", "outbox.resend")
    assert json.loads(detail)["target"] == http_target and json.loads(detail)["events"] == 8
    assert outbox.counts(conn, dir_target) == {"pending": 2, "delivered": 7}  # the other receiver untouched
    assert outbox_cli(path, "--forward", f"directory:{sink_dir}") == 0
    assert story_in(sink_dir) == b1 + [new_b1, new_b2]


def test_resend_refuses_what_it_cannot_do_and_changes_nothing(ledger, capsys):
    path, conn = ledger
    before = db.snapshot(conn)
    with CaptureServer() as server:
        assert outbox_cli(path, "--resend", "--batch", "nope", "--to", server.url, "--reason", "it lost its store") == 1
        assert "has no EPCIS events" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            outbox_cli(path, "--resend", "--to", server.url)
        with pytest.raises(SystemExit):
            outbox_cli(path, "--batch", "B1")
        with pytest.raises(SystemExit):  # a resend is audited with its reason: none is made up
            outbox_cli(path, "--resend", "--batch", "B1", "--to", server.url)
        assert not server.events
    assert db.snapshot(conn) == before


def test_forwarded_and_exported_documents_carry_the_audit_head(ledger, tmp_path):
    """Each document that leaves the site carries the chain head, and the forwarder leaves the
    head in `<db>.anchors`: a truncated or re-hashed trail no longer matches what receivers hold."""
    from serialine.host import audit
    from serialine.host.epcis import document

    path, conn = ledger
    with db.transaction(conn):
        audit.append(conn, "ann", "test.mark", {"why": "a head to anchor"})
    head = audit.head(conn)
    sink_dir = tmp_path / "sink"
    assert outbox_cli(path, "--forward", f"directory:{sink_dir}") == 0
    docs = [json.loads(f.read_text()) for f in sink_dir.iterdir()]
    assert docs and all(d[document.AUDIT_HEAD] == head for d in docs)
    assert head in (tmp_path / "ledger.db.anchors").read_text()
    out = tmp_path / "export"
    assert cli.main(["epcis", "export", "--batch", "B1", "--db", path, "--out", str(out)]) == 0
    (exported,) = out.iterdir()
    assert json.loads(exported.read_text())[document.AUDIT_HEAD] == head
