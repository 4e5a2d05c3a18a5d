"""GS1 rules the master data follows: expiry day 00 (the month only) from the CLI to the code and
EPCIS; national healthcare reimbursement number AIs per market, from the Syntax Dictionary."""

import datetime as dt
import sqlite3

import pytest

from serialine.host import cli, gs1, masterdata
from serialine.host.db import transaction
from serialine.host.epcis import outbox
from serialine.host.ledger import Ledger

from hostkit import GTIN, Line


def test_day_00_is_the_month_only_everywhere(conn, capsys):
    path = [r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"][0]
    rc = cli.main(["batch", "create", "B2", GTIN, "L2", "2031-02-00", "--planned", "10", "--case-size", "3",
                   "--pallet-size", "2", "--db", path, "--user", "ann"])
    assert rc == 0 and "expiry 2031-02-00" in capsys.readouterr().out
    assert conn.execute("SELECT expiry FROM batch WHERE batch_id='B2'").fetchone() == ("2031-02-00",)
    b = masterdata.get_batch(conn, "B2")
    assert isinstance(b.expiry, gs1.EndOfMonth) and b.expiry == dt.date(2031, 2, 28)
    masterdata.start_batch(conn, "B2")
    led = Ledger(conn, "B2")
    with transaction(conn):
        led.queue_codes(5)
    line = Line(led, device_id="dev2")
    line.unit(0)
    code = led.expected_code("dev2", 7, 0)
    assert "17310200" in code  # (17)310200 on the pack, as given
    assert gs1.parse_read("]d2" + code).ais["17"] == "310200"
    assert gs1.parse_yymmdd("310200") == dt.date(2031, 2, 28)
    (ev,) = [e for e in outbox.batch_events(conn, "B2") if e.get("bizStep", "").endswith("commissioning")]
    assert ev["ilmd"]["cbvmda:itemExpirationDate"] == "2031-02-28"  # EPCIS: the month's last day


@pytest.mark.parametrize("text, iso", [("2032-02-00", "2032-02-29"), ("2031-12", "2031-12-31"), ("2031-04-00", "2031-04-30")])
def test_month_only_expiry_forms(text, iso):
    e = gs1.parse_expiry(text)
    assert e.isoformat() == iso and gs1.expiry_text(e) == text[:7] + "-00" and gs1.yymmdd(e).endswith("00")


@pytest.mark.parametrize("bad", ["2031-13-00", "2031-00-00", "2031-02-30", "31-02-00", "2031-2-1", "2031-02-00x"])
def test_bad_expiry_refused(conn, bad):
    with pytest.raises(ValueError, match="invalid date"):
        masterdata.create_batch(conn, "B9", GTIN, "L9", bad, 10, 2, 2)


def test_ledger_check_takes_real_dates_and_month_only_and_nothing_else(conn):
    ins = "INSERT INTO batch (batch_id, gtin, lot, expiry, planned, case_size, pallet_size) VALUES (?, ?, ?, ?, 1, 1, 1)"
    for i, ok in enumerate(("2031-02-28", "2031-02-00", "2032-02-29")):
        conn.execute(ins, (f"OK{i}", GTIN, f"LOK{i}", ok))
    for i, bad in enumerate(("2031-02-30", "2031-13-01", "2031-13-00", "2031-1-01", "tomorrow", "2031-02-0")):
        with pytest.raises(sqlite3.IntegrityError, match="expiry_is_a_date"):
            conn.execute(ins, (f"BAD{i}", GTIN, f"LBAD{i}", bad))


def nhrn_ais_in_dictionary():
    return {ai for ai, spec in gs1.dictionary().items() if spec.title.startswith("NHRN")}


def test_market_nhrn_ais_come_from_the_syntax_dictionary():
    assert nhrn_ais_in_dictionary() == {"710", "711", "712", "713", "714", "715", "716", "717"}
    titles = {ai: gs1.dictionary()[ai].title for ai in nhrn_ais_in_dictionary()}
    assert titles["713"] == "NHRN DRN" and titles["715"] == "NHRN NDC" and titles["717"] == "NHRN SRN"
    assert masterdata.PROFILES["EU_FMD"].nhrn_ais == ("710", "711", "712", "714", "716")
    assert masterdata.PROFILES["US_DSCSA"].nhrn_ais == ("715",)
    for profile in masterdata.PROFILES.values():
        assert set(profile.nhrn_ais) <= nhrn_ais_in_dictionary()


@pytest.mark.parametrize("market, ai, ok", [
    ("EU_FMD", "710", True), ("EU_FMD", "716", True), ("EU_FMD", "713", False), ("EU_FMD", "715", False),
    ("EU_FMD", "717", False), ("US_DSCSA", "715", True), ("US_DSCSA", "710", False),
])
def test_nhrn_per_market(tmp_path, capsys, market, ai, ok):
    rc = cli.main(["batch", "product", GTIN, "P", "--market", market, "--prefix-len", "7", "--nhrn-ai", ai,
                   "--nhrn", "1234567", "--db", str(tmp_path / "l.db"), "--user", "ann"])
    err = capsys.readouterr().err
    assert (rc == 0) == ok, err
    if not ok:
        assert f"carries no national number AI ({ai}); its NHRN AIs:" in err and "NHRN" in err
