"""The one way a command opens the ledger file, and the one place SQLite's wording becomes a
sentence. Only `serialine init` (or the first `batch product`) creates a ledger: a mistyped --db
must never become an empty ledger that then "verifies"."""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path

from . import db

# a file holding any of these is a ledger (an EPCIS outbox may live alone in its own file)
LEDGER_TABLES = ("batch", "epcis_outbox")


class LedgerFileError(Exception):
    """Missing file, not a ledger, unreadable: said in one line."""


def _tables(path: Path) -> set[str]:
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=30)
        try:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise LedgerFileError(f"{path} is not a Serialine ledger (not an SQLite database)") from None
        raise LedgerFileError(f"cannot read {path}: {sentence(exc)}") from None


def is_ledger(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and bool(_tables(path) & set(LEDGER_TABLES))


def open_ledger(path: str | Path, *, create: bool = False, schema: bool = True) -> sqlite3.Connection:
    """An existing ledger (create=True also makes a new one at a free path). schema=False gives a
    plain connection without the ledger's schema applied (the EPCIS commands)."""
    path = Path(path)
    if path.is_dir():
        raise LedgerFileError(f"{path} is a directory, not a ledger file")
    if not path.exists():
        if not create:
            raise LedgerFileError(f"no ledger at {path} (create one with serialine init --db {path})")
        if not path.parent.is_dir():
            raise LedgerFileError(f"cannot create a ledger at {path}: no directory {path.parent}")
    elif path.stat().st_size and not _tables(path) & set(LEDGER_TABLES):
        raise LedgerFileError(f"{path} is an SQLite database but not a Serialine ledger")
    elif not path.stat().st_size and not create:
        raise LedgerFileError(f"{path} is an empty file, not a ledger (create one with serialine init --db {path})")
    try:
        if schema:
            return db.connect(str(path))
        return sqlite3.connect(str(path), isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise LedgerFileError(f"cannot open the ledger {path}: {sentence(exc)}") from None


# SQLite's messages → what the ledger's rule means. Applied anywhere inside a message, so a
# domain error that quotes SQLite ("product X: UNIQUE constraint failed: …") reads well too.
_UNIQUE = {
    "product.gtin": "a product with this GTIN is already in the ledger",
    "batch.batch_id": "a batch with this id is already in the ledger",
    "serial.gtin, serial.serial": "this serial is already in the GTIN's pool (a serial is issued once)",
    "container.sscc": "this SSCC was already given (an SSCC is never reused)",
    "packed_row.serial_id": "this pack is already in a case (a pack is in one case at most)",
    "unit_row.serial_id": "this serial is already bound to another unit",
    "coder_job_row.serial_id": "this serial was already sent to a coder (a serial is printed once)",
}
_CHECK = {
    "expiry_is_a_date": "the expiry must be a real date, YYYY-MM-DD (or YYYY-MM-00: the month only)",
    "length(lot) BETWEEN 1 AND 20": "a lot has 1 to 20 characters",
    "planned > 0": "the planned quantity must be positive",
    "case_size > 0": "the case size must be positive",
    "pallet_size > 0": "the pallet size must be positive",
}
_PATTERNS = (
    (re.compile(r"UNIQUE constraint failed: ([\w.]+(?:, [\w.]+)*)"),
     lambda m: _UNIQUE.get(m[1], f"{m[1].replace('.', ' ')} is already in the ledger")),
    (re.compile(r"CHECK constraint failed: (.+)$"),
     lambda m: _CHECK.get(m[1].strip(), f"the ledger refuses this value (its rule: {m[1].strip()})")),
    (re.compile(r"NOT NULL constraint failed: (\w+)\.(\w+)"), lambda m: f"the {m[1]}'s {m[2]} is required"),
    (re.compile(r"FOREIGN KEY constraint failed"),
     lambda m: "it refers to a product, batch, serial or container the ledger does not have"),
    (re.compile(r"database is locked"),
     lambda m: "the ledger is busy: another process holds its write lock; nothing changed, try again"),
    (re.compile(r"attempt to write a readonly database"), lambda m: "the ledger file is read-only"),
    (re.compile(r"database or disk is full"), lambda m: "the disk holding the ledger is full; nothing changed"),
    (re.compile(r"^illegal serial state transition$"),
     lambda m: "illegal serial state change (available → allocated → printed → commissioned, or rejected, "
               "destroyed, sampled, decommissioned; never back)"),
)


def sentence(exc: BaseException | str) -> str:
    """One line a line engineer can act on, for any error the ledger raises."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for pattern, say in _PATTERNS:
        text = pattern.sub(say, text)
    return text


def fail(exc: BaseException | str) -> int:
    print(f"error: {sentence(exc)}", file=sys.stderr)
    return 1


def run(prog: str, fn, *args, **kwargs) -> int:
    """Call fn; an expected failure becomes one line on stderr and exit 1 (nothing changed:
    every command writes in one transaction). Programming errors still show their traceback."""
    try:
        return int(fn(*args, **kwargs) or 0)
    except (LedgerFileError, ValueError, sqlite3.DatabaseError, OSError) as exc:
        return fail(exc)
    except OverflowError:  # a number beyond SQLite's 64-bit integers, from any option
        return fail("a number given is too large (the ledger holds integers up to 2**63 - 1)")
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the ledger holds only what was committed", file=sys.stderr)
        return 130
