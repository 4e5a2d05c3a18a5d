"""EPCIS 1.2 XML (SBDH, ILMD inside <extension>) valid against the 1.2 XSD; `serialine epcis
export` and `serialine outbox` on a real SQLite ledger file."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys

import pytest
from lxml import etree

from serialine.host import cli
from serialine.host.epcis import outbox, validate, xml12
from serialine.host.epcis.capture_server import CaptureServer

from .conftest import all_kinds

PARTNER = "urn:epc:id:sgln:0614141.00001.0"


def test_xml12_valid_for_every_kind_with_ilmd_in_extension(ctx):
    events = all_kinds(ctx)
    data = xml12.document(events, ctx.biz_location, PARTNER)
    validate.xml_document(data, "1.2")
    root = etree.fromstring(data)
    ilmd = root.findall(".//ObjectEvent/extension/ilmd")
    assert len(ilmd) == 1
    assert ilmd[0].findtext(f"{{{xml12.CBVMDA_NS}}}lotNumber") == "L0042"
    assert [e.text for e in root.iter("eventID")] == [e["eventID"] for e in events]
    sbdh = "{http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader}"
    assert root.find(f".//{sbdh}Receiver/{sbdh}Identifier").text == PARTNER


def test_xml12_reference_hash_agrees(tmp_path, ctx):
    """The reference reads the 1.2 XML too: the same hash for every event, ILMD included (its
    namespace is the IRI the JSON-LD declares for cbvmda; the three renderings: test_story.py)."""
    events = all_kinds(ctx)
    path = tmp_path / "doc.xml"
    path.write_bytes(xml12.document(events, ctx.biz_location, PARTNER))
    out = subprocess.run([sys.executable, "-m", "epcis_event_hash_generator", str(path)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    hashes = re.findall(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0", out)
    assert hashes == [e["eventID"] for e in events]


def test_xsd_catches_a_broken_document(ctx):
    data = xml12.document(all_kinds(ctx)[:1], ctx.biz_location, PARTNER)
    with pytest.raises(validate.InvalidDocument, match="action"):
        validate.xml_document(data.replace(b"<action>ADD</action>", b"<action>PUT</action>"), "1.2")
    with pytest.raises(validate.InvalidDocument, match="well-formed"):
        validate.xml_document(b"<epcis:EPCISDocument", "1.2")


@pytest.fixture
def ledger(tmp_path, ctx):
    path = tmp_path / "ledger.db"
    conn = sqlite3.connect(path)
    outbox.ensure_schema(conn)
    with conn:
        for event in all_kinds(ctx, batch="B7"):
            outbox.enqueue(conn, "B7", event)
        for event in all_kinds(ctx, batch="B8")[:1]:
            outbox.enqueue(conn, "B8", event)
    conn.close()
    return path


def test_export_jsonld_and_xml12(ledger, tmp_path, ctx):
    out = tmp_path / "out"
    assert cli.main(["epcis", "export", "--batch", "B7", "--format", "jsonld", "--out", str(out),
                     "--db", str(ledger)]) == 0
    doc = json.loads((out / "B7.jsonld").read_text())
    validate.json_document(doc)
    assert [e["eventID"] for e in doc["epcisBody"]["eventList"]] == \
        [e["eventID"] for e in all_kinds(ctx, batch="B7")]
    # the DSCSA export needs the ledger's master data (tests/epcis/test_ship.py exports one)
    assert cli.main(["epcis", "export", "--batch", "B7", "--format", "xml12", "--out", str(out),
                     "--db", str(ledger), "--receiver", PARTNER]) == 1
    assert not (out / "B7.xml").exists()


def test_xml12_refuses_a_receiver_or_sender_that_is_no_sgln(ctx):
    events = all_kinds(ctx)
    for sender, receiver in ((ctx.biz_location, "not an SGLN"), ("urn:epc:id:sgln:1.2.0", PARTNER),
                             (ctx.biz_location, None)):
        with pytest.raises(ValueError, match="SGLN"):
            xml12.document(events, sender, receiver)


def test_export_file_names_are_one_to_one_and_never_silently_replaced(tmp_path, ctx, capsys):
    path = tmp_path / "ledger.db"
    conn = sqlite3.connect(path)
    outbox.ensure_schema(conn)
    batches = ["A/B", "A_B", "A:B", "A%2FB", ".hidden", "Ä"]
    with conn:
        for i, batch in enumerate(batches):
            outbox.enqueue(conn, batch, all_kinds(ctx, batch=f"X{i}")[0])
    conn.close()
    out = tmp_path / "out"
    for batch in batches:
        assert cli.main(["epcis", "export", "--batch", batch, "--out", str(out), "--db", str(path)]) == 0
    files = sorted(f.name for f in out.iterdir())
    assert len(files) == len(batches) and not [f for f in files if f.startswith(".") or "/" in f]
    assert {json.loads((out / f).read_text())["epcisBody"]["eventList"][0]["eventID"] for f in files} == \
        {all_kinds(ctx, batch=f"X{i}")[0]["eventID"] for i in range(len(batches))}
    capsys.readouterr()
    before = (out / "A_B.jsonld").read_bytes()
    assert cli.main(["epcis", "export", "--batch", "A_B", "--out", str(out), "--db", str(path)]) == 1
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert (out / "A_B.jsonld").read_bytes() == before and len(list(out.iterdir())) == len(batches)
    assert cli.main(["epcis", "export", "--batch", "A_B", "--out", str(out), "--db", str(path),
                     "--overwrite"]) == 0


def test_export_of_unknown_batch_fails_and_writes_nothing(ledger, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["epcis", "export", "--batch", "nope", "--format", "jsonld", "--out", str(out),
                     "--db", str(ledger)]) == 1
    assert "no EPCIS events" in capsys.readouterr().err
    assert not out.exists()


def test_outbox_command_shows_pending_rows_and_server_errors(ledger, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # rich folds long errors on narrow terminals
    with CaptureServer() as server:
        server.fail_http = 100
        assert cli.main(["outbox", "--db", str(ledger), "--forward", server.url, "--doc-size", "3"]) == 0
    text = capsys.readouterr().out
    assert "8 pending, 0 delivered" in text
    assert "capture store unavailable" in text and "HTTP 500" in text
    with CaptureServer() as server:
        assert cli.main(["outbox", "--db", str(ledger), "--retry-now", "--forward", server.url]) == 0
        assert len(server.events) == 8
    assert "0 pending, 8 delivered" in capsys.readouterr().out


def test_export_into_a_file_is_one_line_and_writes_nothing(ledger, tmp_path, capsys):
    out = tmp_path / "a-file"
    out.write_text("keep")
    assert cli.main(["epcis", "export", "--batch", "B7", "--out", str(out), "--db", str(ledger)]) == 1
    assert f"--out {out} is a file, not a directory" in capsys.readouterr().err
    assert out.read_text() == "keep"
