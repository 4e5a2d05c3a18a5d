import pytest

from serialine.host import db, masterdata, serials
from serialine.host.db import snapshot, transaction
from serialine.host.verdicts import Judge, grade_value
from serialine.protocol.schema import Reason, Verdict

from hostkit import GTIN


def test_generated_serials_follow_profile_and_are_unique(conn):
    rows = [s for (s,) in conn.execute("SELECT serial FROM serial WHERE gtin=?", (GTIN,))]
    prof = masterdata.PROFILES["EU_FMD"]
    assert len(rows) == 300 == len(set(rows))
    assert all(len(s) == prof.serial_length and set(s) <= set(prof.alphabet) for s in rows)
    # non-sequential: a generated pool lies under a few random prefixes (serials.clusters), the rest of
    # each serial uniform, so its last characters spread
    assert len({s[-3:] for s in rows}) > 100


def test_guess_probability_refused(tmp_path):
    c = db.connect(str(tmp_path / "x.db"))
    masterdata.add_product(c, "00012345600012", "x", "US_DSCSA", 7)
    # 10**12 possible numeric serials: 10**8 would be a 1/10,000 chance: refused, nothing added
    assert serials.guess_probability(10 ** 8, 10, 12) == pytest.approx(1e-4)
    with pytest.raises(serials.SerialError, match="guess probability"):
        serials.generate(c, "00012345600012", 10 ** 8)
    assert serials.available(c, "00012345600012") == 0
    with pytest.raises(serials.SerialError, match="guess probability"):
        serials.import_serials(c, "00012345600012", ["1", "2", "3"])  # 3 of 10 one-digit serials


@pytest.mark.parametrize("lines, words", [
    (["AAAA1111BBBB", "AAAA1111BBBB"], "duplicate"),
    (["AAAA1111BBBB", "AAA#1111BBBB"], "bad characters"),
    (["AAAA1111BBBB", "A" * 21], "bad characters or length"),
])
def test_import_bad_files_change_nothing(conn, tmp_path, lines, words):
    f = tmp_path / "serials.txt"
    f.write_text("\n".join(lines) + "\n")
    before = snapshot(conn)
    with pytest.raises(serials.SerialError, match=words):
        serials.import_serials(conn, GTIN, serials.read_import_file(f))
    assert snapshot(conn) == before


def test_import_refuses_known_serial(conn):
    known = conn.execute("SELECT serial FROM serial LIMIT 1").fetchone()[0]
    before = snapshot(conn)
    with pytest.raises(serials.SerialError, match="already known"):
        serials.import_serials(conn, GTIN, ["K7QX2M9RT4WB", known])
    assert snapshot(conn) == before
    assert serials.import_serials(conn, GTIN, ["K7QX2M9RT4WB", "3HZP8NC6VJ1D"]).count == 2


def test_allocation_and_low_water(conn):
    with transaction(conn):
        got = serials.allocate(conn, "B1", GTIN, 250)
    assert len(set(got)) == 250
    assert serials.low_water(conn, GTIN, threshold=100) and "50 available" in serials.low_water(conn, GTIN, 100)
    with pytest.raises(serials.SerialError, match="exhausted"):
        with transaction(conn):
            serials.allocate(conn, "B1", GTIN, 51)
    assert serials.available(conn, GTIN) == 50


@pytest.mark.parametrize("bad, words", [
    (dict(expiry="2030-02-30"), "invalid date"),
    (dict(expiry="2001-01-01"), "not in the future"),
    (dict(gtin="09506000134353"), "unknown GTIN"),
    (dict(lot="L#1"), "not allowed"),
    (dict(batch_id="B1"), "batch B1"),
    (dict(case_size=0), "positive"),
])
def test_bad_batches_change_nothing(conn, bad, words):
    args = dict(batch_id="B2", gtin=GTIN, lot="L2", expiry="2030-01-31", planned=10, case_size=2, pallet_size=2)
    args.update(bad)
    before = snapshot(conn)
    with pytest.raises(ValueError, match=words):
        masterdata.create_batch(conn, **args)
    assert snapshot(conn) == before


def test_product_wrong_gtin_refused(conn):
    before = snapshot(conn)
    with pytest.raises(ValueError, match="check digit"):
        masterdata.add_product(conn, "09506000134353", "x", "EU_FMD", 7)
    with pytest.raises(ValueError, match="no national number"):
        masterdata.add_product(conn, "09506000134369", "x", "US_DSCSA", 7, "714", "123")
    assert snapshot(conn) == before


def test_grades():
    assert grade_value("C") == 1.5 and grade_value("2.0") == 2.0
    with pytest.raises(ValueError):
        grade_value("4.5")


def test_every_verdict_reason(ledger):
    L = ledger
    with transaction(L.conn):
        (_, code), (_, other) = L.queue_codes(2)
    serial = code.split("\x1d21")[1].split("\x1d")[0]
    foreign = L.conn.execute("SELECT serial FROM serial WHERE state='available' LIMIT 1").fetchone()[0]
    judge = Judge("B1", GTIN, "L1", L._serial_batch)
    assert judge.decide(None, None, code) == (Verdict.FAIL, Reason.NO_READ, None)
    assert judge.decide("]Q3" + code, "A", code)[:2] == (Verdict.FAIL, Reason.NOT_GS1)
    assert judge.decide("]d2garbage", "A", code)[:2] == (Verdict.FAIL, Reason.NOT_GS1)
    assert judge.decide("]d2" + code, "D", code)[:2] == (Verdict.FAIL, Reason.LOW_GRADE)
    assert judge.decide("]d2" + code, "bogus", code)[:2] == (Verdict.FAIL, Reason.LOW_GRADE)
    assert judge.decide("]d2" + code.replace("10L1", "10L9"), "A", code)[:2] == (Verdict.FAIL, Reason.WRONG_BATCH)
    assert judge.decide("]d2" + code.replace(serial, foreign), "A", code)[:2] == (Verdict.FAIL, Reason.UNKNOWN_SERIAL)
    assert judge.decide("]d2" + other, "A", code)[:2] == (Verdict.FAIL, Reason.CODE_MISMATCH)
    assert judge.decide("]d2" + code, "A", code) == (Verdict.PASS, Reason.OK, serial)
    assert judge.decide("]d2" + code, "A", code)[:2] == (Verdict.FAIL, Reason.DUPLICATE)
    assert judge.decide("]d2" + code, "1.5", None)[:2] == (Verdict.FAIL, Reason.DUPLICATE)
    strict = Judge("B1", GTIN, "L1", L._serial_batch, min_grade="A")
    assert strict.decide("]d2" + other, "B", other)[:2] == (Verdict.FAIL, Reason.LOW_GRADE)


def test_serial_of_another_batch_is_wrong_batch(conn, ledger):
    masterdata.create_batch(conn, "B2", GTIN, "L2", "2030-01-31", 10, 2, 2)
    masterdata.start_batch(conn, "B2")  # serials go only to a running batch
    with transaction(conn):
        s = serials.allocate(conn, "B2", GTIN, 1)[0]
        (_, code), = ledger.queue_codes(1)
    own = code.split("\x1d21")[1].split("\x1d")[0]
    assert ledger.judge.decide("]d2" + code.replace(own, s), "A", code)[:2] == (Verdict.FAIL, Reason.WRONG_BATCH)
