"""Opening the ledger from the CLI: only `init` (or the first `batch product`) creates one; a
missing or foreign file is one line, never a traceback nor a fresh empty ledger; SQLite's wording
becomes a sentence; successful commands say what they did."""

import sqlite3
import subprocess
import sys

import pytest

from serialine.host import cli, ledgerfile

from hostkit import GTIN


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


COMMANDS = [
    ("batch", "reconcile", "B1"), ("batch", "serials", GTIN, "--generate", "10"), ("batch", "start", "B1"),
    ("batch", "abort", "B1", "--reason", "r"), ("rework", "disaggregate", "095060000000000015", "--reason", "r"),
    ("audit", "verify"), ("audit", "list"), ("outbox",), ("epcis", "export", "--batch", "B1", "--out", "OUT"),
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_mistyped_db_is_refused_and_not_created(tmp_path, capsys, argv):
    missing = tmp_path / "ledgr.db"
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    with pytest.raises(SystemExit) if argv[0] in ("outbox", "epcis") else _nothing():
        rc, _, err = run(capsys, *argv, "--db", str(missing))
        assert rc == 1 and err.count("\n") == 1
        assert f"no ledger at {missing}" in err and "serialine init" in err
    assert not missing.exists() and not (tmp_path / "out").exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_epcis_commands_say_it_in_one_line_too(tmp_path):
    for argv in (["outbox"], ["epcis", "export", "--batch", "B1", "--out", str(tmp_path / "o")]):
        proc = subprocess.run([sys.executable, "-m", "serialine.host.cli", *argv, "--db", str(tmp_path / "x.db")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().startswith("error: no ledger at") and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("content", [b"just some text\n", b"SQLite format 3\x00" + b"\x00" * 200, b"\x00\xff" * 600])
def test_a_file_that_is_not_a_ledger_is_one_line_and_unchanged(tmp_path, capsys, content):
    f = tmp_path / "notes.db"
    f.write_bytes(content)
    for argv in (("batch", "reconcile", "B1"), ("audit", "verify"), ("batch", "product", GTIN, "X", "--market",
                                                                      "EU_FMD", "--prefix-len", "7"), ("init",)):
        rc, _, err = run(capsys, *argv, "--db", str(f))
        assert rc == 1 and "not a Serialine ledger" in err and err.count("\n") == 1, err
    assert f.read_bytes() == content


def test_an_sqlite_file_of_something_else_is_not_a_ledger(tmp_path, capsys):
    f = tmp_path / "other.sqlite"
    c = sqlite3.connect(f)
    c.execute("CREATE TABLE customers (name TEXT)")
    c.commit()
    c.close()
    before = f.read_bytes()
    rc, _, err = run(capsys, "batch", "start", "B1", "--db", str(f))
    assert rc == 1 and f"{f} is an SQLite database but not a Serialine ledger" in err
    assert f.read_bytes() == before


def test_init_creates_once_and_audits_it(tmp_path, capsys):
    f = tmp_path / "l.db"
    rc, out, _ = run(capsys, "init", "--db", str(f), "--user", "ann")
    assert rc == 0 and out == f"created ledger {f}\n" and ledgerfile.is_ledger(f)
    rc, out, _ = run(capsys, "init", "--db", str(f), "--user", "ann")
    assert rc == 0 and "already exists" in out and "nothing changed" in out
    rc, out, _ = run(capsys, "audit", "list", "--db", str(f))
    assert rc == 0 and "ledger.init" in out and "ann" in out
    rc, _, err = run(capsys, "init", "--db", str(tmp_path / "no" / "such" / "dir.db"))
    assert rc == 1 and "no directory" in err


def test_first_product_creates_the_ledger_and_sql_errors_are_sentences(tmp_path, capsys):
    f = str(tmp_path / "l.db")
    base = ("--db", f, "--user", "ann")
    rc, out, _ = run(capsys, "batch", "product", GTIN, "Aspirin", "--market", "EU_FMD", "--prefix-len", "7", *base)
    assert rc == 0 and out.startswith(f"added product {GTIN} (Aspirin, EU_FMD)")
    rc, _, err = run(capsys, "batch", "product", GTIN, "Aspirin", "--market", "EU_FMD", "--prefix-len", "7", *base)
    assert rc == 1 and "UNIQUE constraint" not in err
    assert err == f"error: product {GTIN}: a product with this GTIN is already in the ledger\n"
    rc, out, _ = run(capsys, "batch", "serials", GTIN, "--generate", "2000", *base)
    assert rc == 0 and "2000 serials added" in out
    rc, out, _ = run(capsys, "batch", "create", "B1", GTIN, "LOT1", "2031-06-30", "--planned", "100", "--case-size", "5",
                     "--pallet-size", "2", *base)
    assert rc == 0 and out.startswith("created batch B1: GTIN 09506000134352, lot LOT1, expiry 2031-06-30, 100 planned")
    rc, _, err = run(capsys, "batch", "create", "B1", GTIN, "LOT9", "2031-06-30", "--planned", "1", "--case-size", "5",
                     "--pallet-size", "2", *base)
    assert rc == 1 and err == "error: batch B1: a batch with this id is already in the ledger\n"
    rc, out, _ = run(capsys, "batch", "start", "B1", *base)
    assert rc == 0 and out.startswith("batch B1 started")
    rc, _, err = run(capsys, "batch", "start", "B1", *base)
    assert rc == 1 and err.count("\n") == 1
    rc, out, _ = run(capsys, "audit", "list", "--db", f)
    assert [ln.split("\t")[3] for ln in out.splitlines()] == ["product.add", "serials.add", "batch.create", "batch.start"]


@pytest.mark.parametrize("message, sentence", [
    ("UNIQUE constraint failed: product.gtin", "a product with this GTIN is already in the ledger"),
    ("UNIQUE constraint failed: serial.gtin, serial.serial", "this serial is already in the GTIN's pool"),
    ("UNIQUE constraint failed: widget.name", "widget name is already in the ledger"),
    ("CHECK constraint failed: planned > 0", "the planned quantity must be positive"),
    ("CHECK constraint failed: expiry_is_a_date", "the expiry must be a real date"),
    ("CHECK constraint failed: x < 3", "the ledger refuses this value (its rule: x < 3)"),
    ("NOT NULL constraint failed: batch.lot", "the batch's lot is required"),
    ("FOREIGN KEY constraint failed", "refers to a product, batch, serial or container the ledger does not have"),
    ("database is locked", "another process holds its write lock"),
    ("serials are never deleted", "serials are never deleted"),  # a trigger's RAISE is already a sentence
])
def test_sqlite_messages_become_sentences(message, sentence):
    assert sentence in ledgerfile.sentence(sqlite3.IntegrityError(message))
    assert "constraint failed" not in ledgerfile.sentence(sqlite3.IntegrityError(message))


def test_every_cli_module_opens_through_the_one_helper(repo_root):
    """No CLI module opens the ledger on its own (a stray sqlite3.connect or db.connect would
    bring back the silently created empty ledger)."""
    for rel in ("host/cli_batch.py", "host/epcis/cli.py"):
        text = (repo_root / rel).read_text()
        assert "sqlite3.connect(" not in text and "db.connect(" not in text, rel
        assert "ledgerfile" in text, rel


def test_missing_import_file_and_illegal_transition_are_sentences(tmp_path, capsys):
    f = str(tmp_path / "l.db")
    run(capsys, "batch", "product", GTIN, "A", "--market", "EU_FMD", "--prefix-len", "7", "--db", f)
    rc, out, _ = run(capsys, "batch", "serials", GTIN, "--generate", "50", "--db", f)
    assert rc == 0 and "drawn uniformly from the OS's cryptographic source" in out
    rc, _, err = run(capsys, "batch", "serials", GTIN, "--import", str(tmp_path / "nope.txt"), "--db", f)
    assert rc == 1 and err == f"error: {tmp_path / 'nope.txt'}: No such file or directory\n"
    assert "never back" in ledgerfile.sentence(sqlite3.IntegrityError("illegal serial state transition"))
