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
    # draws of whole prefixes' shares (73 prefixes of 3 characters: 61 or 62 each), 1,000 at least: 1,047 or
    # 1,048 three times, the rest in one
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
    # draws of CHUNK each (not paced by this machine's speed); 4,000, so that a draw, not the pool's
    # prefixes (512 numbers at 128,000: a draw is a JSON string now, no list of serials), is the peak
    monkeypatch.setattr(serials, "CHUNK", 4000)
    monkeypatch.setattr(serials, "HOLD_S", None)
    peaks = []
    for n in (16_000, 128_000):
        tracemalloc.start()
        serials.generate_pool(conn, GTIN, n)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks  # eight times the serials, about the same peak


@pytest.mark.parametrize("hold_s, writes", [
    (1e-9, 1 + 23),  # every write "too long": 1,000, then CHUNK / 4 = 250 and no fewer (5 prefixes' shares: 308)
    (1e9, 3),  # every write "short": 1,000, 2,000, then the rest of the draw (5,000 < 1.5 x 4,000)
])
def test_a_generated_pool_paces_its_chunks_within_bounds(conn, monkeypatch, hold_s, writes):
    monkeypatch.setattr(serials, "CHUNK", 1000)  # a draw: 8,000
    monkeypatch.setattr(serials, "HOLD_S", hold_s)
    added = serials.generate_pool(conn, GTIN, 8000)
    assert added.count == 8000 and added.chunks == writes
    assert conn.execute("SELECT count FROM serial_import WHERE import_id=?", (added.import_id,)).fetchone() == (8000,)


def test_the_guess_check_counts_the_pool_only_when_the_ledgers_size_does_not_bound_it(conn):
    """12 characters of 34: the ledger's bytes bound its serials far below 1/10,000, no scan of the
    pool. 5 digits: the bound is not enough, so the serials already known count (5 + 5 of 10**5 is
    a 1/10,000 chance: refused, though 5 alone were not)."""
    seen = []
    conn.set_trace_callback(seen.append)
    serials.generate_pool(conn, GTIN, 2000, user="ann")
    conn.set_trace_callback(None)
    assert not [s for s in seen if "count(*) FROM serial WHERE" in s], seen
    masterdata.add_product(conn, US_GTIN, "Examplol", "US_DSCSA", 7)
    serials.import_serials(conn, US_GTIN, ["01234", "56789", "13579", "24680", "97531"])
    before = snapshot(conn)
    with pytest.raises(serials.SerialError, match="10 serials of 5 characters from 10 gives a guess probability"):
        serials.import_serials(conn, US_GTIN, ["86420", "02468", "31415", "27182", "16189"])
    assert snapshot(conn) == before


def test_staged_chunks_skip_their_fsync_and_the_publication_is_durable(conn, monkeypatch):
    """synchronous=NORMAL and no automatic checkpoint while staging (nothing staged is usable), the
    connection's own synchronous (FULL) for the publication, and both given back afterwards."""
    monkeypatch.setattr(serials, "CHUNK", 1000)
    conn.execute("PRAGMA wal_autocheckpoint=500")
    conn.execute("PRAGMA cache_size=-4321")
    seen = []
    conn.set_trace_callback(seen.append)
    serials.generate_pool(conn, GTIN, 3000, user="ann")
    conn.set_trace_callback(None)
    syncs = [i for i, s in enumerate(seen) if s.startswith("PRAGMA synchronous=")]
    chunks = [i for i, s in enumerate(seen) if s.startswith("INSERT OR IGNORE INTO serial ")]
    publish = next(i for i, s in enumerate(seen) if s.startswith("UPDATE serial_import SET state='published'"))
    assert seen[syncs[0]] == "PRAGMA synchronous=NORMAL" and syncs[0] < chunks[0]
    assert chunks and chunks[-1] < max(i for i in syncs if i < publish) < publish
    assert seen[max(i for i in syncs if i < publish)] == "PRAGMA synchronous=2"  # FULL, as db.connect sets it
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (500,)
    assert conn.execute("PRAGMA cache_size").fetchone() == (-4321,)
    assert f"PRAGMA cache_size=-{serials.STAGING_CACHE_KIB}" in seen


@pytest.mark.parametrize("held_s, pause_s", [
    (0.0, 0.011), (0.05, 0.03), (0.1, 0.035), (0.127, 0.035),  # a writer that waited this long sleeps 20, 25 ms
    (0.13, 0.06), (0.2, 0.06), (0.25, 0.11), (5.0, 0.11),  # ... then 50, then 100 ms
])
def test_the_pause_after_a_write_outlasts_the_sleep_of_a_writer_that_waited_meanwhile(monkeypatch, held_s, pause_s):
    monkeypatch.setattr(serials, "YIELD_S", 0.11)
    assert serials._pause(held_s) == pytest.approx(pause_s)
