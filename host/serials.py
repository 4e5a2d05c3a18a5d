"""Serial number pools per GTIN: generated (cryptographically random, the market's alphabet and
length) or imported from the enterprise level; allocated to a batch when queued to the coder.
The database's UNIQUE (gtin, serial) and its triggers make a second issue impossible.

A pool is added in chunks of CHUNK serials, each its own short write transaction (a line's agent
keeps writing meanwhile), into a `serial_import` that is `staging`; one last transaction
publishes it with its audit record. Until then nobody can use its serials; a failed or killed
import is abandoned and its staged serials removed (they were never in the pool). A write that
finds the lock taken (an agent, a simulator) is retried, for BUSY_DEADLINE_S in all, with a
progress line at most every PROGRESS_S. A generated pool is drawn one chunk at a time, in the
pause before its write, stratified by prefix so that each chunk is one range of keys
(drawn_chunks), its chunks sized to hold the lock about HOLD_S. Staged chunks are written without
an fsync of their own and checkpointed outside their lock; the publication syncs them all. A
chunk's one INSERT proves serial_born's rule for its rows and runs without that row trigger, inside
its own transaction only (_without_born)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import secrets
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import audit, db, gs1
from .db import transaction
from .masterdata import PROFILES

LOW_WATER = 1000  # warn when fewer serials than this are available for a GTIN
CHUNK = 25_000  # serials per write transaction while staging (a fraction of a second of write lock)
DRAWN = 8  # a generated chunk (one draw) holds at most DRAWN * CHUNK serials (memory: one draw, whatever N)
# a generated pool sizes its chunks to hold the write lock about this long, by the serials per second
# this machine does (CHUNK / 4 .. DRAWN * CHUNK). None: CHUNK each. Short holds need short pauses
# (_pause): 0.1 s costs a 0.035 s pause (35 %; 0.25 s needed 0.11 s, 44 %), which the chunk's
# checkpoint and the next chunk's encoding fill
HOLD_S: float | None = 0.1
YIELD_S = 0.11  # the longest pause between chunks: over SQLite's longest busy-handler sleep (100 ms)
# a writer that finds the lock taken sleeps this long, again and again (SQLite's default busy handler)
BUSY_SLEEPS_MS = (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)
BUSY_DEADLINE_S = 600.0  # an import waits this long in all for other writers' locks, then gives up
ATTEMPT_S = 2.0  # one wait for the lock (SQLite polls meanwhile), then a progress line and the next try
PROGRESS_S = 5.0  # at most this often a progress line
# a staging import without progress this long was killed: abandoned by the next one (longer than a
# live import may wait for the lock)
STALE_S = BUSY_DEADLINE_S + 120.0
STAGING_CACHE_KIB = 16384  # the page cache while staging (db.connect's is larger, for the host path)
REDRAWS = 20  # a chunk's collisions drawn again at most this often (a sound source needs one, rarely)
SPREAD = 64  # a generated pool lies under at most this share (1 / SPREAD) of its prefixes (clusters)
# ... unless one known serial would then guess others within this factor of the market's max (clusters)
KNOWN_MARGIN = 100

# a serial's rows are usable when not part of an import still staging (or abandoned)
USABLE = ("NOT EXISTS (SELECT 1 FROM serial_import i WHERE i.import_id = serial.import_id"
          " AND i.state <> 'published')"
          # ... nor handed out over OPEN-SCS and not returned (host/db.py serial_grant)
          " AND NOT EXISTS (SELECT 1 FROM serial_grant g WHERE g.gtin = serial.gtin AND g.serial = serial.serial"
          " AND g.state <> 'returned')"
          # ... nor due back to the upstream pool it came from (host/db.py serial_upstream_return)
          " AND NOT EXISTS (SELECT 1 FROM serial_upstream_return r WHERE r.gtin = serial.gtin"
          " AND r.serial = serial.serial)")

_SERIAL = re.compile("[" + re.escape("".join(sorted(gs1.CSET82))) + "]{1,20}")


class SerialError(ValueError):
    pass


class GenerationInterrupted(KeyboardInterrupt):
    """Ctrl-C while adding to a pool: nothing was added (the staged serials are removed)."""


def guess_probability(pool_size: int, alphabet_size: int, length: int) -> float:
    """Chance that one random guess hits a valid serial: valid serials / possible serials."""
    return pool_size / float(alphabet_size) ** length


def _profile_for(conn, gtin):
    row = conn.execute("SELECT market FROM product WHERE gtin=?", (gtin,)).fetchone()
    if row is None:
        raise SerialError(f"unknown GTIN {gtin}")
    return PROFILES[row[0]]


MIN_SERIAL_ROW_BYTES = 16  # a serial row holds its 14-digit GTIN, the serial and its state at least


def _check_guess(conn, gtin, adding: int, profile, length: int, alphabet_size: int) -> None:
    # the ledger's size bounds its serials: counting them (a scan of the pool, 0.05 s per million)
    # only when that bound is not enough
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    bound = pages * page_size // MIN_SERIAL_ROW_BYTES
    if guess_probability(bound + adding, alphabet_size, length) < profile.max_guess_probability:
        return
    (existing,) = conn.execute("SELECT count(*) FROM serial WHERE gtin=?", (gtin,)).fetchone()
    p = guess_probability(existing + adding, alphabet_size, length)
    if not p < profile.max_guess_probability:
        raise SerialError(
            f"pool for {gtin} refused: {existing + adding} serials of {length} characters from "
            f"{alphabet_size} gives a guess probability of {p:.3g}, not below "
            f"{profile.max_guess_probability:g} (EU 2016/161 art. 4)")


# --- how random a pool is -------------------------------------------------------------------


@dataclass(frozen=True)
class Randomness:
    """Estimates from the serials themselves (whatever their author claims).
    positions/alphabet: how many character positions vary and over how many characters; the
    gap figures come from the serials in order as numbers: a sequential or strided range has
    one gap everywhere, and from one serial anyone gets the next."""
    count: int
    varying_positions: int
    length: int
    alphabet: int
    space_bits: float  # log2 of the space the varying positions span
    typical_gap_bits: float  # mean log2 of the gaps between neighbours in order
    repeated_gap_share: float  # (count of the commonest gap - 1) / gaps: 0 for random, 1 for a stride
    guess_probability: float  # the worst of: pool / space, 1 / typical gap, repeated gaps

    @property
    def predictable(self) -> bool:
        return not self.guess_probability < 1e-4

    def text(self) -> str:
        return (f"randomness of {self.count} serials: {self.varying_positions} of {self.length} positions vary over "
                f"{self.alphabet} characters ({self.space_bits:.1f} bits); neighbours differ by about "
                f"2^{self.typical_gap_bits:.1f}, {100 * self.repeated_gap_share:.1f} % of gaps repeat; "
                f"estimated guess probability {self.guess_probability:.3g}"
                + (" — predictable" if self.predictable else ""))


def randomness(serials: list[str]) -> Randomness:
    """Worst case over the groups of equal length (each its own number space)."""
    by_len: dict[int, list[str]] = {}
    for s in serials:
        by_len.setdefault(len(s), []).append(s)
    worst = max((_randomness(group) for group in by_len.values()), key=lambda r: r.guess_probability)
    return dataclasses.replace(worst, count=len(serials))


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_DIGITS_UPPER = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _randomness(serials: list[str]) -> Randomness:
    n, length = len(serials), len(serials[0])
    columns = [{s[i] for s in serials} for i in range(length)]
    varying = [i for i, col in enumerate(columns) if len(col) > 1 or n == 1]  # one serial: judged by its own characters
    chars = sorted(set().union(*(columns[i] for i in varying)) if n > 1 else set(serials[0]))
    k = max(len(chars), 1)
    space_bits = len(varying) * math.log2(k) if k > 1 else 0.0
    # the serials as numbers, sorted: their gaps. A counter may count in decimal, in base 36 or in the
    # alphabet it uses, so each reading is tried and the most predictable one counts.
    readings = []
    if k > 1 and varying:
        if all(c in _DIGITS[:10] for c in chars):
            readings.append(int)
        if all(c in _DIGITS_UPPER for c in chars):
            readings.append(lambda s: int(s, 36))
        if k <= 36:
            table = str.maketrans({c: _DIGITS[i] for i, c in enumerate(chars)})
            readings.append(lambda s: int("".join(s[i] for i in varying).translate(table), k))
        else:
            rank = {c: i for i, c in enumerate(chars)}
            readings.append(lambda s: sum(rank[s[i]] * k ** (len(varying) - 1 - j) for j, i in enumerate(varying)))
    gap_bits, repeated = (space_bits, 0.0) if n == 1 else (0.0, 1.0)
    for i, reading in enumerate(readings):
        values = sorted(map(reading, serials))
        gaps = [b - a for a, b in zip(values, values[1:]) if b != a]
        if gaps:
            bits = sum(math.log2(g) for g in gaps) / len(gaps)
            # guessing "the last one plus the commonest gap": right this often beyond the first time
            rep = (max(Counter(gaps).values()) - 1) / len(gaps)
            gap_bits, repeated = (bits, rep) if i == 0 else (min(gap_bits, bits), max(repeated, rep))
    p = max(n / 2 ** space_bits if space_bits < 1024 else 0.0, 2 ** -gap_bits, repeated)
    return Randomness(n, len(varying), length, k, space_bits, gap_bits, repeated, min(p, 1.0))


# --- import files ---------------------------------------------------------------------------


def read_import_file(path: str | Path) -> list[str]:
    """One serial per line, each line ending in "\\n" and holding exactly the serial: nothing is
    stripped or split elsewhere (no CR, GS, form feed, NEL, U+2028 ...). All good, or an error
    naming the first bad line (and how many more there are)."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SerialError(f"{path}: line {line}: not UTF-8 (byte {data[exc.start]:#04x})") from None
    if not text:
        raise SerialError(f"{path}: empty file, no serials")
    if not text.endswith("\n"):
        raise SerialError(f"{path}: line {text.count(chr(10)) + 1} does not end in a newline: the file may be cut short")
    lines = text[:-1].split("\n")
    bad = [(no, why) for no, line in enumerate(lines, 1) if (why := _bad_line(line))]
    if bad:
        no, why = bad[0]
        more = f" (and {len(bad) - 1} more bad line(s))" if len(bad) > 1 else ""
        raise SerialError(f"{path}: line {no}: {why}{more}; nothing imported")
    first: dict[str, int] = {}
    for no, line in enumerate(lines, 1):
        if line in first:
            raise SerialError(f"{path}: line {no}: duplicate serial {line!r} (also line {first[line]}); nothing imported")
        first[line] = no
    return lines


def _bad_line(line: str) -> str | None:
    if _SERIAL.fullmatch(line):
        return None
    if not line:
        return "empty line"
    if line != line.strip() or line.endswith("\r"):
        return f"whitespace around the serial {line!r} (records are the serial and \"\\n\", nothing else)"
    if len(line) > 20:
        return f"bad characters or length: {len(line)} characters, a serial has 1 to 20: {line[:30]!r}"
    others = sorted(set(line) - gs1.CSET82)
    return f"bad characters {others!r} in {line!r} (GS1 AI 21 takes the 82 characters of CSET 82)"


# --- adding to a pool -----------------------------------------------------------------------


@dataclass(frozen=True)
class Added:
    count: int
    import_id: int
    randomness: Randomness | None  # imported pools only
    chunks: int
    longest_write_s: float  # the longest any one of this import's write transactions held the lock
    statement: str = ""  # how random the pool is, in one line


def _check_file(serials: list[str]) -> None:
    bad = [s for s in serials if not (isinstance(s, str) and _SERIAL.fullmatch(s))]
    if bad:
        raise SerialError(f"{len(bad)} serial(s) with bad characters or length: {bad[:10]!r}")
    seen, dups = set(), []
    for s in serials:
        (dups.append(s) if s in seen else seen.add(s))
    if dups:
        raise SerialError(f"{len(dups)} duplicate serial(s) in the file: {dups[:10]!r}")


def import_serials(conn: sqlite3.Connection, gtin: str, serials: list[str], source: str = "import",
                   user: str | None = None, progress=None) -> Added:
    """Import the enterprise's serials: all valid, new and (for a randomised market) unpredictable,
    or nothing. `user` given: the publication is audited in its own transaction. progress(line):
    how far it got and what it waits for, at most every PROGRESS_S."""
    profile = _profile_for(conn, gtin)
    if not serials:
        raise SerialError("no serials to import")
    _check_file(serials)
    rnd = randomness(serials)
    if profile.randomised and rnd.predictable:
        raise SerialError(f"pool for {gtin} refused: {rnd.text()}; market {profile.name} requires randomised "
                          "serials (EU 2016/161 art. 4(b)): nothing imported")
    length = min(len(s) for s in serials)
    alphabet = len(set("".join(serials)))
    _check_guess(conn, gtin, len(serials), profile, length, max(alphabet, 1))
    known = []
    for i in range(0, len(serials), CHUNK):  # read-only: no write lock
        known += [s for (s,) in conn.execute(
            "SELECT serial FROM serial WHERE gtin=? AND serial IN (SELECT value FROM json_each(?))",
            (gtin, json.dumps(serials[i:i + CHUNK])))]
        if len(known) >= 10:
            break
    if known:
        raise SerialError(f"serial(s) already known for {gtin}: {known[:10]!r}; nothing imported")
    ordered = sorted(serials)  # in key order each chunk fills neighbouring pages, not a page per serial
    chunks = ((ordered[i:i + CHUNK], None) for i in range(0, len(ordered), CHUNK))

    def check():
        _check_guess(conn, gtin, 0, profile, length, max(alphabet, 1))
    added = _stage_and_publish(conn, gtin, source, chunks, user, check, rnd, ignore_known=False,
                               total=len(serials), progress=progress)
    return dataclasses.replace(added, statement=rnd.text())


def random_serials(alphabet: str, length: int, count: int, randbytes=secrets.token_bytes) -> list[str]:
    """Uniform, cryptographically random strings (rejection sampling keeps them unbiased: a byte
    of the source is kept only below the largest multiple of the alphabet's size). randbytes(n):
    the source, the OS's by default (tests inject a seeded one)."""
    n = len(alphabet)
    limit = 256 - 256 % n
    need = count * length
    if alphabet.isascii():  # the byte → character map and the rejection in one C pass
        table = bytes(ord(alphabet[b % n]) for b in range(limit)) + bytes(256 - limit)
        drop = bytes(range(limit, 256))
        got = bytearray()
        while len(got) < need:
            left = need - len(got)
            got += randbytes(left + left // 8 + 16).translate(table, drop)
        # cut by the regex engine: a third faster than slicing in a comprehension
        return re.findall(f".{{{length}}}", got[:need].decode("ascii"), re.S)
    chars: list[str] = []
    while len(chars) < need:
        chars.extend(alphabet[b % n] for b in randbytes(need - len(chars) + 16) if b < limit)
    return ["".join(chars[i * length:(i + 1) * length]) for i in range(count)]


def _below(n: int, randbytes) -> int:
    """Uniform in [0, n) (rejection, no modulo bias)."""
    bits = max(1, (n - 1).bit_length())
    while True:
        v = int.from_bytes(randbytes((bits + 7) // 8), "big") >> (-bits % 8)
        if v < n:
            return v


def clusters(alphabet: str, length: int, count: int, max_guess: float = 1e-4) -> tuple[int, int]:
    """(p, k): a generated pool goes under k prefixes of p characters, each with a share of at most
    CHUNK / 16 (a draw is close to the size asked), the k at most 1 / SPREAD of all p-character
    prefixes (p at most half the length), but never so few that one known serial, which tells its
    prefix, makes the rest of its prefix's share guessed with more than max_guess / KNOWN_MARGIN
    (then as many as that needs, all of them at worst: the pool spread over every prefix, uniform).
    A draw of any chunk's size is a few prefixes, so each write transaction touches one neighbourhood
    of the pool's B-trees; and the pool as a whole lies in k / a ** p of the key space, so it touches
    that share of the serials known before, not a page of every neighbourhood (which made the pool's
    growth cost in the pool's size: random keys split every page)."""
    a = len(alphabet)
    k0 = max(1, -(-count // max(1, CHUNK // 16)))
    # knowing one serial: share / a ** (length - p) = (count / a ** length) / (k / a ** p)
    least = min(1.0, KNOWN_MARGIN * count / (max_guess * float(a) ** length))
    p = 0
    while a ** p < k0 * min(SPREAD, 1 / least) and p < length // 2:
        p += 1
    return p, min(a ** p, max(k0, math.ceil(least * a ** p)))


def _prefix(alphabet: str, p: int, j: int) -> str:
    """The j-th string of p characters in key order."""
    order, out = sorted(alphabet), []
    for _ in range(p):
        j, d = divmod(j, len(order))
        out.append(order[d])
    return "".join(reversed(out))


def _chosen(m: int, k: int, randbytes) -> list[int]:
    """k distinct numbers uniform in [0, m), ascending (k <= m; k is at most m / SPREAD but for tiny spaces)."""
    if k * 2 > m:  # (most of them: which to leave out)
        out = set(range(m))
        while len(out) > k:
            out.discard(_below(m, randbytes))
        return sorted(out)
    got: set[int] = set()
    while len(got) < k:
        got.add(_below(m, randbytes))
    return sorted(got)


def drawn_chunks(alphabet: str, length: int, count: int, randbytes=secrets.token_bytes, max_guess: float = 1e-4):
    """`count` random serials as sorted draws in key order, each one write: (rows, redraw), where
    redraw(n) gives n more from the draw's key range (for those that collided). A generator: send()
    it the size of the next draw (next(): CHUNK); a rest under half of that goes along. Clustered:
    k prefixes of p characters (clusters()) drawn uniformly from the OS's source, each with its exact
    share of the pool (count / k, rounded cumulatively), the rest of each serial uniform: each serial
    is still uniform over the whole space (its prefix is any with the same chance), and one known
    serial tells its prefix, under which the pool's share is guessed no better than
    share / alphabet ** (length - p). Memory: one draw (and the k prefixes' numbers)."""
    p, k = clusters(alphabet, length, count, max_guess)
    plain = '"' not in alphabet and "\\" not in alphabet
    chosen = _chosen(len(alphabet) ** p, k, randbytes)
    j, done, size = 0, 0, CHUNK
    while j < k:
        lo, shares, total = j, [], 0
        while j < k and (total < size or count - done - total < size / 2):
            shares.append(count * (j + 1) // k - count * j // k)
            total += shares[-1]
            j += 1
        suffixes = random_serials(alphabet, length - p, total, randbytes)
        # each prefix's share sorted and joined with its prefix by str.join (not a string a serial),
        # straight into JSON where no character needs an escape; the prefixes are in key order
        parts, at = [], 0
        for i, n in enumerate(shares):
            prefix, part = _prefix(alphabet, p, chosen[lo + i]), suffixes[at:at + n]
            part.sort()
            if part:
                parts.append(prefix + ('","' + prefix).join(part) if plain else json.dumps([prefix + s for s in part])[2:-2])
            at += n
        suffixes = part = None
        rows = Drawn(total, '["' + '","'.join(parts) + '"]')
        parts = None
        done += total

        def redraw(n, lo=lo, hi=j):
            return sorted(_prefix(alphabet, p, chosen[lo + _below(hi - lo, randbytes)]) + s
                          for s in random_serials(alphabet, length - p, n, randbytes))
        size = (yield rows, redraw) or CHUNK
        rows = None


class Drawn:
    """A draw of drawn_chunks: how many serials, and the JSON array of them the write passes to
    SQLite (no list of the serials is made); iterating it gives them (tests, a redraw's rows)."""
    __slots__ = ("count", "json")

    def __init__(self, count: int, payload: str):
        self.count, self.json = count, payload

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return iter(json.loads(self.json))


def generate(conn: sqlite3.Connection, gtin: str, count: int, user: str | None = None) -> int:
    """Add `count` new random serials to the GTIN's pool. Returns count."""
    return generate_pool(conn, gtin, count, user).count


def generate_pool(conn: sqlite3.Connection, gtin: str, count: int, user: str | None = None, progress=None,
                  randbytes=secrets.token_bytes) -> Added:
    """All `count` new serials published in one step with one audit record, or none: an interrupted
    or failed run leaves no usable serial (its staged chunks are removed, at once or, after a kill,
    by the next import of the GTIN once it is stale). randbytes: the random source (tests only)."""
    profile = _profile_for(conn, gtin)
    if count <= 0:
        raise SerialError("count must be positive")
    # (the only refusal: the clustering never makes a pool guessable, clusters)
    _check_guess(conn, gtin, count, profile, profile.serial_length, len(profile.alphabet))

    def check():
        _check_guess(conn, gtin, 0, profile, profile.serial_length, len(profile.alphabet))
    chunks = drawn_chunks(profile.alphabet, profile.serial_length, count, randbytes, profile.max_guess_probability)
    added = _stage_and_publish(conn, gtin, "generated", chunks, user, check, None, ignore_known=True,
                               total=count, progress=progress)
    p = guess_probability(added.count, len(profile.alphabet), profile.serial_length)
    return dataclasses.replace(added, statement=(
        f"randomness of {added.count} generated serials: drawn uniformly from the OS's cryptographic source, "
        f"{profile.serial_length} characters of {len(profile.alphabet)}{_clustered(profile, count)}"
        f"; guess probability {p:.3g}"))


def _clustered(profile, count: int) -> str:
    """How a generated pool of `count` lies in the key space, and how well it is guessed knowing one
    of its serials (whose prefix it shares with count / k); "" for a pool under all prefixes or none."""
    p, k = clusters(profile.alphabet, profile.serial_length, count, profile.max_guess_probability)
    if not p or k == len(profile.alphabet) ** p:
        return ""
    share = -(-count // k)
    known = guess_probability(share, len(profile.alphabet), profile.serial_length - p)
    return (f" under {k:,} random {p}-character prefix(es), at most {share:,} each (guess probability"
            f" {known:.3g} knowing one serial, at least {KNOWN_MARGIN} times below the market's"
            f" {profile.max_guess_probability:g})")


def _json_array(rows: list[str]) -> str:
    """The serials as one JSON array: joined as they are unless one needs an escape (a quote or a
    backslash: CSET 82 has no control character), json.dumps then."""
    plain = "".join(rows)
    if '"' in plain or "\\" in plain:
        return json.dumps(rows)
    return '["' + '","'.join(rows) + '"]'


def _pause(held: float) -> float:
    """How long the lock stays free after a write that held it `held` s: a writer that found it
    taken meanwhile waited at most that long, so it wakes within the busy-handler sleep it is in
    (10 ms to spare), at most YIELD_S."""
    at = 0
    for ms in BUSY_SLEEPS_MS:
        if at + ms > held * 1000:
            return min(YIELD_S, (ms + 10) / 1000)
        at += ms
    return YIELD_S


def _busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


class _Writes:
    """An import's write transactions: each retried while another writer holds the lock, all
    within one deadline; progress said at most every PROGRESS_S."""

    def __init__(self, conn, total: int, progress):
        self.conn, self.total, self.progress = conn, total, progress
        self.started = self.said = time.monotonic()
        self.deadline = self.started + BUSY_DEADLINE_S
        self.staged = 0
        self.waited = 0.0  # time spent waiting for the lock
        self.longest = 0.0  # the longest one successful transaction held the lock
        self.last = 0.0  # the last one

    def run(self, fn):
        backoff = 0.01
        while True:
            left = self.deadline - time.monotonic()
            self.conn.execute(f"PRAGMA busy_timeout={max(1, int(min(ATTEMPT_S, left) * 1000))}")
            t = time.monotonic()
            try:
                with transaction(self.conn):
                    held = time.monotonic()  # BEGIN IMMEDIATE got the lock (it may have waited for it)
                    out = fn()
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                now = time.monotonic()
                self.waited += now - t
                if now >= self.deadline:
                    raise SerialError(
                        f"serial import gave up: another writer held the ledger's write lock for "
                        f"{self.waited:.0f} s of {now - self.started:.0f} s ({self.staged:,} of {self.total:,} "
                        "serials staged, none published); nothing imported, try again when the ledger is quieter"
                    ) from None
                self.say(f"ledger busy: another writer holds the write lock; waiting ({self.waited:.0f} s so far, "
                         f"gives up after {BUSY_DEADLINE_S:.0f} s in all)")
                time.sleep(min(backoff * random.uniform(0.5, 1.0), max(0.0, self.deadline - now)))
                backoff = min(backoff * 2, 0.5)
                continue
            self.last = time.monotonic() - held
            self.longest = max(self.longest, self.last)
            return out

    def say(self, what: str = "") -> None:
        now = time.monotonic()
        if self.progress is not None and now - self.said >= PROGRESS_S:
            self.said = now
            self.progress(f"serials: {self.staged:,} of {self.total:,} staged after {now - self.started:.0f} s"
                          + (f"; {what}" if what else ""))


def _stage_and_publish(conn, gtin, source, chunks, user, check, rnd, ignore_known, total=0, progress=None) -> Added:
    (timeout_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
    (sync,) = conn.execute("PRAGMA synchronous").fetchone()
    (auto,) = conn.execute("PRAGMA wal_autocheckpoint").fetchone()
    (cache,) = conn.execute("PRAGMA cache_size").fetchone()
    w = _Writes(conn, total, progress)
    try:
        # staged chunks need no fsync of their own: they are unusable until the publication, whose
        # commit (the connection's own synchronous) syncs the WAL with every chunk before it; the
        # checkpoint of each chunk runs outside its write lock (COMMIT would do it before returning)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # a chunk touches each of its pages once: a small cache (memory flat, whatever the pool)
        conn.execute(f"PRAGMA cache_size=-{STAGING_CACHE_KIB}")
        return _stage(conn, w, gtin, source, chunks, user, check, rnd, ignore_known, sync)
    finally:
        conn.execute(f"PRAGMA busy_timeout={timeout_ms}")
        conn.execute(f"PRAGMA synchronous={sync}")
        conn.execute(f"PRAGMA wal_autocheckpoint={auto}")
        conn.execute(f"PRAGMA cache_size={cache}")


# A staged chunk, one statement: (source, JSON array of serials, import_id). The import's own row
# joined in (still staging) and no state given (the column's default, 'available'): serial_born's
# rule holds for every row by the statement itself, which runs without it (_without_born).
STAGE_INSERT = ("INSERT {or_ignore}INTO serial (gtin, serial, source, import_id)"
                " SELECT i.gtin, j.value, ?, i.import_id FROM serial_import i, json_each(?) j"
                " WHERE i.import_id = ? AND i.state = 'staging'")


def _stage(conn, w: _Writes, gtin, source, chunks, user, check, rnd, ignore_known, sync: int) -> Added:
    _abandon_stale(conn, gtin)

    def begin():
        now = time.time()
        return conn.execute("INSERT INTO serial_import (gtin, source, started_at, heartbeat) VALUES (?,?,?,?)",
                            (gtin, str(source), now, now)).lastrowid
    import_id = w.run(begin)
    n_chunks = 0
    insert = STAGE_INSERT.format(or_ignore="OR IGNORE " if ignore_known else "")
    try:
        freed = None  # when this import last let go of the write lock
        item = next(chunks, None)  # (serials, redraw), one write each; send() the next one's size
        while item is not None:
            rows, redraw = item
            # one statement for the chunk (not one execution per row), the serials passed as one
            # JSON array, encoded before the lock is taken
            payload = rows.json if isinstance(rows, Drawn) else _json_array(rows)

            def stage():
                # the rows' parents, once (their foreign keys are not checked row by row, _stage_rows)
                row = conn.execute("SELECT gtin, state FROM serial_import WHERE import_id=?", (import_id,)).fetchone()
                if row is None or row[0] != gtin:
                    raise SerialError(f"serial import {import_id} is not one of {gtin}")
                if row[1] != "staging":
                    raise SerialError(f"serial import {import_id} was {row[1]} meanwhile (stalled over {STALE_S:.0f} s)")
                got, want, more = 0, len(rows), payload
                with _without_born(conn):
                    for _ in range(REDRAWS + 1):
                        got += conn.execute(insert, (str(source), more, import_id)).rowcount
                        short = want - got
                        if not short or redraw is None:
                            break
                        # collided with a serial known for ever (or a twin in the draw): drawn again
                        more = _json_array(redraw(short))
                    else:
                        raise SerialError(f"the random source gave serials already known {REDRAWS} times over for "
                                          f"{short} of a chunk of {want}; nothing added")
                conn.execute("UPDATE serial_import SET count=count+?, heartbeat=? WHERE import_id=?",
                             (got, time.time(), import_id))
                return got
            if freed is not None:
                # the lock stays free until a writer that waited for it wakes (drawing counts)
                time.sleep(max(0.0, _pause(w.last) - (time.monotonic() - freed)))
            got = _stage_rows(conn, w, stage)
            freed = time.monotonic()
            # copy our pages back now, in the pause (another writer's commit does not inherit it)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            w.staged, n_chunks = w.staged + got, n_chunks + 1
            w.say()
            size = CHUNK
            if redraw is not None and HOLD_S:
                # towards the hold aimed at: at most twice as many next time, fewer at once
                aim = len(rows) * HOLD_S / max(w.last, 1e-3)
                size = int(max(CHUNK / 4, min(aim, 2 * len(rows), DRAWN * CHUNK)))
            rows = payload = item = None  # this draw goes before the next one is made: one in memory
            try:
                item = chunks.send(size)  # drawn in the pause
            except StopIteration:
                item = None

        def publish():
            check()
            cur = conn.execute("UPDATE serial_import SET state='published', published_at=? WHERE import_id=? AND state='staging'",
                               (time.time(), import_id))
            if cur.rowcount != 1:
                raise SerialError(f"serial import {import_id} was abandoned meanwhile (stalled over {STALE_S:.0f} s)")
            if user:
                detail = {"gtin": gtin, "count": w.staged, "source": str(source), "import_id": import_id}
                if rnd is not None:
                    detail["guess_probability"] = rnd.guess_probability
                audit.append(conn, user, "serials.add", detail)
        conn.execute(f"PRAGMA synchronous={sync}")
        w.run(publish)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):  # what was committed (the signal may come between two lines here)
            (w.staged,) = conn.execute("SELECT count FROM serial_import WHERE import_id=?", (import_id,)).fetchone()
            if w.progress is not None:
                w.progress(f"serials: interrupted; removing the {w.staged:,} staged serials (Ctrl-C again: the next "
                           f"import of {gtin} removes the rest; none of them is usable)")
        removed = "removed"
        try:
            conn.execute(f"PRAGMA busy_timeout={int(5 * ATTEMPT_S * 1000)}")
            _abandon(conn, import_id, w.progress)
        except sqlite3.OperationalError as again:
            if not _busy(again):
                raise
            # still locked: the staged serials were never usable; the next import removes them
            removed = f"never usable, the next import of {gtin} removes them"
        if isinstance(exc, sqlite3.IntegrityError):
            raise SerialError(f"import into the pool of {gtin} failed ({exc}); nothing imported") from None
        if isinstance(exc, KeyboardInterrupt):
            raise GenerationInterrupted(f"interrupted: nothing added to the pool of {gtin} ({w.staged:,} staged serials "
                              f"{removed})") from None
        raise
    return Added(w.staged, import_id, rnd, n_chunks, w.longest)


class _without_born:
    """serial_born (host/db.py) left out of a staged chunk's INSERT: dropped and made again from its
    own text inside the chunk's write transaction, so no other statement, of this writer or any
    other, ever runs without it (a rollback, or a kill, brings it back with the rest). A row trigger
    costs the INSERT ... SELECT a third of its time (SQLite runs its program once a row and first
    copies the rows into a temporary table); the chunk's statement proves the rule itself (insert)."""

    def __init__(self, conn):
        self.conn, self.sql = conn, None

    def __enter__(self):
        if not self.conn.in_transaction:
            raise RuntimeError("serial_born is left out only inside the chunk's write transaction")
        row = self.conn.execute("SELECT sql FROM sqlite_master WHERE type='trigger' AND name='serial_born'").fetchone()
        if row:
            self.sql = row[0]
            self.conn.execute("DROP TRIGGER serial_born")

    def __exit__(self, exc_type, exc, tb):
        if self.sql is not None and exc_type is None:  # (an error: the caller's rollback restores it)
            self.conn.execute(self.sql)
        return False


def _stage_rows(conn, w: _Writes, stage):
    """w.run(stage) with foreign keys off: an INSERT of many rows into serial checks each row's
    parents (product, serial_import) and looks in each table that refers to serial for rows naming
    it (SQLite does so for a statement writing more than one row), ~15 % of the insert; stage
    checks the parents once (the import is of this GTIN: product), and no row can name a serial
    not yet made. (SQLite ignores the pragma inside a transaction: set around it.)"""
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        return w.run(stage)
    finally:
        conn.execute("PRAGMA foreign_keys=ON")


def _abandon(conn, import_id: int, progress=None) -> None:
    """Mark the import abandoned (from then on its serials are out of every pool for good), then
    remove its staged serials chunk by chunk; interrupted, the next import of the GTIN goes on."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    with transaction(conn):
        conn.execute("UPDATE serial_import SET state='abandoned' WHERE import_id=? AND state='staging'", (import_id,))
    _remove_abandoned(conn, import_id, progress)


def _remove_abandoned(conn, import_id: int, progress=None) -> None:
    said, removed = time.monotonic(), 0
    while True:
        with transaction(conn):
            # staged rows are 'available' for good (serial_unpublished_unused): serial_pick finds
            # the import's rows, CHUNK at a time, without a scan of the pool
            n = conn.execute("DELETE FROM serial WHERE serial_id IN (SELECT s.serial_id FROM serial_import i"
                             " JOIN serial s ON s.gtin = i.gtin AND s.state = 'available' AND s.import_id = i.import_id"
                             " WHERE i.import_id=? AND i.state='abandoned' LIMIT ?)", (import_id, CHUNK)).rowcount
        if n == 0:
            return
        removed += n
        time.sleep(YIELD_S)  # a waiting writer gets in between, as between staged chunks
        if progress is not None and time.monotonic() - said >= PROGRESS_S:
            said = time.monotonic()
            progress(f"serials: {removed:,} staged serials of abandoned import {import_id} removed so far")


def _abandon_stale(conn, gtin: str) -> None:
    """A killed import's staged serials (no heartbeat for STALE_S), and what an interrupted removal
    left, are removed before the next import of the GTIN."""
    stale = [i for (i,) in conn.execute("SELECT import_id FROM serial_import WHERE gtin=? AND state='staging' AND heartbeat<?",
                                        (gtin, time.time() - STALE_S))]
    for import_id in stale:
        _abandon(conn, import_id)
    for (import_id,) in conn.execute(
            "SELECT import_id FROM serial_import i WHERE gtin=? AND state='abandoned' AND EXISTS (SELECT 1 FROM serial s"
            " WHERE s.gtin = i.gtin AND s.state = 'available' AND s.import_id = i.import_id)", (gtin,)).fetchall():
        _remove_abandoned(conn, import_id)


# --- using a pool ---------------------------------------------------------------------------


def allocate_ids(conn: sqlite3.Connection, batch_id: str, gtin: str, count: int) -> list[tuple[int, str]]:
    """Take `count` available serials for the batch: [(serial_id, serial)], in the pick's order (the
    index serial_pick gives both, no lookup of the row). Call inside the caller's transaction."""
    rows = conn.execute(f"SELECT serial_id, serial FROM serial WHERE gtin=? AND state='available' AND {USABLE} LIMIT ?",
                        (gtin, count)).fetchall()
    if len(rows) < count:
        raise SerialError(f"pool for {gtin} exhausted: {len(rows)} available, {count} needed")
    # one statement over the ids (a statement a row paid its own journal and trigger frames: host/ledger.py _flush)
    n = conn.execute("UPDATE serial SET state='allocated', batch_id=? WHERE serial_id IN (SELECT value FROM json_each(?))"
                     " AND state='available'", (batch_id, db.id_array(i for i, _ in rows))).rowcount
    if n != count:
        raise SerialError(f"pool for {gtin}: {count - n} of the {count} serials picked were taken meanwhile")
    return rows


def allocate(conn: sqlite3.Connection, batch_id: str, gtin: str, count: int) -> list[str]:
    """allocate_ids without the ids: the serials."""
    return [s for _, s in allocate_ids(conn, batch_id, gtin, count)]


def available(conn: sqlite3.Connection, gtin: str) -> int:
    """The serials `allocate` could take: the available ones (a count over serial_pick), less those
    of the few imports not published and the few handed out or due upstream (USABLE row by row
    costs seconds for a pool of millions; a lookup per row, twice as long as the plain count)."""
    return conn.execute(
        "SELECT (SELECT count(*) FROM serial WHERE gtin=:g AND state='available')"
        # CROSS JOIN: the imports outside, each a range of serial_pick
        " - (SELECT count(*) FROM serial_import i CROSS JOIN serial s ON s.gtin=:g AND s.state='available'"
        "  AND s.import_id=i.import_id WHERE i.state<>'published')"
        " - (SELECT count(*) FROM (SELECT serial FROM serial_grant WHERE gtin=:g AND state<>'returned'"
        "  UNION SELECT serial FROM serial_upstream_return WHERE gtin=:g) o"
        "  JOIN serial s ON s.gtin=:g AND s.serial=o.serial WHERE s.state='available' AND NOT EXISTS"
        "  (SELECT 1 FROM serial_import i WHERE i.import_id=s.import_id AND i.state<>'published'))",
        {"g": gtin}).fetchone()[0]


def low_water(conn: sqlite3.Connection, gtin: str, threshold: int = LOW_WATER) -> str | None:
    """A warning text when the pool runs low, else None."""
    n = conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM serial WHERE gtin=? AND state='available' AND {USABLE} LIMIT ?)",
                     (gtin, threshold)).fetchone()[0]  # bounded: cheap enough for every coder top-up
    return f"serial pool for {gtin} is low: {n} available (< {threshold})" if n < threshold else None
