"""`serialine epcis export --max-events/--max-bytes`: a batch split over several documents, each
schema-valid (JSON Schema, 1.2 XSD) and re-hashable, whose events in order are the unsplit
export's; published all or nothing; and `serialine bench batch` at a tiny size."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest

from serialine.host import cli, reconcile
from serialine.host.epcis import eventhash, outbox, validate
from serialine.tools import bench_batch

from .story import xml_events

UNITS = 300


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("split") / "ledger.db")
    conn, *_ = bench_batch.make_ledger(path, UNITS, per_poll=8, case_size=5, pallet_size=4)
    reconcile.close_batch(conn, bench_batch.BATCH, "ann")
    conn.close()
    return path


def export(path, out, fmt, *extra):
    return cli.main(["epcis", "export", "--batch", "B", "--format", fmt, "--out", str(out), "--db", path,
                     *extra] + (["--receiver", bench_batch.PARTNER] if fmt == "xml12" else []))


def documents(out: Path, ext: str) -> list[Path]:
    return sorted(out.glob(f"*{ext}"))


def jsonld_events(files):
    found = []
    for f in files:
        doc = json.loads(f.read_bytes())
        validate.json_document(doc)
        found += doc["epcisBody"]["eventList"]
    return found


def xml_file_events(files):
    found = []
    for f in files:
        validate.xml_document(f.read_bytes(), "1.2")
        found += xml_events(f.read_bytes())
    return found


def test_split_jsonld_is_valid_and_has_the_unsplit_events(ledger, tmp_path, capsys):
    assert export(ledger, tmp_path / "one", "jsonld") == 0
    (whole,) = documents(tmp_path / "one", ".jsonld")
    assert whole.name == "B.jsonld"
    events = jsonld_events([whole])
    assert len(events) > 100  # commissioning per poll, packing per case and pallet: 3 documents below
    assert export(ledger, tmp_path / "split", "jsonld", "--max-events", "50") == 0
    files = documents(tmp_path / "split", ".jsonld")
    assert [f.name for f in files] == [f"B~{i:04d}.jsonld" for i in range(1, -(-len(events) // 50) + 1)]
    assert all(len(json.loads(f.read_bytes())["epcisBody"]["eventList"]) <= 50 for f in files)
    assert jsonld_events(files) == events
    assert all(eventhash.event_hash(e) == e["eventID"] for e in events)
    out = capsys.readouterr().out
    assert out.count(" events\n") == 1 + len(files)
    assert not list((tmp_path / "split").glob(".*"))  # no temporary file left


def test_split_xml12_is_valid_and_has_the_unsplit_events(ledger, tmp_path):
    assert export(ledger, tmp_path / "one", "xml12") == 0
    (whole,) = documents(tmp_path / "one", ".xml")
    events = xml_file_events([whole])
    assert export(ledger, tmp_path / "split", "xml12", "--max-events", "50") == 0
    files = documents(tmp_path / "split", ".xml")
    assert len(files) == -(-len(events) // 50)
    assert xml_file_events(files) == events
    assert all(eventhash.event_hash(e) == e["eventID"] for e in events)
    conn = sqlite3.connect(ledger)
    ids = [json.loads(outbox.body_text(b))["eventID"] for (b,) in conn.execute("SELECT body FROM epcis_outbox ORDER BY seq")]
    assert [e["eventID"] for e in events] == ids
    # every part a document of its own: its own SBDH instance identifier, the same master data
    idents = {re.search(rb"<sbdh:InstanceIdentifier>([^<]+)<", f.read_bytes()).group(1) for f in files}
    assert len(idents) == len(files)
    assert all(b"Wholesaler DC" in f.read_bytes() for f in files)


@pytest.mark.parametrize("fmt,ext", [("jsonld", ".jsonld"), ("xml12", ".xml")])
def test_max_bytes_bounds_every_document(ledger, tmp_path, fmt, ext):
    assert export(ledger, tmp_path / "one", fmt) == 0
    whole = documents(tmp_path / "one", ext)[0].stat().st_size
    limit = whole // 3
    assert export(ledger, tmp_path / "split", fmt, "--max-bytes", f"{limit}B", "--max-events", "100000") == 0
    files = documents(tmp_path / "split", ext)
    assert len(files) >= 3 and all(f.stat().st_size <= limit for f in files)
    read = jsonld_events if fmt == "jsonld" else xml_file_events
    assert read(files) == read(documents(tmp_path / "one", ext))


def test_too_small_a_limit_and_bad_sizes_are_refused_in_one_line(ledger, tmp_path, capsys):
    assert export(ledger, tmp_path / "o", "jsonld", "--max-bytes", "300") == 1
    err = capsys.readouterr().err
    assert "does not fit --max-bytes 300" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    for bad in (["--max-events", "0"], ["--max-bytes", "lots"]):
        with pytest.raises(SystemExit) as exc:
            export(ledger, tmp_path / "o", "jsonld", *bad)
        assert exc.value.code == 2


def test_a_split_export_is_replaced_whole_or_refused(ledger, tmp_path, capsys):
    out = tmp_path / "out"
    assert export(ledger, out, "jsonld", "--max-events", "40") == 0
    first = {f.name: f.read_bytes() for f in documents(out, ".jsonld")}
    assert export(ledger, out, "jsonld") == 1  # the single file would sit beside the parts
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in documents(out, ".jsonld")} == first
    assert export(ledger, out, "jsonld", "--max-events", "100", "--overwrite") == 0
    files = documents(out, ".jsonld")
    assert len(files) < len(first)  # the earlier export's extra parts are gone
    assert jsonld_events(files) == [e for n in sorted(first) for e in json.loads(first[n])["epcisBody"]["eventList"]]


def test_an_invalid_event_writes_nothing(tmp_path, capsys):
    path = str(tmp_path / "ledger.db")
    conn, *_ = bench_batch.make_ledger(path, 20, per_poll=10, case_size=5, pallet_size=4)
    reconcile.close_batch(conn, bench_batch.BATCH, "ann")
    (body,) = conn.execute("SELECT body FROM epcis_outbox ORDER BY seq LIMIT 1").fetchone()
    bad = json.loads(outbox.body_text(body))
    bad["action"] = "PUT"
    bad["eventID"] = "ni:///sha-256;" + "0" * 64 + "?ver=CBV2.0"
    with conn:
        conn.execute("INSERT INTO epcis_outbox (batch_id, event_id, event_ms, event_type, body, enqueued_at)"
                     " VALUES ('B', ?, 0, ?, ?, 0)", (bad["eventID"], bad["type"], json.dumps(bad)))
    conn.close()
    out = tmp_path / "out"
    for fmt in ("jsonld", "xml12"):
        assert export(path, out, fmt, "--max-events", "3") == 1
        err = capsys.readouterr().err
        assert "refusing to write an invalid document" in err and "PUT" in err
        assert not out.exists() or not list(out.iterdir())


def test_bench_batch_tiny_prints_its_figures(tmp_path, capsys):
    assert bench_batch.main(["--units", "200", "--serials", "2000", "--dir", str(tmp_path)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    keys = {"events_per_s", "events_per_s_sqlite_baseline", "ratio", "bytes_per_unit", "close_s",
            "reconcile_s", "export_jsonld_s", "export_xml_s", "export_peak_rss_mb", "serials_per_s"}
    assert keys <= set(figures)
    assert figures["events"] == 800 and figures["ratio"] > 0 and figures["documents"] == 1
    assert all(isinstance(figures[k], (int, float)) and figures[k] >= 0 for k in keys)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_per_event_check_is_as_strict_as_the_whole_document(ledger):
    """The event checker (which remembers strings that passed a `$ref`/`anyOf`) finds exactly what
    the whole-document validation finds, also for values it has seen pass elsewhere."""
    from serialine.host.epcis import document
    conn = sqlite3.connect(ledger)
    events = [json.loads(outbox.body_text(b)) for (b,) in conn.execute("SELECT body FROM epcis_outbox ORDER BY seq")]
    conn.close()
    head, tail = document.envelope()
    checker = document.EventChecker(head, tail)
    for event in events:  # every good value seen (and remembered) first
        checker.check(event, "good")
    good = events[0]
    loc = good["bizLocation"]["id"]
    mutants = [dict(good, action="PUT"), dict(good, bizStep="not a step"), dict(good, disposition=loc),
               dict(good, epcList=good["epcList"] + ["no uri", 7]), dict(good, readPoint={"id": "x y"}),
               dict(good, eventTimeZoneOffset="+1:00"), dict(good, eventTime=loc), dict(good, bizStep="packing"),
               dict(good, **{"unknown name": 1}), dict(good, bizLocation=loc), dict(good, type="Odd")]
    refused = 0
    for bad in mutants:
        try:
            validate.json_document(document.epcis_document([bad]))
            expected = []
        except validate.InvalidDocument as whole:
            refused += 1
            expected = sorted((path.removeprefix("epcisBody/eventList/0").lstrip("/") or "(event)", message[:60])
                              for path, message in (line.split(": ", 1) for line in str(whole).splitlines()[1:]))
        try:
            checker.check(bad, "e")
            found = []
        except validate.InvalidDocument as exc:
            found = sorted((path, message[:60]) for path, message in
                           (line.removeprefix("e: ").split(": ", 1) for line in str(exc).splitlines()[1:]))
        assert found == expected, bad
    assert refused >= 8
