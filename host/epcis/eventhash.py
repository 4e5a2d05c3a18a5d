"""CBV 2.0 event hash (`ni:///sha-256;…?ver=CBV2.0`) for the events this agent emits.

The pre-hash string follows the CBV 2.0 algorithm as implemented by GS1's reference
(`epcis-event-hash-generator`): fields in the canonical order, `name=value` pairs, list items
sorted, EPC URIs replaced by constrained canonical GS1 Digital Link URIs, CBV short names by
their web-vocabulary URLs, times in UTC at millisecond precision. Fields outside the canonical
order (here: `ilmd`) follow as sorted `{namespace}localName=value` pairs: a prefixed key is
expanded to its full IRI (`PREFIXES`), as the reference does for a prefix the document declares
and for an XML namespace, so the JSON-LD and the XML renderings of an event hash alike. Only the
fields our builders emit are accepted: an unknown field raises instead of silently giving a
different hash upstream."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from datetime import datetime, timedelta, timezone

CBV = "https://ref.gs1.org/cbv/"
# namespace prefixes of the extension fields we emit; documents declare them inline (document.py)
# and the 1.2 XML uses the same IRIs as XML namespaces (xml12.py)
PREFIXES = {"cbvmda": "urn:epcglobal:cbv:mda:"}
_VOCAB_FIELDS = {"bizStep": "BizStep-", "disposition": "Disp-"}
_ORDERED = ("eventTime", "eventTimeZoneOffset", "parentID", "epcList", "childEPCs", "action",
            "bizStep", "disposition", "readPoint", "bizLocation")
_IGNORED = {"type", "eventID", "recordTime", "@context"}
# typed lists (shipping): items of `type` (CBV short name -> vocabulary URL) + value, sorted
_TYPED_LISTS = {"bizTransactionList": ("bizTransaction", "BTT-"), "sourceList": ("source", "SDT-"),
                "destinationList": ("destination", "SDT-")}
_UNORDERED = {"ilmd", *_TYPED_LISTS}
_KNOWN = frozenset({*_ORDERED, *_IGNORED, *_UNORDERED})

_SGTIN = re.compile(r"^urn:epc:id:sgtin:(\d{6,12})\.(\d{1,7})\.(.{1,60})$")
_SSCC = re.compile(r"^urn:epc:id:sscc:(\d{6,12})\.(\d{5,11})$")
_SGLN = re.compile(r"^urn:epc:id:sgln:(\d{6,12})\.(\d{0,6})\.(.{1,60})$")


@lru_cache(maxsize=1024)  # the same GTINs, GLNs and company prefixes come back all the time
def check_digit(digits: str) -> int:
    """GS1 mod-10 check digit of a key given without it (weights 3,1,... from the right)."""
    total = 3 * sum(map(int, digits[-1::-2])) + sum(map(int, digits[-2::-2]))
    return (10 - total % 10) % 10


def _dl_escape(text: str) -> str:
    # GS1 Digital Link percent-encodes these; EPC URIs already escaped the rest
    if text.isalnum():  # the common serial: none of them
        return text
    for ch, esc in (("!", "%21"), ("(", "%28"), (")", "%29"), ("*", "%2A"), ("+", "%2B"),
                    (",", "%2C"), (":", "%3A")):
        text = text.replace(ch, esc)
    return text


def canonical_uri(uri: str) -> str:
    """EPC URI -> constrained canonical GS1 Digital Link URI; other values unchanged."""
    if uri.startswith("urn:epc:id:sgtin:"):  # one per pack, never again: not worth a cache entry
        if m := _SGTIN.match(uri):
            prefix, item, serial = m.groups()
            return _gtin_dl(prefix, item) + _dl_escape(serial)
        return uri
    return _canonical_other(uri)


@lru_cache(maxsize=256)  # a batch's GTIN, in every pack's SGTIN
def _gtin_dl(prefix: str, item: str) -> str:
    raw = item[:1] + prefix + item[1:]
    return f"https://id.gs1.org/01/{raw}{check_digit(raw)}/21/"


@lru_cache(maxsize=1024)  # read points and locations repeat in every event
def _canonical_other(uri: str) -> str:
    if m := _SSCC.match(uri):
        prefix, ref = m.groups()
        raw = ref[:1] + prefix + ref[1:]
        return f"https://id.gs1.org/00/{raw}{check_digit(raw)}"
    if m := _SGLN.match(uri):
        prefix, loc, ext = m.groups()
        gln = prefix + loc
        base = f"https://id.gs1.org/414/{gln}{check_digit(gln)}"
        return base if ext == "0" else f"{base}/254/{_dl_escape(ext)}"
    return uri


def _canonical_value(value: str) -> str:
    value = value.strip()
    if value.startswith("urn:"):  # an EPC or location: never a number (float() would only raise)
        return canonical_uri(value)
    try:  # numbers lose leading zeros, '+' and '.0', as in the reference
        number = float(value)
        value = str(int(number) if number == int(number) else number)
    except (ValueError, OverflowError):
        pass
    return canonical_uri(value)


def _epc_items(values) -> list[str]:
    """`epc=<canonical value>` of each EPC of a list, as _canonical_value gives it; an SGTIN's head
    (company prefix and item reference: a list's packs share one) is matched once per list, its
    serial checked as the pattern would (1..60 characters, no line break). The common pack (the
    last head seen, an alphanumeric serial: no space to strip, nothing to escape) takes one test."""
    out, heads = [], {}
    head, dl, cut = None, "", 0
    for v in values:
        if head is not None and v.startswith(head):
            serial = v[cut:]
            if serial.isalnum() and len(serial) <= 60:
                out.append(dl + serial)
                continue
        v = v.strip()
        c = v.find(".", v.find(".", 17) + 1) + 1 if v.startswith("urn:epc:id:sgtin:") else 0
        serial = v[c:]
        if c and 0 < len(serial) <= 60 and "\n" not in serial:
            h = v[:c]
            d = heads.get(h)
            if d is None:
                m = _SGTIN.match(h + "0")
                d = heads[h] = "epc=" + _gtin_dl(*m.groups()[:2]) if m else ""
            if d:
                head, dl, cut = h, d, c
                out.append(d + _dl_escape(serial))
                continue
        out.append("epc=" + _canonical_value(v))
    return out


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def canonical_time(text: str) -> str:
    return _utc(text).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_EPOCH, _MS = datetime(1970, 1, 1, tzinfo=timezone.utc), timedelta(milliseconds=1)


def time_ms(text: str) -> int:
    """An eventTime as the hash has it (canonical_time), in ms since 1970 UTC: events of one
    eventID have one time_ms."""
    return (_utc(text) - _EPOCH) // _MS


def expand_name(name: str) -> str:
    """`cbvmda:lotNumber` -> `{urn:epcglobal:cbv:mda:}lotNumber`; an unknown prefix raises."""
    prefix, sep, local = name.partition(":")
    if not sep or prefix not in PREFIXES or not local:
        raise ValueError(f"event hash: extension field {name!r} has no known namespace prefix")
    return "{" + PREFIXES[prefix] + "}" + local


def prehash(event: dict) -> str:
    if not _KNOWN.issuperset(event):
        unknown = set(event) - _KNOWN
        raise ValueError(f"event hash: unsupported field(s) {sorted(unknown)}")
    parts = ["eventType=" + event["type"]]
    for name in _ORDERED:
        if name not in event:
            continue
        value = event[name]
        if name == "eventTime":
            parts.append(f"eventTime={canonical_time(value)}")
        elif name in ("epcList", "childEPCs"):
            if value:
                parts.append(name + "".join(sorted(_epc_items(value))))
        elif name in ("readPoint", "bizLocation"):
            parts.append(f"{name}id={_canonical_value(value['id'])}")
        elif name in _VOCAB_FIELDS and ":" not in value:
            parts.append(f"{name}={CBV}{_VOCAB_FIELDS[name]}{value}")
        else:
            parts.append(f"{name}={_canonical_value(value)}")
    tail = [_typed_list(name, event[name]) for name in _TYPED_LISTS if event.get(name)]
    if "ilmd" in event:
        fields = sorted(f"{expand_name(k)}={_canonical_value(str(v))}" for k, v in event["ilmd"].items())
        tail.append("ilmd" + "".join(fields))
    return "".join(parts + sorted(tail))  # fields outside the canonical order, sorted (reference)


def _typed_list(name: str, items: list[dict]) -> str:
    key, vocabulary = _TYPED_LISTS[name]
    rendered = []
    for item in items:
        kind = item["type"] if ":" in item["type"] else f"{CBV}{vocabulary}{item['type']}"
        rendered.append(f"type={kind}{key}={_canonical_value(item[key])}")
    return name + "".join(sorted(rendered))


def event_hash(event: dict) -> str:
    return f"ni:///sha-256;{hashlib.sha256(prehash(event).encode()).hexdigest()}?ver=CBV2.0"
