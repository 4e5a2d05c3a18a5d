"""Serial import beside a writer that holds the ledger's write lock nearly all the time (an
agent, a simulator in virtual time): each write is retried until the import's deadline, with a
progress line at most every PROGRESS_S; past the deadline one line and nothing published.
The other writer is a real second connection taking BEGIN IMMEDIATE again and again."""

import threading
import time

import pytest

from serialine.host import audit, cli, db, serials

from hostkit import GTIN


class Hog(threading.Thread):
    """Once the import is staging: holds the write lock for `first` s, then `hold` s at a time
    with `gap` s free between, until stopped (gap=None: holds until stopped)."""

    def __init__(self, path, first, hold, gap):
        super().__init__(daemon=True)
        self.path, self.first, self.hold, self.gap = path, first, hold, gap
        self.stop, self.held = threading.Event(), 0.0

    def run(self):
        c = db.connect(self.path)
        c.execute("PRAGMA busy_timeout=10000")
        while not c.execute("SELECT 1 FROM serial_import WHERE state='staging'").fetchone():
            time.sleep(0.002)
        span = self.first
        while not self.stop.is_set():
            c.execute("BEGIN IMMEDIATE")
            t = time.monotonic()
            self.stop.wait(span) if self.gap is None else time.sleep(span)
            self.held += time.monotonic() - t
            c.execute("COMMIT")
            if self.gap is None:
                break
            time.sleep(self.gap)
            span = self.hold
        c.close()


@pytest.fixture
def path(conn, monkeypatch, tmp_path):
    monkeypatch.setattr(db, "BUSY_TIMEOUT_S", 0.3)  # one statement's own wait: short, as under a busy line
    monkeypatch.setattr(serials, "CHUNK", 100)
    monkeypatch.setattr(serials, "PROGRESS_S", 1.0)
    return conn.execute("PRAGMA database_list").fetchone()[2]


def import_file(tmp_path, n):
    f = tmp_path / "pool.txt"
    f.write_text("".join(s + "\n" for s in serials.random_serials("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", 12, n)))
    return str(f)


def test_import_waits_out_a_writer_holding_the_lock_most_of_the_time(conn, path, tmp_path, capsys):
    f = import_file(tmp_path, 600)
    hog = Hog(path, first=2.5, hold=0.5, gap=0.05)  # ~90 % of the time the lock is taken
    hog.start()
    t = time.monotonic()
    try:
        rc = cli.main(["batch", "serials", GTIN, "--import", f, "--db", path, "--user", "qa"])
        took = time.monotonic() - t
    finally:
        hog.stop.set()
        hog.join()
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "600 serials added" in out and hog.held > 0.7 * took
    lines = [line for line in err.splitlines() if not line.startswith("warning: serial pool")]  # 900 < LOW_WATER
    assert lines and all(line.startswith("serials: ") for line in lines), err  # progress only, no error
    assert any("ledger busy: another writer holds the write lock; waiting" in line for line in lines)
    assert len(lines) <= took / serials.PROGRESS_S + 1
    assert serials.available(conn, GTIN) == 300 + 600
    assert conn.execute("SELECT state, count FROM serial_import ORDER BY import_id DESC LIMIT 1").fetchone() == \
        ("published", 600)
    assert [r for r in audit.records(conn) if r[3] == "serials.add"]


def test_import_gives_up_in_one_line_past_its_deadline_nothing_published(conn, path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(serials, "BUSY_DEADLINE_S", 1.5)
    monkeypatch.setattr(serials, "ATTEMPT_S", 0.4)
    f = import_file(tmp_path, 600)
    records = len(audit.records(conn))
    hog = Hog(path, first=None, hold=None, gap=None)  # takes the lock between two chunks and keeps it
    hog.start()
    try:
        rc = cli.main(["batch", "serials", GTIN, "--import", f, "--db", path, "--user", "qa"])
    finally:
        hog.stop.set()
        hog.join()
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert rc == 1 and last.startswith("error: serial import gave up: another writer held the ledger's write lock")
    assert "none published); nothing imported" in last
    assert all(line.startswith("serials: ") for line in err.splitlines()[:-1]), err
    assert serials.available(conn, GTIN) == 300 and len(audit.records(conn)) == records
    (state,) = conn.execute("SELECT state FROM serial_import ORDER BY import_id DESC LIMIT 1").fetchone()
    assert state in ("staging", "abandoned")  # never usable; a staging one is removed by a later import
