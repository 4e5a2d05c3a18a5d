"""GS1 codes: check digits, element strings for the coder, human-readable text, Digital Link URIs,
validation against the GS1 Syntax Dictionary, and parsing of camera reads (with biip)."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from functools import lru_cache

GS = "\x1d"  # the FNC1 separator inside element strings
SYMBOLOGY_DATAMATRIX = "]d2"

# GS1 General Specifications figure 7.11-1: 82 characters allowed in AI encodable set 82.
CSET82 = set("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")



class GS1Error(ValueError):
    """A code or a part of one that is not valid GS1."""


def check_digit(body: str) -> int:
    """GS1 mod-10 check digit for the digits before it (GTIN, SSCC, GLN)."""
    if not body.isdigit():
        raise GS1Error(f"check digit needs digits only, got {body!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def valid_check_digit(number: str) -> bool:
    return len(number) > 1 and number.isdigit() and check_digit(number[:-1]) == int(number[-1])


# --- The Syntax Dictionary: one line per AI, "AI[-AI] [flags] spec [attrs] # title" ---


@dataclass(frozen=True)
class AISpec:
    ai: str
    fixed: bool  # predefined length: no separator needed after it
    components: tuple[tuple[str, int, int, tuple[str, ...]], ...]  # (cset, min, max, linters)
    title: str

    @property
    def max_len(self) -> int:
        return sum(c[2] for c in self.components)


_COMPONENT = re.compile(r"^\[?([NXYZ])(\d*)(?:\.\.(\d+))?((?:,\w+)*)\]?$")


@lru_cache(maxsize=1)
def dictionary() -> dict[str, AISpec]:
    from .standards import GS1_SYNTAX_DICTIONARY  # shipped in the package, never a machine path
    out: dict[str, AISpec] = {}
    for raw in GS1_SYNTAX_DICTIONARY.read_text(encoding="utf-8").splitlines():
        line, _, title = raw.partition("#")
        parts = line.split()
        if not parts or not parts[0][0].isdigit():
            continue
        ais, i = parts[0], 1
        flags = ""
        if i < len(parts) and not _COMPONENT.match(parts[i]):
            flags, i = parts[i], i + 1
        comps = []
        while i < len(parts) and _COMPONENT.match(parts[i]):
            cset, a, b, lint = _COMPONENT.match(parts[i]).groups()
            optional = parts[i].startswith("[")
            lo, hi = (int(a), int(a)) if b is None else (0 if optional else 1, int(b))
            comps.append((cset, lo, hi, tuple(x for x in lint.split(",") if x)))
            i += 1
        first, _, last = ais.partition("-")
        ai_list = [first] if not last else [str(n).zfill(len(first)) for n in range(int(first), int(last) + 1)]
        for ai in ai_list:
            out[ai] = AISpec(ai, "*" in flags, tuple(comps), title.strip())
    return out


@lru_cache(maxsize=None)
def _plain(ai: str):
    """A regex that a value of `ai` matches only if `_check_spec` passes it (one component of
    digits or set 82, no linter: a serial, a lot), or None. A value it misses gets the full check
    and its error; one it matches (every pack's serial) skips the spec's walk."""
    spec = dictionary().get(ai)
    if spec is None or len(spec.components) != 1:
        return None
    cset, lo, hi, linters = spec.components[0]
    if linters or cset not in "NX":
        return None
    chars = "0-9" if cset == "N" else "".join(re.escape(c) for c in sorted(CSET82))
    return re.compile(f"[{chars}]{{{lo},{hi}}}")


def _check_value(ai: str, value: str) -> None:
    plain = _plain(ai)
    if plain is None or type(value) is not str or not plain.fullmatch(value):
        _check_spec(ai, value)


def _check_spec(ai: str, value: str) -> None:
    spec = dictionary().get(ai)
    if spec is None:
        raise GS1Error(f"AI ({ai}) is not in the GS1 Syntax Dictionary")
    rest = value
    for cset, lo, hi, linters in spec.components:
        part = rest[:hi] if cset != "N" or lo != hi else rest[:lo]
        if len(spec.components) == 1:
            part = rest
        if not lo <= len(part) <= hi:
            raise GS1Error(f"AI ({ai}) {spec.title}: length {len(part)} not in {lo}..{hi}: {value!r}")
        if cset == "N" and not part.isdigit() and part:
            raise GS1Error(f"AI ({ai}) {spec.title}: digits only: {value!r}")
        if cset == "X" and not set(part) <= CSET82:
            bad = sorted(set(part) - CSET82)
            raise GS1Error(f"AI ({ai}) {spec.title}: characters {bad!r} not allowed: {value!r}")
        if "csum" in linters and not valid_check_digit(part):
            raise GS1Error(f"AI ({ai}) {spec.title}: bad check digit: {value!r}")
        for pos in (1, 2):  # the company prefix starts at this position: all zeros is nobody's key
            if f"gcppos{pos}" in linters and not part[pos - 1:-1].strip("0"):
                raise GS1Error(f"AI ({ai}) {spec.title}: all zeros from position {pos} on: no GS1 company "
                               f"prefix, not an allocated key: {value!r}")
        if "yymmd0" in linters or "yymmdd" in linters:
            parse_yymmdd(part, allow_day_zero="yymmd0" in linters, ai=ai)
        rest = rest[len(part):]
    if rest:
        raise GS1Error(f"AI ({ai}) {spec.title}: too long: {value!r}")


def parse_yymmdd(text: str, allow_day_zero: bool = True, ai: str = "17") -> _dt.date:
    """YYMMDD → date (GS1 century rule: within -49..+50 years of today). DD=00 = last day."""
    if len(text) != 6 or not text.isdigit():
        raise GS1Error(f"AI ({ai}): date must be YYMMDD, got {text!r}")
    yy, mm, dd = int(text[:2]), int(text[2:4]), int(text[4:])
    this = _dt.date.today().year
    year = this - this % 100 + yy
    if year - this > 50:
        year -= 100
    elif this - year > 49:
        year += 100
    if dd == 0 and allow_day_zero and 1 <= mm <= 12:
        return EndOfMonth(year, mm)
    try:
        return _dt.date(year, mm, dd)
    except ValueError:
        raise GS1Error(f"AI ({ai}): {text!r} is not a valid date") from None


class EndOfMonth(_dt.date):
    """A date given as a month only: GS1 day 00 (`(17)YYMM00`). It is the month's last day in any
    comparison and in EPCIS (itemExpirationDate), and keeps its 00 in codes and the ledger."""

    def __new__(cls, year: int, month: int, *_ignored):
        last = (_dt.date(year + month // 12, month % 12 + 1, 1) - _dt.timedelta(days=1)).day
        return super().__new__(cls, year, month, last)

    def __reduce__(self):
        return (EndOfMonth, (self.year, self.month))

    def __repr__(self) -> str:
        return f"EndOfMonth({self.year}, {self.month})"


def yymmdd(day: _dt.date) -> str:
    return day.strftime("%y%m00" if isinstance(day, EndOfMonth) else "%y%m%d")


def expiry_text(day: _dt.date) -> str:
    """The ledger's form: YYYY-MM-DD, or YYYY-MM-00 for a month-only expiry."""
    return day.strftime("%Y-%m-00") if isinstance(day, EndOfMonth) else day.isoformat()


def parse_expiry(text: str) -> _dt.date:
    """YYYY-MM-DD, or YYYY-MM-00 / YYYY-MM for a month-only expiry (GS1 day 00)."""
    text = str(text)
    month_only = re.fullmatch(r"(\d{4})-(\d{2})(?:-00)?", text)
    try:
        if month_only:
            return EndOfMonth(int(month_only[1]), int(month_only[2]))
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return _dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise GS1Error(f"invalid date {text!r} (want YYYY-MM-DD, or YYYY-MM-00 for a month-only expiry)")


def check_each(ai: str, values: list[str]) -> None:
    """Each value of one AI against the dictionary, in order (GS1Error: the first rule one breaks;
    a pack serial a job, the regex looked up once)."""
    plain = _plain(ai)
    match = plain.fullmatch if plain is not None else None
    for value in values:
        if match is None or type(value) is not str or not match(value):
            _check_spec(ai, value)


def validate(pairs: list[tuple[str, str]]) -> None:
    """Every AI value against the dictionary, and no AI twice."""
    if not pairs:
        raise GS1Error("no element strings")
    seen = set()
    for ai, value in pairs:
        if ai in seen:
            raise GS1Error(f"AI ({ai}) appears twice")
        seen.add(ai)
        _check_value(ai, value)


def element_string(pairs: list[tuple[str, str]]) -> str:
    """Validated element string: GS only after a variable-length field that is not last."""
    validate(pairs)
    out = []
    for i, (ai, value) in enumerate(pairs):
        out.append(ai + value)
        if not dictionary()[ai].fixed and i < len(pairs) - 1:
            out.append(GS)
    return "".join(out)


def pack_pairs(gtin: str, serial: str, lot: str, expiry: _dt.date,
               nhrn_ai: str | None = None, nhrn: str | None = None) -> list[tuple[str, str]]:
    """Content of a pack's code: fixed-length fields first saves separators."""
    pairs = [("01", gtin), ("17", yymmdd(expiry)), ("10", lot), ("21", serial)]
    if nhrn_ai:
        pairs.append((nhrn_ai, nhrn or ""))
    return pairs


def hri(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"({ai}){value}" for ai, value in pairs)


def digital_link(pairs: list[tuple[str, str]], domain: str = "https://id.gs1.org") -> str:
    """GS1 Digital Link URI: primary key and qualifiers in the path, the rest as query."""
    from urllib.parse import quote
    d = dict(pairs)
    path = f"/01/{d['01']}"
    for q in ("22", "10", "21"):
        if q in d:
            path += f"/{q}/{quote(d[q], safe='')}"
    query = "&".join(f"{ai}={quote(v, safe='')}" for ai, v in pairs if ai not in ("01", "22", "10", "21"))
    return domain.rstrip("/") + path + ("?" + query if query else "")


def sscc(extension: int, company_prefix: str, serial_ref: int) -> str:
    """SSCC-18: extension digit + company prefix + serial reference + check digit."""
    width = 16 - len(company_prefix)
    if not 0 <= extension <= 9 or not company_prefix.isdigit() or not 6 <= len(company_prefix) <= 12:
        raise GS1Error(f"bad SSCC parts: extension {extension}, prefix {company_prefix!r}")
    if not 0 <= serial_ref < 10 ** width:
        raise GS1Error(f"SSCC serial reference {serial_ref} does not fit {width} digits")
    body = f"{extension}{company_prefix}{serial_ref:0{width}d}"
    return body + str(check_digit(body))


@dataclass(frozen=True)
class Read:
    """A decoded camera read: symbology identifier and the AI values."""
    symbology: str
    data: str  # element string as read (GS separators), without the symbology identifier
    ais: dict[str, str]


def parse_read(text: str) -> Read:
    """A camera's decoded data (symbology identifier first) → Read; GS1Error if not GS1."""
    import biip
    if not isinstance(text, str) or not text:
        raise GS1Error("empty read")
    symbology, data = (text[:3], text[3:]) if text.startswith("]") else ("", text)
    if not data:
        raise GS1Error("read has no data")
    try:
        result = biip.parse(symbology + data)
    except Exception as exc:  # biip raises its own ParseError and sometimes ValueError
        raise GS1Error(f"not GS1: {exc}") from None
    msg = result.gs1_message
    if msg is None:
        raise GS1Error(f"not GS1: {result.gs1_message_error or 'unparseable'}")
    ais = {}
    for es in msg.element_strings:
        if es.ai.ai in ais:
            raise GS1Error(f"AI ({es.ai.ai}) appears twice")
        ais[es.ai.ai] = es.value
    validate(list(ais.items()))
    return Read(symbology, data, ais)
