"""Generated pools at any size: clustered draws (a few random prefixes, each its exact share, each
serial still uniform), one draw in memory whatever N, a serial that collides with one known for ever drawn
again (a seeded source forces it), a source that repeats itself refused, and an interrupted
`batch serials --generate` (Ctrl-C, kill) adds nothing. Old ledgers gain the partial pool
indexes and the one insert trigger."""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest

from serialine.host import audit, db, masterdata, serials
from serialine.host.db import snapshot, transaction

from serialine.host.ledger import Ledger

from hostkit import GTIN, Line

EU = masterdata.PROFILES["EU_FMD"]


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(serials, "YIELD_S", 0.0)  # the pause between chunks is for other processes
    monkeypatch.setattr(serials, "HOLD_S", None)  # chunks of CHUNK, whatever this machine's speed


def seeded(seed=7):
    return random.Random(seed).randbytes


def pool(conn, import_id=None):
    q = "SELECT serial FROM serial WHERE gtin = ?" + (" AND import_id = ?" if import_id else "")
    return {s for (s,) in conn.execute(q, (GTIN, import_id) if import_id else (GTIN,))}


def test_a_pool_lies_under_few_random_prefixes_each_its_exact_share_the_rest_uniform(monkeypatch):
    monkeypatch.setattr(serials, "CHUNK", 1600)  # shares of 100 at most: 5,000 under 50 prefixes
    count = 5000
    p, k = serials.clusters(EU.alphabet, 12, count)
    assert (p, k) == (3, 50) and k * serials.SPREAD <= 34 ** p  # 50 of 39,304: the pool in 1/786 of the key space
    draws = [list(rows) for rows, _ in serials.drawn_chunks(EU.alphabet, 12, count, seeded())]  # (a Drawn: its JSON)
    drawn = [s for rows in draws for s in rows]
    assert len(drawn) == count and {len(s) for s in drawn} == {12} and set("".join(drawn)) <= set(EU.alphabet)
    shares = Counter(s[:3] for s in drawn)
    assert len(shares) == 50 and set(shares.values()) == {100}
    # the prefixes: random (another source, others), over the whole space
    other = {s[:3] for rows, _ in serials.drawn_chunks(EU.alphabet, 12, count, seeded(8)) for s in rows}
    assert len(other & set(shares)) < 5
    firsts = Counter(prefix[0] for prefix in list(shares) + list(other))
    assert len(firsts) > 20 and max(firsts.values()) < 12, firsts
    # each draw sorted, the draws in key order: every write is a few ranges of keys
    assert all(rows == sorted(rows) for rows in draws)
    assert all(a[-1] < b[0] for a, b in zip(draws, draws[1:]))
    rest = Counter("".join(s[3:] for s in drawn))
    mean = count * 9 / 34
    assert all(abs(c - mean) < 0.12 * mean for c in rest.values()), rest
    assert not serials.randomness(drawn).predictable


def test_a_pool_of_any_size_takes_at_most_its_share_of_the_prefixes():
    for count in (1, 6_000, 200_000, 10_000_000):
        p, k = serials.clusters(EU.alphabet, 12, count)
        assert -(-count // k) <= serials.CHUNK / 16 and k * serials.SPREAD <= 34 ** p and p <= 6, count
    # ten digits of 12 (US: a short alphabet): one known serial must not guess the rest of its prefix's share
    # better than 1/100 of the market's 1e-4, so the pool takes as much of the key space as that needs
    for count, (p, k) in ((200_000, (3, 200)), (1_000_000, (3, 1000)), (10_000_000, (4, 10_000))):
        assert serials.clusters("0123456789", 12, count) == (p, k), count  # 1/5 of the space, then all of it
        known = serials.guess_probability(-(-count // k), 10, 12 - p)
        uniform = serials.guess_probability(count, 10, 12)  # (10M: 1e-5, above 1e-6: all prefixes, no worse)
        assert known <= max(1e-4 / serials.KNOWN_MARGIN, uniform) * 1.0001 and -(-count // k) <= serials.CHUNK / 16


def test_the_clustering_never_refuses_a_pool_the_uniform_draw_admits(conn, monkeypatch):
    """A randomised market of 6 digits (US_DSCSA made so): 50 serials are 5e-5 to guess, admitted. Under one 2-digit
    prefix (the clustering of 14246f3) one known serial would guess the rest with 5e-3 and the pool was
    refused; now the pool is drawn uniformly (no prefix) and admitted, said without a prefix."""
    short = dataclasses.replace(masterdata.PROFILES["US_DSCSA"], serial_length=6, randomised=True)
    monkeypatch.setitem(masterdata.PROFILES, "US_DSCSA", short)
    assert serials.clusters(short.alphabet, 6, 50, short.max_guess_probability) == (0, 1)  # no prefix: uniform
    masterdata.add_product(conn, "00012345600012", "six digits", "US_DSCSA", 7)
    added = serials.generate_pool(conn, "00012345600012", 50, user="ann")
    drawn = pool_of(conn, "00012345600012")
    assert added.count == 50 and len(drawn) == 50 and {len(s) for s in drawn} == {6}
    assert "prefix" not in added.statement and "guess probability 5e-05" in added.statement
    with pytest.raises(serials.SerialError, match="guess probability"):  # only the uniform check refuses
        serials.generate_pool(conn, "00012345600012", 60)


def pool_of(conn, gtin):
    return {s for (s,) in conn.execute("SELECT serial FROM serial WHERE gtin = ?", (gtin,))}


def test_one_draw_is_in_memory_whatever_the_count():
    """The generator is lazy: a draw of a billion serials is as big as that of a million, the size
    asked for (CHUNK first, then what is sent) and less than a prefix's share more."""
    cap = serials.DRAWN * serials.CHUNK
    for count in (1_000_000, 1_000_000_000):
        p, k = serials.clusters(EU.alphabet, 12, count)
        share = -(-count // k)
        assert share <= serials.CHUNK / 16
        draws = serials.drawn_chunks(EU.alphabet, 12, count)
        rows, _ = next(draws)
        assert serials.CHUNK <= len(rows) < serials.CHUNK + share, (count, len(rows))
        rows, _ = draws.send(cap)
        assert cap <= len(rows) < cap + share, (count, len(rows))


def test_a_draw_that_collides_is_drawn_again(conn):
    """The same seed twice: the second run's first draw is exactly the first pool, all known, so
    every one of its serials is drawn again (in the same chunk's transaction)."""
    first = serials.generate_pool(conn, GTIN, 2000, randbytes=seeded())
    rows, _ = next(serials.drawn_chunks(EU.alphabet, 12, 2000, seeded()))
    assert set(rows) == pool(conn, first.import_id)  # what the second run draws first
    again = serials.generate_pool(conn, GTIN, 2000, user="ann", randbytes=seeded())
    assert again.count == 2000 and again.chunks == 1
    assert len(pool(conn)) == 300 + 4000
    assert not pool(conn, again.import_id) & pool(conn, first.import_id)
    assert serials.available(conn, GTIN) == 300 + 4000
    (rec,) = [r for r in audit.records(conn) if r[3] == "serials.add"]
    assert json.loads(rec[4])["count"] == 2000  # one audit record for the whole command


def test_a_serial_is_never_issued_again_whatever_became_of_it(conn):
    """Allocated, printed, commissioned, decommissioned, destroyed, rejected, handed out and returned:
    a seeded run that draws exactly those serials again adds others."""
    first = serials.generate_pool(conn, GTIN, 600, randbytes=seeded(3))
    old = sorted(pool(conn, first.import_id))
    with transaction(conn):
        conn.execute("UPDATE serial SET state='allocated', batch_id='B1' WHERE gtin=? AND serial IN"
                     " (SELECT value FROM json_each(?))", (GTIN, json.dumps(old[:500])))
        for state, part in (("printed", old[:400]), ("commissioned", old[:300])):
            conn.executemany(f"UPDATE serial SET state='{state}' WHERE gtin=? AND serial=?", [(GTIN, s) for s in part])
        for state, part in (("decommissioned", old[:100]), ("destroyed", old[100:200]), ("sampled", old[200:300]),
                            ("rejected", old[300:400])):
            conn.executemany(f"UPDATE serial SET state='{state}' WHERE gtin=? AND serial=?", [(GTIN, s) for s in part])
        conn.executemany("INSERT INTO serial_grant (token, gtin, serial, user, at) VALUES ('t', ?, ?, 'ann', 0)",
                         [(GTIN, s) for s in old[500:]])
        conn.execute("UPDATE serial_grant SET state='returned' WHERE token='t'")
    states = dict(conn.execute("SELECT state, count(*) FROM serial WHERE import_id=? GROUP BY state", (first.import_id,)))
    assert states == {"decommissioned": 100, "destroyed": 100, "sampled": 100, "rejected": 100, "allocated": 100,
                      "available": 100}
    again = serials.generate_pool(conn, GTIN, 600, randbytes=seeded(3))
    assert again.count == 600 and not pool(conn, again.import_id) & set(old)
    assert dict(conn.execute("SELECT state, count(*) FROM serial WHERE import_id=? GROUP BY state",
                             (first.import_id,))) == states


def test_a_source_that_repeats_itself_is_refused_and_nothing_added(conn):
    before = snapshot(conn)
    with pytest.raises(serials.SerialError, match="random source gave serials already known"):
        serials.generate_pool(conn, GTIN, 50, user="ann", randbytes=lambda n: bytes(n))  # "000000000000" only
    after = snapshot(conn)
    assert after["serial"] == before["serial"] and after["audit"] == before["audit"]
    assert conn.execute("SELECT state FROM serial_import ORDER BY import_id DESC LIMIT 1").fetchone() == ("abandoned",)


def test_available_counts_what_allocate_could_take(conn):
    """Per import over serial_pick, less what is handed out or due upstream: the same as USABLE row by row."""
    serials.generate_pool(conn, GTIN, 400)
    now = time.time()
    with transaction(conn):
        staging = conn.execute("INSERT INTO serial_import (gtin, source, started_at, heartbeat) VALUES (?, 'f', ?, ?)",
                               (GTIN, now, now)).lastrowid
        conn.executemany("INSERT INTO serial (gtin, serial, source, import_id) VALUES (?, ?, 'f', ?)",
                         [(GTIN, s, staging) for s in serials.random_serials(EU.alphabet, 12, 30)])
        some = sorted(pool(conn) - pool(conn, staging))
        conn.executemany("INSERT INTO serial_grant (token, gtin, serial, user, at) VALUES ('t', ?, ?, 'ann', 0)",
                         [(GTIN, s) for s in some[:20]])
        conn.executemany("UPDATE serial_grant SET state='returned' WHERE gtin=? AND serial=?", [(GTIN, s) for s in some[:5]])
        conn.executemany("INSERT INTO serial_upstream_return (gtin, serial, source, batch_id, at) VALUES (?, ?, 'up', 'B1', 0)",
                         [(GTIN, s) for s in some[15:40]])
        serials.allocate(conn, "B1", GTIN, 7)
    (by_row,) = conn.execute(f"SELECT count(*) FROM serial WHERE gtin=? AND state='available' AND {serials.USABLE}",
                             (GTIN,)).fetchone()
    # 15 still out (5..19), 25 due upstream (15..39: 5 of them also out), 7 allocated
    assert serials.available(conn, GTIN) == by_row == 700 - 35 - 7


def test_the_pick_and_a_batch_use_their_partial_indexes(conn):
    plans = {
        "pick": (f"SELECT serial FROM serial WHERE gtin=? AND state='available' AND {serials.USABLE} LIMIT ?", (GTIN, 5)),
        "batch": ("SELECT state, count(*) FROM serial WHERE batch_id=? GROUP BY state", ("B1",)),
    }
    for name, (q, args) in plans.items():
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q, args))
        assert f"COVERING INDEX serial_{name}" in plan, plan
    # (a rowid table's index carries serial_id: the pick's index holds serial for it.) The seal part
    # serial3 reads a batch's rows in serial_batch's order, no sort
    table, where, order, _, _ = audit._PARTS["serial3"]
    plan = " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN SELECT * FROM {table} WHERE {where} ORDER BY {order}",
                                               {"key": "B1"}))
    assert "USING INDEX serial_batch" in plan and "TEMP B-TREE" not in plan, plan


def test_an_old_ledger_gains_the_partial_indexes_and_keeps_its_rules(tmp_path):
    path = str(tmp_path / "old.db")
    c = db.connect(path)
    masterdata.add_product(c, GTIN, "Aspirin", "EU_FMD", 7)
    serials.generate(c, GTIN, 50)
    with transaction(c):  # as ledgers were made before
        c.execute("DROP INDEX serial_pick")
        c.execute("CREATE INDEX serial_pick ON serial (gtin, state)")
        c.execute("DROP INDEX serial_batch")
        c.execute("CREATE INDEX serial_batch ON serial (batch_id, state)")
        c.execute("DROP TRIGGER serial_born")
        c.execute("CREATE TRIGGER serial_staged_only_while_staging BEFORE INSERT ON serial WHEN NEW.import_id IS NOT NULL"
                  " AND (SELECT state FROM serial_import WHERE import_id = NEW.import_id) IS NOT 'staging'"
                  " BEGIN SELECT RAISE(ABORT, 'serials are staged only into an import that is still staging'); END")
        c.execute("CREATE TRIGGER serial_born_available BEFORE INSERT ON serial WHEN NEW.state <> 'available'"
                  " BEGIN SELECT RAISE(ABORT, 'a new serial must be available'); END")
    c.close()
    c = db.connect(path)
    sql = dict(c.execute("SELECT name, sql FROM sqlite_master WHERE name IN ('serial_pick', 'serial_batch')"))
    assert sql == {"serial_pick": db.SERIAL_PICK.replace(" IF NOT EXISTS", ""),
                   "serial_batch": db.SERIAL_BATCH.replace(" IF NOT EXISTS", "")}
    triggers = {n for (n,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name='serial'")}
    assert "serial_born" in triggers and not triggers & {"serial_born_available", "serial_staged_only_while_staging"}
    with pytest.raises(sqlite3.IntegrityError, match="must be available"):
        c.execute("INSERT INTO serial (gtin, serial, state, source) VALUES (?, 'X1', 'printed', 'f')", (GTIN,))
    with pytest.raises(sqlite3.IntegrityError, match="staged only into an import that is still staging"):
        c.execute("INSERT INTO serial (gtin, serial, source, import_id) VALUES (?, 'X2', 'f', 1)", (GTIN,))
    assert serials.available(c, GTIN) == 50
    c.close()


# --- an interrupted `serialine batch serials --generate` -----------------------------------

# the real CLI with small chunks and a pause after each: 200 chunks take 100 s at least, it is
# signalled within the first ones
_CHILD = """import sys
from serialine.host import cli, serials
serials.CHUNK, serials.HOLD_S, serials.YIELD_S = 1000, None, 0.5
serials._pause = lambda held: 0.5
sys.exit(cli.main(sys.argv[1:]))"""


def start_generating(conn, n=200_000):
    path = db.file_of(conn)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, "batch", "serials", GTIN, "--generate", str(n),
                              "--db", path, "--user", "ann"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:  # until its first chunk is committed
        row = conn.execute("SELECT import_id, count FROM serial_import WHERE state='staging'").fetchone()
        if row and row[1] >= 1000:
            return child, row[0]
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child never staged a chunk"
        time.sleep(0.02)


def test_ctrl_c_adds_nothing_and_removes_what_was_staged(conn):
    before = snapshot(conn)
    child, import_id = start_generating(conn)
    assert len(pool(conn, import_id)) >= 1000 and serials.available(conn, GTIN) == 300  # staged: not usable
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    state, staged = conn.execute("SELECT state, count FROM serial_import WHERE import_id=?", (import_id,)).fetchone()
    assert state == "abandoned" and staged >= 1000
    assert f"interrupted: nothing added to the pool of {GTIN} ({staged:,} staged serials removed)" in err
    assert "Traceback" not in err and "serials added" not in out
    after = snapshot(conn)
    assert after["serial"] == before["serial"] and after["audit"] == before["audit"]


def test_a_killed_run_adds_nothing_and_the_next_one_removes_its_chunks(conn, monkeypatch):
    before = snapshot(conn)
    child, import_id = start_generating(conn)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL
    staged = pool(conn, import_id)
    assert len(staged) >= 1000 and (len(staged),) == conn.execute(
        "SELECT count FROM serial_import WHERE import_id=?", (import_id,)).fetchone()  # left behind, never usable:
    assert serials.available(conn, GTIN) == 300 and snapshot(conn)["audit"] == before["audit"]
    with transaction(conn):
        assert not set(serials.allocate(conn, "B1", GTIN, 300)) & staged
    monkeypatch.setattr(serials, "STALE_S", 0.0)  # as if 12 minutes had passed
    added = serials.generate_pool(conn, GTIN, 100)
    assert not pool(conn, import_id) and serials.available(conn, GTIN) == 100
    assert conn.execute("SELECT state FROM serial_import WHERE import_id=?", (import_id,)).fetchone() == ("abandoned",)
    assert added.count == 100


def test_what_an_interrupted_removal_left_is_removed_by_the_next_import(conn):
    now = time.time()
    with transaction(conn):
        imp = conn.execute("INSERT INTO serial_import (gtin, source, started_at, heartbeat) VALUES (?, 'generated', ?, ?)",
                           (GTIN, now, now)).lastrowid
        conn.executemany("INSERT INTO serial (gtin, serial, source, import_id) VALUES (?, ?, 'generated', ?)",
                         [(GTIN, s, imp) for s in serials.random_serials(EU.alphabet, 12, 40)])
        conn.execute("UPDATE serial_import SET state='abandoned', count=40 WHERE import_id=?", (imp,))
    assert len(pool(conn, imp)) == 40  # a second Ctrl-C stopped the removal here
    serials.generate_pool(conn, GTIN, 10)
    assert not pool(conn, imp) and serials.available(conn, GTIN) == 310


# --- a ledger made when the state CHECK was an IN list ----------------------------------------

def test_a_ledger_with_the_old_state_check_is_edited_in_place_and_its_seals_still_verify(tmp_path, capsys):
    """`state IN (8 values)` built an ephemeral table for every serial written (~1.2 us a row); the
    `=` chain admits the same states, so the text is edited in place and no row changes."""
    import oldledger
    path = tmp_path / "old.db"
    conn = oldledger.ledger(path, ("B1", "B2"))
    old, new = db._IN_LIST_CHECKS["serial"]
    (version,) = conn.execute("PRAGMA schema_version").fetchone()
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_master SET sql=replace(sql, ?, ?) WHERE type='table' AND name='serial'", (new, old))
    conn.execute(f"PRAGMA schema_version={version + 1}")
    conn.execute("PRAGMA writable_schema=OFF")
    serials.generate_pool(conn, GTIN, 500)
    for b in ("B1", "B2"):  # each batch: 3 packs made, 2 serials left allocated (back to the pool at close)
        masterdata.start_batch(conn, b)
        ledger = Ledger(conn, b)
        with transaction(conn):
            ledger.queue_codes(3)
            serials.allocate(conn, b, GTIN, 2)
        line = Line(ledger, boot_id=int(b[1:]))
        for u in range(3):
            line.unit(u)
    conn.close()
    assert cli_close(path, "B1") == 0, capsys.readouterr().err  # sealed under the old CHECK
    before = snapshot(db.connect(str(path)))["serial"]
    conn = db.connect(str(path))
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='serial'").fetchone()
    assert new in sql and old not in sql and "IN (" not in sql.split("state TEXT")[1].split(",")[0]
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert snapshot(conn)["serial"] == before
    conn.execute("BEGIN")  # the CHECK behind the insert trigger still refuses a state that is none
    conn.execute("DROP TRIGGER serial_born")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed: state = 'available' OR"):
        conn.execute("INSERT INTO serial (gtin, serial, source, state) VALUES (?, 'X1', 'f', 'lost')", (GTIN,))
    conn.execute("ROLLBACK")
    oldledger.close_and_verify(conn, path, capsys)  # B2 closed, every seal (B1's too) verifies


def cli_close(path, batch):
    from serialine.host import cli_batch
    return cli_batch.main(["close", batch, "--db", str(path), "--user", "qa"])


def test_a_pool_is_staged_without_row_by_row_foreign_keys_and_leaves_them_on(conn):
    seen = []
    conn.set_trace_callback(seen.append)
    serials.generate_pool(conn, GTIN, 500)
    conn.set_trace_callback(None)
    assert [s for s in seen if s.startswith("PRAGMA foreign_keys")] == ["PRAGMA foreign_keys=OFF", "PRAGMA foreign_keys=ON"]
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        conn.execute("INSERT INTO serial (gtin, serial, source) VALUES ('09999999999999', 'X1', 'f')")


def _index_leaves(conn) -> dict:
    return {page: cells for page, cells in conn.execute(
        "SELECT pageno, ncell FROM dbstat WHERE name = 'sqlite_autoindex_serial_1' AND pagetype = 'leaf'")}


def test_a_new_pool_touches_few_pages_of_the_serials_known_before(conn, monkeypatch):
    """Clustered: 2,000 serials under 2 random prefixes of 39,304 change a few of the UNIQUE index's
    pages holding the 20,000 known before (drawn uniformly, each of its pages would take some)."""
    serials.generate_pool(conn, GTIN, 20_000, randbytes=seeded(1))
    before = _index_leaves(conn)
    serials.generate_pool(conn, GTIN, 2_000, randbytes=seeded(2))
    after = _index_leaves(conn)
    touched = [page for page, cells in before.items() if after.get(page) != cells]
    assert len(before) > 100 and len(touched) <= len(before) // 20, (len(touched), len(before))
