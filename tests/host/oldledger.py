"""A ledger as an older release sealed it, for the migration tests of a table's compact form
(test_devevents, test_serial_history): the ledger, audit records appended as that release wrote them,
and the end of every such test (the next batch closed, `audit verify` passing; an old row edited
behind the project's back, verify failing). Imported by name (tests/host has no __init__.py)."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from serialine.host import audit, cli_batch, db, masterdata, serials
from serialine.host.db import transaction
from serialine.host.ledger import Ledger

from hostkit import GTIN, Line


def ledger(path, batches=("B1",)):
    """A ledger at `path` with one product, serials 000000000000..039 from a file and `batches` created
    (not started). The test puts its table into the old form."""
    conn = db.connect(str(path))
    masterdata.add_product(conn, GTIN, "Aspirin 100 mg", "EU_FMD", 7)
    conn.executemany("INSERT INTO serial (gtin, serial, source) VALUES (?, ?, 'file')",
                     [(GTIN, f"{i:012d}") for i in range(40)])
    for b in batches:
        masterdata.create_batch(conn, b, GTIN, "L" + b, "2030-01-31", 10, 3, 2)
    return conn


def run(conn, batch, units, queued=2, allocated=0, close_cases=False):
    """`batch` started and `units` passed packs played on a boot of its own (B2: boot 2), with
    `queued` coder jobs more than units left queued and `allocated` serials left allocated (both go
    back at close); `close_cases`: its open case and pallet closed, as a close does. The Line."""
    masterdata.start_batch(conn, batch)
    ledger = Ledger(conn, batch)
    with transaction(conn):
        ledger.queue_codes(units + queued)
        if allocated:
            serials.allocate(conn, batch, GTIN, allocated)
    line = Line(ledger, boot_id=int(batch[1:]))
    for u in range(units):
        line.unit(u)
    if close_cases:
        with transaction(conn):
            ledger.agg.close_partial()
    return line


def digest(rows) -> str:
    """A seal's digest as audit wrote it: one JSON line per row."""
    return hashlib.sha256("".join(json.dumps(list(r), ensure_ascii=False, separators=(",", ":")) + "\n"
                                  for r in rows).encode()).hexdigest()


def part(cols, rows, upto=None) -> dict:
    """A sealed part as the old release wrote it: its columns, its bound (if it had one), rows, digest."""
    return {"cols": cols, **({} if upto is None else {"upto": upto}), "rows": len(rows), "sha256": digest(rows)}


def seal(conn, action, detail, user="qa"):
    """An audit record as the old release appended it (its chain, the given detail)."""
    seq, prev = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone() or (0, audit.GENESIS)
    at, text = "2026-12-01T12:00:00.000000+00:00", json.dumps(detail, sort_keys=True, separators=(",", ":"))
    conn.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?)",
                 (seq + 1, at, user, action, text, prev, audit._digest(prev, seq + 1, at, user, action, text)))


def close_states(conn, batch, *sql):
    """A batch closed as the old release did before it sealed: closing, `sql`, closed (one transaction)."""
    with transaction(conn):
        conn.execute("UPDATE batch SET state='closing' WHERE batch_id=?", (batch,))
        for s in sql:
            conn.execute(s)
        conn.execute("UPDATE batch SET state='closed' WHERE batch_id=?", (batch,))


def close_and_verify(conn, path, capsys, batch="B2"):
    """After the migration: a checkpoint on `conn` (then closed), `batch close` of `batch`, and
    `audit verify` passes, the old seals with the new."""
    audit.checkpoint(conn, "qa")
    conn.close()
    rc = cli_batch.main(["close", batch, "--db", str(path), "--user", "qa"])
    err = capsys.readouterr().err
    assert rc == 0, f"batch close {batch} exited {rc}:\n{err}"
    rc = cli_batch.audit_main(["verify", "--db", str(path)])
    err = capsys.readouterr().err
    assert rc == 0, f"audit verify exited {rc}:\n{err}"


def migration_refused(path, match: str, *sql) -> sqlite3.Connection:
    """`sql` run on the ledger by plain sqlite3 (behind the project's back): db.connect refuses to
    migrate it (IntegrityError matching `match`) and every row stays as it was. → a plain sqlite3
    connection to it (the caller closes it)."""
    c = sqlite3.connect(path)
    for s in sql:
        c.execute(s)
    c.commit()
    before = db.snapshot(c)
    c.close()
    with pytest.raises(sqlite3.IntegrityError, match=match):
        db.connect(str(path))
    c = sqlite3.connect(path)
    assert db.snapshot(c) == before
    return c


def verify_after_edit(path, capsys, *sql) -> str:
    """`sql` run on the ledger by plain sqlite3 (behind the project's back): `audit verify` fails;
    its stderr."""
    c = sqlite3.connect(path)
    for s in sql:
        c.execute(s)
    c.commit()
    c.close()
    capsys.readouterr()
    rc = cli_batch.audit_main(["verify", "--db", str(path)])
    err = capsys.readouterr().err
    assert rc == 1, f"audit verify exited {rc} after the edit:\n{err}"
    return err


# serial as made before serial_id (e429782): WITHOUT ROWID, keyed by (gtin, serial); its pick index then
OLD_SERIAL = f"""CREATE TABLE serial_old (
        gtin TEXT NOT NULL REFERENCES product (gtin),
        serial TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'available' CHECK ({db._SERIAL_STATE}),
        batch_id TEXT REFERENCES batch (batch_id),
        source TEXT NOT NULL,
        import_id INTEGER REFERENCES serial_import (import_id),
        PRIMARY KEY (gtin, serial)) WITHOUT ROWID"""
OLD_SERIAL_PICK = "CREATE INDEX serial_pick ON serial (gtin, state, import_id) WHERE state = 'available'"
# packed as made before packed_row: a table keyed by (gtin, serial), its index, then its rules on it
OLD_PACKED = (
    """CREATE TABLE packed (
        gtin TEXT NOT NULL, serial TEXT NOT NULL,
        container_id INTEGER NOT NULL REFERENCES container (container_id),
        PRIMARY KEY (gtin, serial),
        FOREIGN KEY (gtin, serial) REFERENCES serial (gtin, serial))""",
    "CREATE INDEX packed_by_container ON packed (container_id)")
OLD_PACKED_RULES = (
    """CREATE TRIGGER packed_only_commissioned BEFORE INSERT ON packed
        WHEN (SELECT state FROM serial WHERE gtin = NEW.gtin AND serial = NEW.serial) IS NOT 'commissioned'
        BEGIN SELECT RAISE(ABORT, 'only a commissioned pack can be packed (destroyed, sampled, rejected or decommissioned packs cannot)'); END""",
    """CREATE TRIGGER packed_into_open_case BEFORE INSERT ON packed
        WHEN (SELECT level || '/' || state FROM container WHERE container_id = NEW.container_id) IS NOT 'case/open'
        BEGIN SELECT RAISE(ABORT, 'packs go only into an open case'); END""",
    """CREATE TRIGGER shipped_packs_fixed BEFORE DELETE ON packed
        WHEN EXISTS (SELECT 1 FROM container c JOIN shipped s
                     ON s.sscc IN (c.sscc, (SELECT sscc FROM container WHERE container_id = c.parent_id))
                     WHERE c.container_id = OLD.container_id)
        BEGIN SELECT RAISE(ABORT, 'this pack has been shipped: it left the site'); END""")


def _packed_before_serial_id(conn):
    """packed_row (and its view packed) back into the table packed, the same rows, its rules after them."""
    rows = conn.execute("SELECT gtin, serial, container_id FROM packed").fetchall()
    conn.execute("DROP VIEW packed")  # its INSTEAD OF triggers with it
    conn.execute("DROP TABLE packed_row")  # its rules and index with it
    for sql in OLD_PACKED:
        conn.execute(sql)
    conn.executemany("INSERT INTO packed VALUES (?, ?, ?)", rows)
    for sql in OLD_PACKED_RULES:
        conn.execute(sql)


# unit as made before unit_row (the base of issue 16): a table with the pack's (gtin, serial)
OLD_UNIT = (
    f"""CREATE TABLE unit (
        device_id TEXT NOT NULL, boot_id INTEGER NOT NULL, unit_seq INTEGER NOT NULL,
        batch_id TEXT NOT NULL REFERENCES batch (batch_id),
        test INTEGER NOT NULL DEFAULT 0,
        gtin TEXT, serial TEXT,
        inspected INTEGER NOT NULL DEFAULT 0,
        read_serial TEXT, grade TEXT,
        verdict TEXT CHECK (verdict IN ('PASS', 'FAIL')), verdict_reason TEXT,
        outcome TEXT CHECK ({db._UNIT_OUTCOME}),
        reason TEXT,
        PRIMARY KEY (device_id, boot_id, unit_seq),
        FOREIGN KEY (gtin, serial) REFERENCES serial (gtin, serial))""",
    "CREATE UNIQUE INDEX unit_serial_once ON unit (gtin, serial) WHERE serial IS NOT NULL",
    "CREATE INDEX unit_batch ON unit (batch_id, outcome)")


def _unit_before_serial_id(conn):
    """unit_row (and its view unit) back into the table unit, the same rows."""
    rows = conn.execute(f"SELECT {db._UNIT_COLS} FROM unit").fetchall()
    conn.execute("DROP VIEW unit")  # its INSTEAD OF triggers with it
    conn.execute("DROP TABLE unit_row")  # its indexes and rule with it
    for sql in OLD_UNIT:
        conn.execute(sql)
    conn.executemany(f"INSERT INTO unit VALUES ({', '.join('?' * 14)})", rows)


def _coder_job_before_serial_id(conn):
    """coder_job_row by serial_id back into its form with (gtin, serial), the same rows and job_id
    counter; the seal part coder_job_row read that table itself (here: a view of all of it)."""
    rows = conn.execute("SELECT job_id, batch_id, gtin, serial, code, state FROM coder_job_row_v1").fetchall()
    (seq,) = conn.execute("SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'coder_job_row'").fetchone()
    for name in ("VIEW coder_job", "VIEW coder_job_row_v1", "TABLE coder_job_row"):
        conn.execute(f"DROP {name}")
    for sql in (db._CODER_JOB_V1[0], db._CODER_JOB_V1[-1], *db.CODER_JOB[-2:],
                "CREATE VIEW coder_job_row_v1 AS SELECT * FROM coder_job_row"):
        conn.execute(sql)
    conn.executemany("INSERT INTO coder_job_row VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'coder_job_row'", (seq,))


def before_serial_id(conn):
    """Put `conn`'s tables into their form before serial_id (issue 16): the tables that refer to a
    serial by serial_id first (their owners add theirs here), then serial itself (rows, triggers,
    indexes): WITHOUT ROWID, keyed by (gtin, serial)."""
    triggers = [sql for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE type='trigger' AND tbl_name='serial'")]
    conn.execute("PRAGMA foreign_keys=OFF")
    with transaction(conn):
        _packed_before_serial_id(conn)
        _unit_before_serial_id(conn)
        _coder_job_before_serial_id(conn)
        conn.execute(OLD_SERIAL)
        conn.execute("INSERT INTO serial_old SELECT gtin, serial, state, batch_id, source, import_id FROM serial")
        conn.execute("DROP TABLE serial")
        conn.execute("PRAGMA legacy_alter_table=ON")
        conn.execute("ALTER TABLE serial_old RENAME TO serial")
        conn.execute("PRAGMA legacy_alter_table=OFF")
        for sql in [*triggers, OLD_SERIAL_PICK, db.SERIAL_BATCH]:
            conn.execute(sql)
    conn.execute("PRAGMA foreign_keys=ON")
    assert "serial_id" not in {r[1] for r in conn.execute("PRAGMA table_info(serial)")}
