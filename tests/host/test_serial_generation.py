"""Serial generation at speed: still uniform over the market's alphabet (the rejection step keeps
the bias out), every serial new for ever (the ledger's key), staged in chunks of one statement
each with memory that does not grow with N, and all or nothing when a chunk fails."""

from __future__ import annotations

import tracemalloc
from collections import Counter

import pytest

from serialine.host import gs1, masterdata, serials
from serialine.host.db import snapshot

from hostkit import GTIN

EU = masterdata.PROFILES["EU_FMD"]
US_GTIN = "00012345600012"


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(serials, "YIELD_S", 0.0)  # the pause between chunks is for other processes
    monkeypatch.setattr(serials, "HOLD_S", None)  # chunks of CHUNK, whatever this machine's speed


def test_random_serials_are_uniform_and_unbiased():
    """34 characters: 256 % 34 = 18 of them would come 8/7 as often (+14 %) without the rejection."""
    drawn = serials.random_serials(EU.alphabet, EU.serial_length, 60_000)
    assert len(drawn) == 60_000 and {len(s) for s in drawn} == {EU.serial_length}
    counts = Counter("".join(drawn))
    assert set(counts) == set(EU.alphabet)
    mean = 60_000 * EU.serial_length / len(EU.alphabet)
    assert all(abs(c - mean) < 0.06 * mean for c in counts.values()), counts
    first, rest = EU.alphabet[:256 % 34], EU.alphabet[256 % 34:]
    assert abs(sum(counts[c] for c in first) / len(first) - sum(counts[c] for c in rest) / len(rest)) < 0.03 * mean
    assert len(set(drawn)) == len(drawn)


def test_a_non_ascii_alphabet_still_draws_from_it():
    drawn = serials.random_serials("ÄÖÜ", 5, 200)
    assert set("".join(drawn)) == set("ÄÖÜ") and {len(s) for s in drawn} == {5}


def test_generated_serials_are_new_and_published_at_once(conn, monkeypatch):
    monkeypatch.setattr(serials, "CHUNK", 1000)
    before = {s for (s,) in conn.execute("SELECT serial FROM serial WHERE gtin = ?", (GTIN,))}
    added = serials.generate_pool(conn, GTIN, 4500, user="ann")
    # draws of whole 1-character prefixes' shares (132 or 133), 1,000 at least: 1,059 three times, the rest in one
    assert added.count == 4500 and added.chunks == 4
    after = [s for (s,) in conn.execute("SELECT serial FROM serial WHERE gtin = ?", (GTIN,))]
    assert len(after) == len(set(after)) == len(before) + 4500 and before <= set(after)
    assert serials.available(conn, GTIN) == 300 + 4500
    assert conn.execute("SELECT state, count FROM serial_import WHERE import_id = ?",
                        (added.import_id,)).fetchone() == ("published", 4500)


def test_every_character_of_the_gs1_set_goes_through_the_chunk_statement_unchanged(conn):
    """A chunk goes to SQLite as one JSON array: quotes and the like come out as they went in."""
    masterdata.add_product(conn, US_GTIN, "Examplol", "US_DSCSA", 7)  # no randomisation rule
    pool = [c * 3 + f"{i:05d}" for i, c in enumerate(sorted(gs1.CSET82))]
    added = serials.import_serials(conn, US_GTIN, pool)
    assert added.count == len(pool)
    stored = {s for (s,) in conn.execute("SELECT serial FROM serial WHERE gtin = ?", (US_GTIN,))}
    assert stored == set(pool)


def test_a_failing_chunk_leaves_nothing_usable(conn, monkeypatch):
    monkeypatch.setattr(serials, "CHUNK", 1000)
    before = snapshot(conn)["serial"]
    # the disk fails in the third chunk's statement
    conn.execute("CREATE TEMP TRIGGER fail_third BEFORE INSERT ON serial WHEN (SELECT count FROM serial_import"
                 " WHERE import_id = NEW.import_id) >= 2000 BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    with pytest.raises(Exception, match="disk trouble"):
        serials.generate_pool(conn, GTIN, 5000)
    conn.execute("DROP TRIGGER fail_third")
    assert snapshot(conn)["serial"] == before
    assert serials.available(conn, GTIN) == 300
    (state,) = conn.execute("SELECT state FROM serial_import ORDER BY import_id DESC LIMIT 1").fetchone()
    assert state == "abandoned"


def test_memory_does_not_grow_with_the_count(conn, monkeypatch):
    monkeypatch.setattr(serials, "CHUNK", 1000)  # a draw: 8,000
    peaks = []
    for n in (16_000, 128_000):
        tracemalloc.start()
        serials.generate_pool(conn, GTIN, n)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks  # eight times the serials, about the same peak


@pytest.mark.parametrize("hold_s, writes", [
    (1e-9, 1 + 15),  # every write "too long": 1,000, then CHUNK / 4 = 250 and no fewer (2 prefixes' shares: 470)
    (1e9, 3),  # every write "short": 1,000, 2,000, then the rest of the draw (5,000 < 1.5 x 4,000)
])
def test_a_generated_pool_paces_its_chunks_within_bounds(conn, monkeypatch, hold_s, writes):
    monkeypatch.setattr(serials, "CHUNK", 1000)  # a draw: 8,000
    monkeypatch.setattr(serials, "HOLD_S", hold_s)
    added = serials.generate_pool(conn, GTIN, 8000)
    assert added.count == 8000 and added.chunks == writes
    assert conn.execute("SELECT count FROM serial_import WHERE import_id=?", (added.import_id,)).fetchone() == (8000,)
