"""EPCIS 2.0 JSON-LD events (CBV 2.0 vocabulary) for what the ledger records.

Each builder returns one event as a plain dict, ready for a document (`document.py`) or the
outbox, with its `eventID` set to the CBV 2.0 event hash: the same fact always gets the same ID,
so a resend is recognisable upstream. Builders check their input and raise ValueError."""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from itertools import repeat

from serialine.host.epcis.eventhash import check_digit, event_hash

# CBV 2.0 bizStep and disposition of each end of life (ObjectEvent DELETE). A sample is first
# observed with bizStep sampling (`sampling()`); its identity then ends like a decommissioned one.
DECOMMISSION_KINDS = {
    "destroyed": ("destroying", "destroyed"),
    "sampled": ("decommissioning", "inactive"),
    "decommissioned": ("decommissioning", "inactive"),
}

# GS1 AI 21 serials use the 82-character set; the EPC URI escapes " % & / < > ?
_CSET82 = re.compile(r'^[!"%&\'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}$')
_URI_ESCAPES = {c: f"%{ord(c):02X}" for c in '"%&/<>?'}
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")


@dataclass(frozen=True)
class Context:
    """Where events happen (SGLN URNs from configuration) and when: the site's IANA time zone
    (`zone`), so each event carries the offset in force at its own eventTime (a run may cross a
    daylight-saving switch); without a zone, the fixed `tz_offset`."""
    read_point: str
    biz_location: str
    tz_offset: str = "+00:00"
    zone: str | None = None

    def __post_init__(self):
        for name in ("read_point", "biz_location"):
            if not str(getattr(self, name)).startswith("urn:epc:id:sgln:"):
                raise ValueError(f"{name} must be an SGLN EPC URI, got {getattr(self, name)!r}")
        if not _OFFSET.fullmatch(self.tz_offset):
            raise ValueError(f"tz_offset must look like +01:00, got {self.tz_offset!r}")
        self.tzinfo  # noqa: B018 - raises ValueError for offsets of a day or more, or an unknown zone

    @property
    def tzinfo(self) -> timezone | zoneinfo.ZoneInfo:
        if self.zone is not None:
            try:
                return zoneinfo.ZoneInfo(str(self.zone))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.zone!r} (want an IANA name such as Europe/Berlin)") from None
        sign = -1 if self.tz_offset[0] == "-" else 1
        hours, minutes = int(self.tz_offset[1:3]), int(self.tz_offset[4:6])
        return timezone(sign * timedelta(hours=hours, minutes=minutes))

    def offset_at(self, when: datetime) -> str:
        """The eventTimeZoneOffset of an event at `when` (aware): +HH:MM."""
        return _offset(when.astimezone(self.tzinfo).utcoffset())


def _offset(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)  # whole minutes: EPCIS has no seconds in an offset
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _key_digits(value: str, length: int, what: str) -> str:
    value = str(value)
    if not (value.isascii() and value.isdigit()) or len(value) != length:
        raise ValueError(f"{what} must be {length} digits, got {value!r}")
    if check_digit(value[:-1]) != int(value[-1]):
        raise ValueError(f"{what} {value} has a wrong check digit")
    return value


def _prefix_len(company_prefix_len: int) -> int:
    if not isinstance(company_prefix_len, int) or not 6 <= company_prefix_len <= 12:
        raise ValueError(f"company prefix length must be 6..12, got {company_prefix_len!r}")
    return company_prefix_len


@lru_cache(maxsize=256)  # a batch's GTIN repeats in every pack's EPC: checked once
def _sgtin_head(gtin: str, company_prefix_len: int) -> str:
    gtin = str(gtin).zfill(14) if str(gtin).isdigit() and len(str(gtin)) in (8, 12, 13) else gtin
    gtin = _key_digits(gtin, 14, "GTIN")
    n = _prefix_len(company_prefix_len)
    return f"urn:epc:id:sgtin:{gtin[1:1 + n]}.{gtin[0]}{gtin[1 + n:13]}."


def sgtin_urn(gtin: str, serial: str, company_prefix_len: int) -> str:
    """urn:epc:id:sgtin:CompanyPrefix.IndicatorItemRef.Serial (GS1 EPC TDS)."""
    head = _sgtin_head(gtin, company_prefix_len)
    if not (type(serial) is str and _CSET82.fullmatch(serial)):
        raise ValueError(f"serial must be 1..20 GS1 AI 21 characters, got {serial!r}")
    if serial.isalnum():  # the common case: nothing to escape
        return head + serial
    return head + "".join(_URI_ESCAPES.get(c, c) for c in serial)


def sgtin_urns(gtin: str, serials: list[str], company_prefix_len: int) -> list[str]:
    """sgtin_urn of each serial; a poll's alphanumeric serials (nothing to escape) checked at once."""
    head = _sgtin_head(gtin, company_prefix_len)
    if serials and set(map(type, serials)) == {str}:
        joined = "".join(serials)
        if joined.isascii() and joined.isalnum() and min(map(len, serials)) > 0 and max(map(len, serials)) <= 20:
            return [head + s for s in serials]
    return [sgtin_urn(gtin, s, company_prefix_len) for s in serials]  # escapes, or says which is wrong


def sscc_urn(sscc: str, company_prefix_len: int) -> str:
    """urn:epc:id:sscc:CompanyPrefix.ExtensionSerialRef (GS1 EPC TDS)."""
    sscc = _key_digits(sscc, 18, "SSCC")
    n = _prefix_len(company_prefix_len)
    return f"urn:epc:id:sscc:{sscc[1:1 + n]}.{sscc[0]}{sscc[1 + n:17]}"


def sgln_urn(gln: str, company_prefix_len: int, extension: str = "0") -> str:
    """urn:epc:id:sgln:CompanyPrefix.LocationRef.Extension (for read point / business location)."""
    gln = _key_digits(gln, 13, "GLN")
    n = _prefix_len(company_prefix_len)
    return f"urn:epc:id:sgln:{gln[:n]}.{gln[n:12]}.{extension}"


def _time(ctx: Context, when: datetime) -> tuple[str, str]:
    """(eventTime, eventTimeZoneOffset): the time in the site's local time at that instant."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValueError(f"event time must be a timezone-aware datetime, got {when!r}")
    zone, offset = _fixed_zone(when.astimezone(ctx.tzinfo).utcoffset())
    return when.astimezone(zone).isoformat(timespec="milliseconds"), offset


@lru_cache(maxsize=64)  # a site has an offset or two (daylight saving)
def _fixed_zone(offset: timedelta) -> tuple[timezone, str]:
    """The fixed zone an event's local time is written in (whole minutes) and its offset text."""
    return timezone(timedelta(minutes=round(offset.total_seconds() / 60))), _offset(offset)


def _epcs(epcs, what: str) -> list[str]:
    epcs = list(epcs)
    if not epcs:
        raise ValueError(f"{what}: at least one EPC is required")
    if not (set(map(type, epcs)) == {str} and all(map(str.startswith, epcs, repeat("urn:epc:id:")))):
        for epc in epcs:  # which one (the test above at once: a list of plain strings, every pack)
            if not isinstance(epc, str) or not epc.startswith("urn:epc:id:"):
                raise ValueError(f"{what}: not an EPC URI: {epc!r}")
    if len(set(epcs)) != len(epcs):
        raise ValueError(f"{what}: duplicate EPCs")
    return epcs


def _finish(ctx: Context, event: dict, **tail) -> dict:
    event["readPoint"] = {"id": ctx.read_point}
    event["bizLocation"] = {"id": ctx.biz_location}
    event.update(tail)
    event["eventID"] = event_hash(event)
    return event


def _head(kind: str, ctx: Context, when: datetime) -> dict:
    event_time, offset = _time(ctx, when)
    return {"type": kind, "eventTime": event_time, "eventTimeZoneOffset": offset}


def commissioning(ctx: Context, epcs, lot: str, expiry: date, when: datetime) -> dict:
    """ObjectEvent ADD, bizStep commissioning, disposition active, ILMD lot + expiry."""
    if not isinstance(lot, str) or not _CSET82.fullmatch(lot):
        raise ValueError(f"lot must be 1..20 GS1 AI 10 characters, got {lot!r}")
    if not isinstance(expiry, date) or isinstance(expiry, datetime):
        raise ValueError(f"expiry must be a date, got {expiry!r}")
    event = _head("ObjectEvent", ctx, when)
    event.update(epcList=_epcs(epcs, "commissioning"), action="ADD", bizStep="commissioning",
                 disposition="active")
    ilmd = {"cbvmda:lotNumber": lot, "cbvmda:itemExpirationDate": expiry.isoformat()}
    return _finish(ctx, event, ilmd=ilmd)


def _aggregation(ctx, parent, children, when, action, biz_step) -> dict:
    parent = _epcs([parent], biz_step)[0]
    event = _head("AggregationEvent", ctx, when)
    event.update(parentID=parent, childEPCs=_epcs(children, biz_step), action=action,
                 bizStep=biz_step, disposition="in_progress")
    if parent in event["childEPCs"]:
        raise ValueError(f"{biz_step}: {parent} cannot contain itself")
    return _finish(ctx, event)


def packing(ctx: Context, parent: str, children, when: datetime) -> dict:
    """AggregationEvent ADD: children (SGTINs or SSCCs) put into the parent SSCC."""
    return _aggregation(ctx, parent, children, when, "ADD", "packing")


def unpacking(ctx: Context, parent: str, children, when: datetime) -> dict:
    """AggregationEvent DELETE: children taken out of the parent SSCC (rework)."""
    return _aggregation(ctx, parent, children, when, "DELETE", "unpacking")


def sampling(ctx: Context, epcs, when: datetime) -> dict:
    """ObjectEvent OBSERVE, bizStep sampling: packs taken out as samples, no longer for sale."""
    event = _head("ObjectEvent", ctx, when)
    event.update(epcList=_epcs(epcs, "sampling"), action="OBSERVE", bizStep="sampling",
                 disposition="non_sellable_other")
    return _finish(ctx, event)


def decommissioning(ctx: Context, epcs, kind: str, when: datetime) -> dict:
    """ObjectEvent DELETE: destroyed | sampled | decommissioned, with the matching CBV terms."""
    if kind not in DECOMMISSION_KINDS:
        raise ValueError(f"kind must be one of {sorted(DECOMMISSION_KINDS)}, got {kind!r}")
    biz_step, disposition = DECOMMISSION_KINDS[kind]
    event = _head("ObjectEvent", ctx, when)
    event.update(epcList=_epcs(epcs, kind), action="DELETE", bizStep=biz_step,
                 disposition=disposition)
    return _finish(ctx, event)
