"""Serial import: records are lines ending in "\\n" and nothing else, a file is all or nothing
with the bad line named, an import says how random the pool is and a market that requires
randomisation refuses a predictable one; a big pool is staged in chunks and published at once."""

import math
import sqlite3
import time

import pytest
from hypothesis import given, settings, strategies as st

from serialine.host import audit, cli, db, gs1, masterdata, serials
from serialine.host.db import snapshot, transaction

from hostkit import GTIN

US_GTIN = "00012345600012"


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(serials, "YIELD_S", 0.0)  # the pause between chunks is for other processes
    monkeypatch.setattr(serials, "HOLD_S", None)  # chunks of CHUNK, whatever this machine's speed


def write(tmp_path, text, name="pool.txt"):
    f = tmp_path / name
    f.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return f


def randoms(n, alphabet="0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"):
    return serials.random_serials(alphabet, 12, n)


@pytest.mark.parametrize("sep", ["\x1d", "\x0c", "\x85", "\u2028", "\x0b", "\x1e"])
def test_only_newline_ends_a_record(conn, tmp_path, sep):
    """103 lines, three of them holding another separator: not 106 serials, an error naming the line."""
    lines = randoms(103)
    lines[40] = lines[40][:6] + sep + lines[40][6:]
    f = write(tmp_path, "\n".join(lines) + "\n")
    before = snapshot(conn)
    with pytest.raises(serials.SerialError, match=r"line 41: bad characters"):
        serials.read_import_file(f)
    assert snapshot(conn) == before


@pytest.mark.parametrize("line, words", [
    (" K7QX2M9RT4WB", "whitespace"), ("K7QX2M9RT4WB ", "whitespace"), ("K7QX2M9RT4WB\r", "whitespace"),
    ("K7QX2M9RT4WB\t", "whitespace"), ("", "empty line"), ("A" * 21, "bad characters or length"),
    ("K7QX#2M9RT4W", "bad characters"),
])
def test_changed_data_is_an_error_naming_the_line(tmp_path, line, words):
    lines = randoms(5)
    lines[2] = line
    with pytest.raises(serials.SerialError, match=f"line 3: {words}"):
        serials.read_import_file(write(tmp_path, "\n".join(lines) + "\n"))


def test_file_level_errors(tmp_path):
    a, b = randoms(2)
    with pytest.raises(serials.SerialError, match="line 2 does not end in a newline"):
        serials.read_import_file(write(tmp_path, f"{a}\n{b}"))
    with pytest.raises(serials.SerialError, match=r"line 3: duplicate serial .* \(also line 1\)"):
        serials.read_import_file(write(tmp_path, f"{a}\n{b}\n{a}\n"))
    with pytest.raises(serials.SerialError, match="line 2: not UTF-8"):
        serials.read_import_file(write(tmp_path, a.encode() + b"\n\xff\xfe\n"))
    with pytest.raises(serials.SerialError, match="empty file"):
        serials.read_import_file(write(tmp_path, ""))
    with pytest.raises(serials.SerialError, match=r"line 1: .* \(and 2 more bad line\(s\)\)"):
        serials.read_import_file(write(tmp_path, " x\n y\n z\n"))


_SERIAL = st.text(alphabet=sorted(gs1.CSET82), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(_SERIAL, min_size=1, max_size=30, unique=True))
def test_valid_files_read_back_exactly(tmp_path_factory, lines):
    f = write(tmp_path_factory.mktemp("h"), "\n".join(lines) + "\n")
    assert serials.read_import_file(f) == lines


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("AB7 \t\r\n\x1d\x0c\x85\u2028\u2029\x00é")), max_size=40))
def test_any_file_is_read_as_split_at_newline_or_refused(tmp_path_factory, text):
    """Never a stripped, re-split or silently dropped record."""
    f = write(tmp_path_factory.mktemp("h"), text)
    try:
        got = serials.read_import_file(f)
    except serials.SerialError as exc:
        assert "line" in str(exc) or "empty file" in str(exc)
    else:
        assert text.endswith("\n") and got == text[:-1].split("\n")


def test_sequential_range_refused_for_eu_fmd(conn, tmp_path):
    seq = [f"{i:012d}" for i in range(1, 10001)]
    assert serials.randomness(seq).predictable
    before = snapshot(conn)
    with pytest.raises(serials.SerialError, match="predictable.*requires randomised"):
        serials.import_serials(conn, GTIN, seq)
    assert snapshot(conn) == before
    strided = [f"{i * 99991:012d}" for i in range(1, 10001)]  # big steps, all equal: still guessable
    with pytest.raises(serials.SerialError, match="predictable"):
        serials.import_serials(conn, GTIN, strided)
    shuffled = seq[5000:] + seq[:5000]  # order does not hide a range
    with pytest.raises(serials.SerialError, match="predictable"):
        serials.import_serials(conn, GTIN, shuffled)


def test_random_pool_passes_and_states_its_randomness(conn):
    pool = randoms(5000)
    rnd = serials.randomness(pool)
    assert not rnd.predictable and rnd.guess_probability < 1e-9
    assert rnd.varying_positions == 12 and rnd.repeated_gap_share == 0
    added = serials.import_serials(conn, GTIN, pool, user="ann")
    assert added.count == 5000 and added.randomness == rnd
    assert serials.available(conn, GTIN) == 300 + 5000
    (rec,) = [r for r in audit.records(conn) if r[3] == "serials.add"]
    assert '"count":5000' in rec[4] and "guess_probability" in rec[4]


def test_cli_import_says_how_random_and_us_market_only_warns(tmp_path, capsys):
    f = str(tmp_path / "l.db")
    base = ["--db", f, "--user", "ann"]
    assert cli.main(["batch", "product", US_GTIN, "US pack", "--market", "US_DSCSA", "--prefix-len", "7", *base]) == 0
    assert cli.main(["batch", "product", GTIN, "EU pack", "--market", "EU_FMD", "--prefix-len", "7", *base]) == 0
    capsys.readouterr()
    seq = write(tmp_path, "".join(f"{i:012d}\n" for i in range(1, 10001)))
    assert cli.main(["batch", "serials", GTIN, "--import", str(seq), *base]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: pool for") and "predictable" in err and err.count("\n") == 1
    assert cli.main(["batch", "serials", US_GTIN, "--import", str(seq), *base]) == 0
    out, err = capsys.readouterr()
    assert "randomness of 10000 serials" in out and "estimated guess probability 1" in out
    assert "10000 serials added" in out and "predictable" in err
    good = write(tmp_path, "".join(s + "\n" for s in randoms(2000)), "good.txt")
    assert cli.main(["batch", "serials", GTIN, "--import", str(good), *base]) == 0
    out = capsys.readouterr().out
    assert "randomness of 2000 serials: 12 of 12 positions vary over 34 characters" in out
    assert "2000 serials added" in out


def test_import_is_staged_in_chunks_and_published_at_once(conn, monkeypatch):
    monkeypatch.setattr(serials, "CHUNK", 250)
    pool = randoms(2000)
    added = serials.import_serials(conn, GTIN, pool, user="ann")
    assert added.chunks == 8 and added.count == 2000
    assert conn.execute("SELECT state, count FROM serial_import WHERE import_id=?", (added.import_id,)).fetchone() == \
        ("published", 2000)
    gen = serials.generate_pool(conn, GTIN, 1000, user="ann")
    assert gen.chunks == 4 and serials.available(conn, GTIN) == 300 + 3000


def test_a_failed_import_leaves_nothing_usable_and_is_abandoned(conn, monkeypatch):
    monkeypatch.setattr(serials, "CHUNK", 100)
    pool = randoms(1000)
    conn.execute(f"CREATE TEMP TRIGGER fail_mid BEFORE INSERT ON serial WHEN NEW.serial = '{sorted(pool)[650]}'"
                 " BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    serial_rows = snapshot(conn)["serial"]
    with pytest.raises(serials.SerialError, match="nothing imported"):
        serials.import_serials(conn, GTIN, pool, user="ann")
    assert snapshot(conn)["serial"] == serial_rows  # six chunks were committed (in key order), then removed
    assert conn.execute("SELECT state, count FROM serial_import ORDER BY import_id DESC LIMIT 1").fetchone() == \
        ("abandoned", 600)
    assert not [r for r in audit.records(conn) if r[3] == "serials.add"]
    conn.execute("DROP TRIGGER fail_mid")
    assert serials.import_serials(conn, GTIN, pool).count == 1000  # the same file again: fine


def test_staged_serials_are_unusable_until_published(conn):
    with transaction(conn):
        now = time.time()
        imp = conn.execute("INSERT INTO serial_import (gtin, source, started_at, heartbeat) VALUES (?, 'f', ?, ?)",
                           (GTIN, now, now)).lastrowid
        conn.executemany("INSERT INTO serial (gtin, serial, source, import_id) VALUES (?, ?, 'f', ?)",
                         [(GTIN, s, imp) for s in randoms(50)])
    assert serials.available(conn, GTIN) == 300
    staged = conn.execute("SELECT serial FROM serial WHERE import_id=? LIMIT 1", (imp,)).fetchone()[0]
    with pytest.raises(sqlite3.IntegrityError, match="unpublished import"):
        conn.execute("UPDATE serial SET state='allocated', batch_id='B1' WHERE serial=?", (staged,))
    with transaction(conn):
        got = serials.allocate(conn, "B1", GTIN, 300)
    assert staged not in got
    with pytest.raises(serials.SerialError, match="exhausted"):
        with transaction(conn):
            serials.allocate(conn, "B1", GTIN, 1)
    conn.execute("UPDATE serial_import SET state='published' WHERE import_id=?", (imp,))
    assert serials.available(conn, GTIN) == 50
    with pytest.raises(sqlite3.IntegrityError, match="final"):
        conn.execute("UPDATE serial_import SET state='abandoned' WHERE import_id=?", (imp,))
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        conn.execute("DELETE FROM serial WHERE import_id=?", (imp,))  # published: in the pool for good


def test_a_killed_import_is_cleaned_up_by_the_next(conn):
    old = time.time() - serials.STALE_S - 1
    with transaction(conn):
        imp = conn.execute("INSERT INTO serial_import (gtin, source, started_at, heartbeat) VALUES (?, 'f', ?, ?)",
                           (GTIN, old, old)).lastrowid
        conn.executemany("INSERT INTO serial (gtin, serial, source, import_id) VALUES (?, ?, 'f', ?)",
                         [(GTIN, s, imp) for s in randoms(40)])
    serials.import_serials(conn, GTIN, randoms(10))
    assert conn.execute("SELECT count(*) FROM serial WHERE import_id=?", (imp,)).fetchone()[0] == 0
    assert conn.execute("SELECT state FROM serial_import WHERE import_id=?", (imp,)).fetchone()[0] == "abandoned"


def test_another_writer_gets_the_lock_between_chunks(tmp_path, monkeypatch):
    """The agent's writes are not held up for the whole import: between two chunks another
    connection's BEGIN IMMEDIATE gets through at once."""
    path = str(tmp_path / "l.db")
    c = db.connect(path)
    masterdata.add_product(c, GTIN, "x", "EU_FMD", 7)
    monkeypatch.setattr(serials, "CHUNK", 500)
    other = db.connect(path)
    other.execute("PRAGMA busy_timeout=0")  # fail at once if the lock were held
    waits = []
    real = serials.transaction

    class Probe(real):
        def __enter__(self):
            if not self.conn.in_transaction:
                t = time.monotonic()
                with real(other):
                    other.execute("INSERT INTO alarm_log (at, source, alarm) VALUES (0, 'probe', 'x')")
                waits.append(time.monotonic() - t)
            return super().__enter__()

    monkeypatch.setattr(serials, "transaction", Probe)
    added = serials.import_serials(c, GTIN, randoms(5000))
    assert added.chunks == 10 and len(waits) >= 11 and max(waits) < 1.0
    assert added.longest_write_s < 5.0
    assert math.isfinite(added.longest_write_s)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10 ** 11), st.integers(1, 10 ** 7), st.integers(3, 400), st.integers(0, 10 ** 6))
def test_any_stride_is_predictable_and_random_pools_are_not(start, step, n, seed):
    stride = [f"{start + i * step:012d}" for i in range(n)]
    assert serials.randomness(stride).predictable
    pool = serials.random_serials("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", 12, n)
    assert not serials.randomness(pool).predictable
