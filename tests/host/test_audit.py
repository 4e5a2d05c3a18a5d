"""The audit trail: a change and its record commit together (a SIGKILL between them leaves
nothing), the chain head is anchored outside the file, `audit list` shows the trail."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys

import pytest

from serialine.host import audit, cli_batch, db, serials
from serialine.host.epcis import document, validate

from hostkit import GTIN

PRODUCT = ["product", GTIN, "Aspirin 100 mg", "--market", "EU_FMD", "--prefix-len", "7"]
SERIALS = ["serials", GTIN, "--generate", "500"]
CREATE = ["create", "B1", GTIN, "L1", "2030-01-31", "--planned", "100", "--case-size", "3", "--pallet-size", "2"]
START = ["start", "B1"]
STEPS = {"product": PRODUCT, "serials": SERIALS, "create": CREATE, "start": START}

# The CLI in a real process that SIGKILLs itself where the audit record would be written: after
# the change's statements, before its record.
KILLED_AT_RECORD = """
import os, signal, sys
from serialine.host import audit, cli_batch
audit.append = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
sys.exit(cli_batch.main(sys.argv[1:]))
"""


def batch(dbfile, *argv, user="ann"):
    return cli_batch.main([*argv, "--db", str(dbfile), "--user", user])


def rows(dbfile, sql):
    c = sqlite3.connect(dbfile)
    try:
        return c.execute(sql).fetchall()
    finally:
        c.close()


@pytest.mark.parametrize("step", list(STEPS))
def test_sigkill_between_change_and_record_leaves_nothing(tmp_path, step):
    dbfile = tmp_path / "ledger.db"
    for name, argv in STEPS.items():  # the steps before this one, normally
        if name == step:
            break
        assert batch(dbfile, *argv) == 0
    c = db.connect(str(dbfile))
    before = db.snapshot(c)
    c.close()
    p = subprocess.run([sys.executable, "-c", KILLED_AT_RECORD, *STEPS[step], "--db", str(dbfile), "--user", "ann"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == -9, p.stderr
    c = db.connect(str(dbfile))
    try:
        after = db.snapshot(c)
        if step == "serials":  # staged in chunks (host/serials.py): what a kill leaves is never in the pool
            assert serials.available(c, GTIN) == 0
            assert c.execute(f"SELECT count(*) FROM serial WHERE {serials.USABLE}").fetchone() == (0,)
            for t in ("serial", "serial_import"):
                before.pop(t, None), after.pop(t, None)
        assert after == before  # no product, serial, batch or state change without its record
        assert audit.verify(c)[0]
    finally:
        c.close()


def test_a_record_that_cannot_be_written_undoes_its_change(tmp_path, capsys):
    dbfile = tmp_path / "ledger.db"
    assert batch(dbfile, *PRODUCT, user="") == 1  # audit.append refuses a record without a user
    assert "audit records need a user" in capsys.readouterr().err
    assert rows(dbfile, "SELECT count(*) FROM product") == [(0,)]


def test_nested_transaction_is_a_savepoint(tmp_path):
    c = db.connect(str(tmp_path / "l.db"))
    c.execute("CREATE TABLE t (x)")
    with db.transaction(c):
        c.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(ValueError):
            with db.transaction(c):
                c.execute("INSERT INTO t VALUES (2)")
                raise ValueError
        assert c.in_transaction  # the inner failure undid only its own part
    assert c.execute("SELECT x FROM t").fetchall() == [(1,)]
    with pytest.raises(ValueError):
        with db.transaction(c):
            with db.transaction(c):
                c.execute("INSERT INTO t VALUES (3)")
            raise ValueError  # the outermost decides: nothing of it commits
    assert c.execute("SELECT x FROM t").fetchall() == [(1,)]


def _setup(dbfile):
    for argv in STEPS.values():
        assert batch(dbfile, *argv) == 0


def test_every_command_prints_and_anchors_the_head(tmp_path, capsys):
    dbfile = tmp_path / "ledger.db"
    _setup(dbfile)
    printed = re.findall(r"^audit head (\d+:[0-9a-f]{64})$", capsys.readouterr().out, re.M)
    assert [p.split(":")[0] for p in printed] == ["1", "2", "3", "4"]
    trail = (tmp_path / "ledger.db.anchors").read_text().splitlines()
    assert [line.split()[1] for line in trail] == printed
    assert "batch create B1 by ann" in trail[2]
    c = db.connect(str(dbfile))
    assert audit.head(c) == printed[-1]
    c.close()


def test_truncation_is_caught_by_a_printed_anchor(tmp_path, capsys):
    dbfile = tmp_path / "ledger.db"
    _setup(dbfile)
    out = tmp_path / "start-output.txt"
    out.write_text(capsys.readouterr().out)
    (tmp_path / "ledger.db.anchors").unlink()  # the attacker removes the trail beside the file too
    c = sqlite3.connect(dbfile)
    c.execute("DROP TRIGGER audit_no_delete")
    c.execute("DELETE FROM audit WHERE seq = 4")
    c.commit()
    c.close()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile)]) == 0  # the chain alone cannot tell
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile), "--anchor", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"anchor 4:{out.read_text().split('4:')[-1][:12]}…: record 4 is missing, the log ends at record 3 (truncated)"


def test_epcis_document_carries_the_head_and_stays_valid(tmp_path, capsys):
    dbfile = tmp_path / "ledger.db"
    _setup(dbfile)
    c = db.connect(str(dbfile))
    doc = document.epcis_document([], audit_head=audit.head(c))
    c.close()
    validate.json_document(doc)  # GS1's JSON Schema accepts the prefixed extension field
    assert doc[document.AUDIT_HEAD] == doc["serialine:auditHead"] and {"serialine": "urn:serialine:"} in doc["@context"]
    path = tmp_path / "doc.json"
    path.write_bytes(document.dumps(doc))
    assert cli_batch.audit_main(["verify", "--db", str(dbfile), "--anchor", str(path)]) == 0
    # re-hash the chain after an edit: the document sent upstream no longer matches
    c = sqlite3.connect(dbfile)
    c.execute("DROP TRIGGER audit_no_update")
    recs = c.execute("SELECT seq, at, user, action, detail FROM audit ORDER BY seq").fetchall()
    prev = audit.GENESIS
    for seq, at, user, action, detail in recs:
        user = "eve" if seq == 2 else user
        h = audit._digest(prev, seq, at, user, action, detail)
        c.execute("UPDATE audit SET user=?, prev_hash=?, hash=? WHERE seq=?", (user, prev, h, seq))
        prev = h
    c.commit()
    c.close()
    (tmp_path / "ledger.db.anchors").unlink()
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile), "--anchor", str(path)]) == 1
    assert "record 4 has another hash (the chain was rewritten)" in capsys.readouterr().err


def test_bad_anchor_argument_is_one_line(tmp_path, capsys):
    dbfile = tmp_path / "ledger.db"
    _setup(dbfile)
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile), "--anchor", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --anchor ")


def test_audit_list_filters(tmp_path, capsys):
    dbfile = tmp_path / "ledger.db"
    _setup(dbfile)
    assert batch(dbfile, "create", "B2", GTIN, "L2", "2030-02-28", "--planned", "10", "--case-size", "2",
                 "--pallet-size", "2", user="bob") == 0
    capsys.readouterr()

    def listed(*argv):
        assert cli_batch.audit_main(["list", "--db", str(dbfile), *argv]) == 0
        return [line.split("\t") for line in capsys.readouterr().out.splitlines()]

    assert [r[3] for r in listed()] == ["product.add", "serials.add", "batch.create", "batch.start", "batch.create"]
    assert [(r[0], r[3]) for r in listed("--batch", "B1")] == [("3", "batch.create"), ("4", "batch.start")]
    assert [r[0] for r in listed("--user", "bob")] == ["5"]
    assert [r[0] for r in listed("--action", "batch.")] == ["3", "4", "5"]
    assert [r[0] for r in listed("--action", "batch.start")] == ["4"]
    assert listed("--since", "2999-01-01") == []
    assert len(listed("--since", "2000-01-01T00:00")) == 5
    detail = json.loads(listed("--batch", "B2")[0][4])
    assert detail["lot"] == "L2" and "seal" not in detail  # the digests are for verify, not for reading
    assert cli_batch.audit_main(["list", "--db", str(dbfile), "--since", "yesterday"]) == 1
    assert "error: --since 'yesterday'" in capsys.readouterr().err


def test_a_site_is_sealed_by_its_latest_record(tmp_path, capsys):
    dbfile = tmp_path / "ledger.db"
    _setup(dbfile)
    site = "urn:epc:id:sgln:9506000.00001.0"
    assert batch(dbfile, "site", site, "--name", "Plant", "--tz", "Europe/Berlin") == 0
    assert batch(dbfile, "site", site, "--name", "Plant 2", "--tz", "Europe/Paris") == 0  # an audited update
    assert cli_batch.audit_main(["verify", "--db", str(dbfile)]) == 0
    c = sqlite3.connect(dbfile)
    c.execute("UPDATE location SET tz='UTC' WHERE sgln=?", (site,))  # the events' time zone, behind the CLI
    c.commit()
    c.close()
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(dbfile)]) == 1
    assert capsys.readouterr().err.startswith(f"location {site}: table location differs from its seal in record 6")


def test_anchor_per_document_writes_one_line_per_head(tmp_path):
    dbfile = tmp_path / "ledger.db"
    _setup(dbfile)
    c = db.connect(str(dbfile))
    lines = len((tmp_path / "ledger.db.anchors").read_text().splitlines())
    heads = {audit.anchor(c, f"document {i}") for i in range(5)}  # a forwarder sending five documents
    assert heads == {audit.head(c)}
    assert len((tmp_path / "ledger.db.anchors").read_text().splitlines()) == lines  # the head was anchored already
    with db.transaction(c):
        with pytest.raises(RuntimeError):
            audit.anchor(c, "inside a transaction")  # it could name a record that then rolls back
    c.close()


from hypothesis import given, strategies as st  # noqa: E402

_HEX = st.text("0123456789abcdef", min_size=64, max_size=64)


@given(before=st.text(max_size=40), seq=st.integers(1, 10**9), h=_HEX, after=st.text(max_size=40))
def test_parse_anchors_finds_an_anchor_in_any_text(before, seq, h, after):
    text = f"{before} {seq}:{h} {after}"
    assert (seq, h) in audit.parse_anchors(text)


@given(st.text(max_size=200))
def test_parse_anchors_never_fails(text):
    for seq, h in audit.parse_anchors(text):
        assert (seq is None or seq >= 0) and len(h) == 64
