"""Acceptance review of issue 9 through the real CLI: what a new user tried and still got wrong.
Every change to master data is audited whoever makes it (the CLI, the simulator, a script); bad
input is one line and changes nothing."""

import json

import pytest

from serialine.host import audit, cli, db, masterdata, serials
from serialine.host.db import snapshot

from hostkit import GTIN


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def ledger(tmp_path, capsys):
    path = str(tmp_path / "l.db")
    assert cli.main(["batch", "product", GTIN, "Aspirin", "--market", "EU_FMD", "--prefix-len", "7",
                     "--db", path, "--user", "ann"]) == 0
    assert cli.main(["batch", "serials", GTIN, "--generate", "50", "--db", path, "--user", "ann"]) == 0
    capsys.readouterr()
    return path


def trail(path):
    conn = db.connect(path)
    try:
        return [(u, a, json.loads(d)) for u, a, d in conn.execute("SELECT user, action, detail FROM audit ORDER BY seq")]
    finally:
        conn.close()


def test_master_data_made_through_the_api_is_audited_in_its_transaction(tmp_path):
    """The simulator (and any script) calls masterdata directly: with a user, each change and its
    record commit together, and a close-time seal is not the only trace of the product's birth."""
    conn = db.connect(str(tmp_path / "api.db"))
    masterdata.set_location(conn, masterdata.Location("urn:epc:id:sgln:9506000.00000.0", "Plant", tz="UTC"), user="sim")
    masterdata.add_product(conn, GTIN, "Aspirin", "EU_FMD", 7, user="sim")
    serials.generate(conn, GTIN, 20, user="sim")
    masterdata.create_batch(conn, "B1", GTIN, "L1", "2031-01-00", 10, 2, 2, user="sim")
    masterdata.start_batch(conn, "B1", user="sim")
    actions = [a for (a,) in conn.execute("SELECT action FROM audit ORDER BY seq")]
    assert actions == ["location.set", "product.add", "serials.add", "batch.create", "batch.start"]
    ok, _, message = audit.verify(conn, [])
    assert ok, message
    # a refused change leaves no record either
    with pytest.raises(masterdata.MasterDataError):
        masterdata.start_batch(conn, "B1", user="sim")
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 5
    conn.close()


def test_cli_master_data_records_are_the_same(ledger, capsys):
    assert run(capsys, "batch", "create", "B1", GTIN, "L1", "2031-01-00", "--planned", "10", "--case-size", "2",
               "--pallet-size", "2", "--db", ledger, "--user", "bob")[0] == 0
    assert run(capsys, "batch", "start", "B1", "--db", ledger, "--user", "bob")[0] == 0
    t = trail(ledger)
    assert [(u, a) for u, a, _ in t] == [("ann", "product.add"), ("ann", "serials.add"), ("bob", "batch.create"),
                                         ("bob", "batch.start")]
    assert t[0][2]["gtin"] == GTIN and t[0][2]["market"] == "EU_FMD" and "seal" in t[0][2]
    assert t[2][2]["lot"] == "L1" and t[2][2]["expiry"] == "2031-01-00" and "seal" in t[2][2]


@pytest.mark.parametrize("argv, says", [
    (("batch", "start", "NOPE"), "unknown batch 'NOPE'"),
    (("batch", "product", "09506000171005", "N", "--market", "EU_FMD", "--prefix-len", "7", "--nhrn", "1234"),
     "needs both --nhrn-ai AI and --nhrn VALUE"),
    (("batch", "product", "09506000171005", "N", "--market", "EU_FMD", "--prefix-len", "7", "--nhrn-ai", "710"),
     "needs both --nhrn-ai AI and --nhrn VALUE"),
    (("batch", "product", "00000000000017", "Z", "--market", "EU_FMD", "--prefix-len", "7"),
     "company prefix (7 digits after the indicator) is all zeros"),
    (("batch", "create", "B9", GTIN, "L9", "2031-01-31", "--planned", "99999999999999999999", "--case-size", "2",
      "--pallet-size", "2"), "a number given is too large"),
    (("outbox", "--limit", "99999999999999999999"), "a number given is too large"),
    (("batch", "master", GTIN, "--manufacturer", "AC\x01ME"), "manufacturer 'AC\\x01ME': control characters"),
    (("batch", "product", "09506000171005", "Asp\x1birin", "--market", "EU_FMD", "--prefix-len", "7"),
     "control characters are not allowed"),
    (("batch", "site", "urn:epc:id:sgln:0614141.00001.0", "--name", "Wh\nDC"), "control characters are not allowed"),
], ids=["start unknown", "nhrn without ai", "ai without nhrn", "zero company prefix", "huge planned", "huge limit",
        "control char in master data", "control char in product name", "control char in location"])
def test_bad_input_is_one_line_and_changes_nothing(ledger, capsys, argv, says):
    conn = db.connect(ledger)
    before = snapshot(conn)
    rc, _, err = run(capsys, *argv, "--db", ledger)
    assert rc == 1 and says in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(conn) == before
    conn.close()


def test_starting_a_running_batch_says_its_state(ledger, capsys):
    run(capsys, "batch", "create", "B1", GTIN, "L1", "2031-01-31", "--planned", "10", "--case-size", "2",
        "--pallet-size", "2", "--db", ledger)
    assert run(capsys, "batch", "start", "B1", "--db", ledger)[0] == 0
    rc, _, err = run(capsys, "batch", "start", "B1", "--db", ledger)
    assert rc == 1 and "batch B1 is running: only a created batch can be started" in err


def test_dscsa_master_data_added_to_a_product_after_its_batch_closed(tmp_path, capsys):
    """A product made without DSCSA master data (an older ledger, the simulator's) gets it later:
    audited and sealed as product.master, which vouches for the row from then on — the batch's
    close seal still holds for everything else, and the 1.2 export now carries the EPCClass."""
    import sqlite3
    from test_audit_tamper import _run_line  # a closed batch B1 of GTIN, through the real CLI and ledger
    dbfile = tmp_path / "ledger.db"
    _run_line(dbfile)
    path = str(dbfile)
    export = ["epcis", "export", "--batch", "B1", "--format", "xml12", "--out", str(tmp_path / "out"), "--db", path,
              "--sender", "urn:epc:id:sgln:9506000.00000.0", "--receiver", "urn:epc:id:sgln:0614141.00001.0"]
    capsys.readouterr()
    assert cli.main(export) == 1
    assert f"lacks DSCSA master data: --ndc, --manufacturer, --dosage-form, --strength, --net-content (serialine batch master {GTIN}" in capsys.readouterr().err
    rc, out, _ = run(capsys, "batch", "master", GTIN, "--ndc", "50242-040-62", "--dosage-form", "TABLET", "--strength",
                     "100 mg", "--net-content", "30 tablets", "--manufacturer", "Example Pharma", "--db", path,
                     "--user", "qa")
    assert rc == 0 and f"product {GTIN} master data: NDC 50242004062, TABLET, 100 mg, 30 tablets" in out
    assert cli.main(export) == 0
    assert "50242004062" in (tmp_path / "out" / "B1.xml").read_text()
    assert trail(path)[-1][:2] == ("qa", "product.master")
    rc, out, err = run(capsys, "audit", "verify", "--db", path)
    assert rc == 0 and "audit log intact" in out, err
    c = sqlite3.connect(path)  # behind the project's back: the new seal catches it
    c.execute("UPDATE product_master SET strength='500 mg'")
    c.commit()
    c.close()
    rc, _, err = run(capsys, "audit", "verify", "--db", path)
    assert rc == 1 and f"product {GTIN}: table product_master differs from its seal" in err
