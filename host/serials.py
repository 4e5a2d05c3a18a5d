"""Serial number pools per GTIN: generated (cryptographically random, the market's alphabet and
length) or imported from the enterprise level; allocated to a batch when queued to the coder.
The database's primary key (gtin, serial) and its triggers make a second issue impossible."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

from . import gs1
from .db import transaction
from .masterdata import PROFILES

LOW_WATER = 1000  # warn when fewer serials than this are available for a GTIN


class SerialError(ValueError):
    pass


def guess_probability(pool_size: int, alphabet_size: int, length: int) -> float:
    """Chance that one random guess hits a valid serial: valid serials / possible serials."""
    return pool_size / float(alphabet_size) ** length


def _profile_for(conn, gtin):
    row = conn.execute("SELECT market FROM product WHERE gtin=?", (gtin,)).fetchone()
    if row is None:
        raise SerialError(f"unknown GTIN {gtin}")
    return PROFILES[row[0]]


def _check_guess(conn, gtin, adding: int, profile, length: int, alphabet_size: int) -> None:
    (existing,) = conn.execute("SELECT count(*) FROM serial WHERE gtin=?", (gtin,)).fetchone()
    p = guess_probability(existing + adding, alphabet_size, length)
    if not p < profile.max_guess_probability:
        raise SerialError(
            f"pool for {gtin} refused: {existing + adding} serials of {length} characters from "
            f"{alphabet_size} gives a guess probability of {p:.3g}, not below "
            f"{profile.max_guess_probability:g} (EU 2016/161 art. 4)")


def random_serials(alphabet: str, length: int, count: int) -> list[str]:
    """Uniform, cryptographically random strings (rejection sampling keeps them unbiased)."""
    n = len(alphabet)
    limit = 256 - 256 % n
    out, need = [], count * length
    chars: list[str] = []
    while len(chars) < need:
        chars.extend(alphabet[b % n] for b in secrets.token_bytes(need - len(chars) + 16) if b < limit)
    chars = chars[:need]
    for i in range(count):
        out.append("".join(chars[i * length:(i + 1) * length]))
    return out


def generate(conn: sqlite3.Connection, gtin: str, count: int) -> int:
    """Add `count` new random serials to the GTIN's pool (one transaction). Returns count."""
    profile = _profile_for(conn, gtin)
    if count <= 0:
        raise SerialError("count must be positive")
    with transaction(conn):
        _check_guess(conn, gtin, count, profile, profile.serial_length, len(profile.alphabet))
        added = 0
        while added < count:  # collisions with existing serials are skipped and drawn again
            rows = [(gtin, s) for s in random_serials(profile.alphabet, profile.serial_length, count - added)]
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO serial (gtin, serial, source) VALUES (?, ?, 'generated')", rows)
            added += conn.total_changes - before
    return count


def read_import_file(path: str | Path) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8", errors="strict").splitlines()
    return [ln.strip() for ln in lines if ln.strip()]


def import_serials(conn: sqlite3.Connection, gtin: str, serials: list[str], source: str = "import") -> int:
    """Import the enterprise's serials: all valid and new, or nothing (errors name the serials)."""
    profile = _profile_for(conn, gtin)
    bad = [s for s in serials if not (1 <= len(s) <= 20 and set(s) <= gs1.CSET82)]
    if bad:
        raise SerialError(f"{len(bad)} serial(s) with bad characters or length: {bad[:10]!r}")
    seen, dups = set(), []
    for s in serials:
        (dups.append(s) if s in seen else seen.add(s))
    if dups:
        raise SerialError(f"{len(dups)} duplicate serial(s) in the file: {dups[:10]!r}")
    length = min(len(s) for s in serials) if serials else 0
    alphabet = set("".join(serials))
    with transaction(conn):
        known = [s for (s,) in conn.execute(
            "SELECT serial FROM serial WHERE gtin=? AND serial IN (SELECT value FROM json_each(?))",
            (gtin, __import__("json").dumps(serials)))]
        if known:
            raise SerialError(f"{len(known)} serial(s) already known for {gtin}: {known[:10]!r}")
        if serials:
            _check_guess(conn, gtin, len(serials), profile, length, max(len(alphabet), 1))
        conn.executemany("INSERT INTO serial (gtin, serial, source) VALUES (?, ?, ?)",
                         [(gtin, s, source) for s in serials])
    return len(serials)


def allocate(conn: sqlite3.Connection, batch_id: str, gtin: str, count: int) -> list[str]:
    """Take `count` available serials for the batch. Call inside the caller's transaction."""
    rows = conn.execute("SELECT serial FROM serial WHERE gtin=? AND state='available' LIMIT ?",
                        (gtin, count)).fetchall()
    if len(rows) < count:
        raise SerialError(f"pool for {gtin} exhausted: {len(rows)} available, {count} needed")
    picked = [r[0] for r in rows]
    conn.executemany("UPDATE serial SET state='allocated', batch_id=? WHERE gtin=? AND serial=? AND state='available'",
                     [(batch_id, gtin, s) for s in picked])
    return picked


def available(conn: sqlite3.Connection, gtin: str) -> int:
    return conn.execute("SELECT count(*) FROM serial WHERE gtin=? AND state='available'", (gtin,)).fetchone()[0]


def low_water(conn: sqlite3.Connection, gtin: str, threshold: int = LOW_WATER) -> str | None:
    """A warning text when the pool runs low, else None."""
    n = conn.execute("SELECT count(*) FROM (SELECT 1 FROM serial WHERE gtin=? AND state='available' LIMIT ?)",
                     (gtin, threshold)).fetchone()[0]  # bounded: cheap enough for every coder top-up
    return f"serial pool for {gtin} is low: {n} available (< {threshold})" if n < threshold else None
