"""Master data: market profiles, products and batches (work orders)."""

from __future__ import annotations

import datetime as _dt
import re
import sqlite3
import zoneinfo
from dataclasses import dataclass

from . import audit, gs1
from .db import transaction
from .epcis.eventhash import check_digit


@dataclass(frozen=True)
class MarketProfile:
    name: str
    alphabet: str  # serial characters the pool generator draws from
    serial_length: int
    nhrn_ais: tuple[str, ...]  # national number AIs this market may carry
    max_guess_probability: float = 1e-4  # EU Delegated Regulation 2016/161 art. 4(b)
    randomised: bool = False  # serials must be unpredictable: an imported pool is tested (host/serials.py)
    upload_before_release: bool = False  # the release waits until the outbox delivered the batch (host/release.py)


PROFILES = {
    # EU FMD: alphanumeric (no I/O to keep reads unambiguous), up to 20. NHRN of the EU members
    # that use one (Syntax Dictionary titles): 710 PZN Germany, 711 CIP France, 712 CN Spain,
    # 714 AIM Portugal, 716 AIC Italy. Not EU: 713 DRN Brazil, 715 NDC USA, 717 SRN Costa Rica.
    "EU_FMD": MarketProfile("EU_FMD", "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", 12,
                            ("710", "711", "712", "714", "716"), randomised=True,  # art. 4(b): randomised
                            upload_before_release=True),  # art. 33(2): uploaded before release for sale
    # US DSCSA: SNI = GTIN + serial (up to 20 alphanumeric); numeric serials keep US readers simple.
    # The NDC sits in the GTIN; 715 (NHRN NDC) carries it where it does not fit there.
    "US_DSCSA": MarketProfile("US_DSCSA", "0123456789", 12, ("715",)),
}


class MasterDataError(ValueError):
    pass


@dataclass(frozen=True)
class Batch:
    batch_id: str
    gtin: str
    lot: str
    expiry: _dt.date
    planned: int
    case_size: int
    pallet_size: int
    state: str
    market: str
    company_prefix_len: int
    nhrn_ai: str | None
    nhrn: str | None
    site: str | None = None        # SGLN URN of the site (bizLocation); None: no site configured
    read_point: str | None = None  # SGLN URN of the line (readPoint)
    tz: str | None = None          # the site's IANA time zone

    @property
    def company_prefix(self) -> str:
        return self.gtin[1:1 + self.company_prefix_len]


@dataclass(frozen=True)
class Location:
    sgln: str
    name: str
    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal: str | None = None
    country: str | None = None
    tz: str | None = None  # set for a site of ours, None for a trading partner's location


@dataclass(frozen=True)
class ProductMaster:
    """A product's DSCSA master data (EPCClass vocabulary of the EPCIS 1.2 header)."""
    gtin: str
    name: str
    ndc: str | None = None  # FDA NDC in its 11-digit form
    dosage_form: str | None = None
    strength: str | None = None
    net_content: str | None = None
    manufacturer: str | None = None


# urn:epc:id:sgln:CompanyPrefix.LocationRef.Extension (extension: AI 254, EPC URI escaped)
_SGLN_URN = re.compile(r"^urn:epc:id:sgln:(\d{6,12})\.(\d{0,6})\.([A-Za-z0-9!'()*+,\-.:;=_]|%[0-9A-F]{2}){1,20}$")
_GLN = re.compile(r"^(\d{13})(?:\.([A-Za-z0-9!'()*+,\-.:;=_%]{1,20}))?$")


def sgln(value: str, prefix_len: int | None = None) -> str:
    """An SGLN URN from `urn:epc:id:sgln:…` or from a GLN (`GLN` or `GLN.EXTENSION`, check digit
    verified; the company prefix length says where the prefix ends)."""
    value = str(value).strip()
    if value.startswith("urn:"):
        m = _SGLN_URN.fullmatch(value)
        if not m or len(m.group(1)) + len(m.group(2)) != 12:
            raise MasterDataError(f"{value!r} is not an SGLN (urn:epc:id:sgln:PREFIX.LOCATION.EXTENSION,"
                                  " prefix and location 12 digits together)")
        return value
    gln, ext = _gln(value)
    if prefix_len is None:
        raise MasterDataError(f"GLN {gln}: give its company prefix length (--prefix-len) or the SGLN URN")
    if not 6 <= int(prefix_len) <= 12:
        raise MasterDataError(f"company prefix length must be 6..12, got {prefix_len}")
    return f"urn:epc:id:sgln:{gln[:prefix_len]}.{gln[prefix_len:12]}.{ext}"


def _gln(value: str) -> tuple[str, str]:
    """(GLN, extension) of `GLN` or `GLN.EXTENSION`, check digit verified."""
    m = _GLN.fullmatch(str(value).strip())
    if not m:
        raise MasterDataError(f"{value!r} is neither a GLN (13 digits[.extension]) nor an SGLN URN")
    gln, ext = m.group(1), m.group(2) or "0"
    if check_digit(gln[:12]) != int(gln[12]):
        raise MasterDataError(f"GLN {gln} has a wrong check digit (expected {check_digit(gln[:12])})")
    return gln, ext


def registered(conn: sqlite3.Connection, value: str, sites_only: bool = False) -> str | None:
    """The SGLN URN of the registered location (a site of ours, if sites_only) that `value`
    names, as an SGLN URN or as GLN[.EXTENSION]; None if none is registered."""
    known = [u for (u,) in conn.execute("SELECT sgln FROM location"
                                        + (" WHERE tz IS NOT NULL" if sites_only else ""))]
    if str(value).strip().startswith("urn:"):
        urn = sgln(value)
        return urn if urn in known else None
    gln, ext = _gln(value)
    return next((u for u in known if gln_of(u) == gln and u.rsplit(".", 1)[1] == ext), None)


def gln_of(urn: str) -> str:
    """The 13-digit GLN of an SGLN URN."""
    digits = "".join(urn[len("urn:epc:id:sgln:"):].split(".")[:2])
    return digits + str(check_digit(digits))


def time_zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(str(name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise MasterDataError(f"unknown time zone {name!r} (want an IANA name such as Europe/Berlin)") from None


def _printable(**fields) -> None:
    """Names and descriptions travel in EPCIS documents (XML 1.2 cannot carry control characters):
    each given one is printable text, checked when it is entered, not when a partner needs it."""
    for name, value in fields.items():
        if value is not None and not str(value).isprintable():
            raise MasterDataError(f"{name.replace('_', ' ')} {value!r}: control characters are not allowed")


def _audit(conn, user: str | None, action: str, detail: dict) -> None:
    """The change's audit record, in the caller's transaction (None: the caller audits it)."""
    if user is not None:
        audit.append(conn, user, action, detail)


def set_location(conn: sqlite3.Connection, location: Location, *, user: str | None = None) -> bool:
    """Add or update a location (a site when it has a time zone); an update changes the parts
    given and keeps the others (so a site keeps its zone). True if it was new. With `user`, the
    change and its audit record (location.set) commit together."""
    urn = sgln(location.sgln)
    if not location.name or not location.name.strip():
        raise MasterDataError(f"location {urn}: a name is required")
    _printable(name=location.name, street=location.street, city=location.city, state=location.state,
               postal=location.postal)
    if location.country is not None and not re.fullmatch(r"[A-Z]{2}", location.country):
        raise MasterDataError(f"country must be an ISO 3166-1 alpha-2 code such as DE, got {location.country!r}")
    if location.tz is not None:
        time_zone(location.tz)
    row = (urn, location.name.strip(), location.street, location.city, location.state, location.postal,
           location.country, location.tz)
    with transaction(conn):
        new = conn.execute("SELECT 1 FROM location WHERE sgln=?", (urn,)).fetchone() is None
        keep = ", ".join(f"{c} = COALESCE(excluded.{c}, {c})"
                         for c in ("street", "city", "state", "postal", "country", "tz"))
        conn.execute("INSERT INTO location VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (sgln) DO UPDATE SET"
                     " name = excluded.name, " + keep, row)
        _audit(conn, user, "location.set", {**vars(location), "sgln": urn})
    return new


def get_location(conn: sqlite3.Connection, urn: str) -> Location | None:
    row = conn.execute("SELECT * FROM location WHERE sgln=?", (urn,)).fetchone()
    return Location(*row) if row else None


def _site(conn: sqlite3.Connection, value: str | None) -> str | None:
    """The site a batch runs at: the one named (SGLN URN or GLN), else the ledger's only site."""
    sites = [s for (s,) in conn.execute("SELECT sgln FROM location WHERE tz IS NOT NULL ORDER BY sgln")]
    if value is None:
        if len(sites) > 1:
            raise MasterDataError(f"{len(sites)} sites are configured: name one with --site")
        return sites[0] if sites else None
    site = registered(conn, value, sites_only=True)
    if site is None:
        raise MasterDataError(f"unknown site {value}: configure it first (serialine batch site … --tz ZONE)")
    return site


def _read_point(value: str | None, site: str) -> str:
    """The line's read point: an SGLN URN, `GLN.EXT` (prefix length from the site), or the site."""
    if value is None:
        return site
    prefix_len = len(site[len("urn:epc:id:sgln:"):].split(".")[0])
    return sgln(value, prefix_len)


def _ndc11(value: str) -> str:
    """FDA NDC as 11 digits (FDA_NDC_11): 11 digits, or the labeled 4-4-2 / 5-3-2 / 5-4-1 form."""
    value = str(value).strip()
    if re.fullmatch(r"\d{11}", value):
        return value
    m = re.fullmatch(r"(\d{4,5})-(\d{3,4})-(\d{1,2})", value)
    if m and len(value) == 12:
        labeler, product, package = m.groups()
        return labeler.zfill(5) + product.zfill(4) + package.zfill(2)
    raise MasterDataError(f"NDC {value!r}: want 11 digits or a 10-digit NDC as 4-4-2, 5-3-2 or 5-4-1")


def add_product(conn: sqlite3.Connection, gtin: str, name: str, market: str, company_prefix_len: int,
                nhrn_ai: str | None = None, nhrn: str | None = None, *, ndc: str | None = None,
                dosage_form: str | None = None, strength: str | None = None,
                net_content: str | None = None, manufacturer: str | None = None,
                user: str | None = None) -> None:
    """With `user`, the product and its audit record (product.add, sealing the row) commit together."""
    if market not in PROFILES:
        raise MasterDataError(f"unknown market profile {market!r} (known: {', '.join(PROFILES)})")
    gs1.validate([("01", gtin)])
    if not 6 <= int(company_prefix_len) <= 12:
        raise MasterDataError(f"company prefix length must be 6..12, got {company_prefix_len}")
    if set(gtin[1:1 + int(company_prefix_len)]) == {"0"}:
        raise MasterDataError(f"GTIN {gtin}: its company prefix ({company_prefix_len} digits after the indicator)"
                              " is all zeros, which GS1 never allocates")
    if (nhrn_ai is None) != (nhrn is None):
        raise MasterDataError("a national number needs both --nhrn-ai AI and --nhrn VALUE")
    if nhrn_ai is not None:
        if nhrn_ai not in PROFILES[market].nhrn_ais:
            uses = ", ".join(f"{ai} ({gs1.dictionary()[ai].title})" for ai in PROFILES[market].nhrn_ais) or "none"
            raise MasterDataError(f"market {market} carries no national number AI ({nhrn_ai}); its NHRN AIs: {uses}")
        gs1.validate([("01", gtin), (nhrn_ai, nhrn or "")])
    _printable(name=name, dosage_form=dosage_form, strength=strength, net_content=net_content,
               manufacturer=manufacturer)
    master = (ndc and _ndc11(ndc), dosage_form, strength, net_content, manufacturer)
    with transaction(conn):
        try:
            conn.execute("INSERT INTO product VALUES (?,?,?,?,?,?)",
                         (gtin, name, market, int(company_prefix_len), nhrn_ai, nhrn))
        except sqlite3.IntegrityError as exc:
            raise MasterDataError(f"product {gtin}: {exc}") from None
        if any(v is not None for v in master):
            conn.execute("INSERT INTO product_master VALUES (?,?,?,?,?,?)", (gtin, *master))
        _audit(conn, user, "product.add", {"gtin": gtin, "market": market, "ndc": ndc, "dosage_form": dosage_form,
                                           "strength": strength, "net_content": net_content,
                                           "manufacturer": manufacturer})


def set_product_master(conn: sqlite3.Connection, gtin: str, *, ndc: str | None = None,
                       dosage_form: str | None = None, strength: str | None = None,
                       net_content: str | None = None, manufacturer: str | None = None,
                       user: str | None = None) -> ProductMaster:
    """Add or change a product's DSCSA master data (a product made before it had any, or a
    correction): the fields given change, the others stay. With `user`, audited (product.master,
    sealing the row) in the same transaction; its seal supersedes the earlier ones of that row."""
    given = {"ndc": ndc and _ndc11(ndc), "dosage_form": dosage_form, "strength": strength,
             "net_content": net_content, "manufacturer": manufacturer}
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        raise MasterDataError("give at least one of --ndc, --dosage-form, --strength, --net-content, --manufacturer")
    for k, v in given.items():
        if not str(v).strip():
            raise MasterDataError(f"{k.replace('_', '-')} must not be empty")
    _printable(**given)
    with transaction(conn):
        get_product_master(conn, gtin)  # an unknown GTIN says so
        conn.execute("INSERT INTO product_master (gtin) VALUES (?) ON CONFLICT (gtin) DO NOTHING", (gtin,))
        conn.execute(f"UPDATE product_master SET {', '.join(f'{k} = ?' for k in given)} WHERE gtin = ?",
                     (*given.values(), gtin))
        _audit(conn, user, "product.master", {"gtin": gtin, **given})
        return get_product_master(conn, gtin)


def get_product_master(conn: sqlite3.Connection, gtin: str) -> ProductMaster:
    row = conn.execute("SELECT p.gtin, p.name, m.ndc, m.dosage_form, m.strength, m.net_content,"
                       " m.manufacturer FROM product p LEFT JOIN product_master m USING (gtin)"
                       " WHERE p.gtin=?", (gtin,)).fetchone()
    if row is None:
        raise MasterDataError(f"unknown GTIN {gtin}")
    return ProductMaster(*row)


def _date(value) -> _dt.date:
    if isinstance(value, _dt.date):
        return value
    return gs1.parse_expiry(value)  # YYYY-MM-DD, or YYYY-MM-00 (GS1 day 00: the month only)


def create_batch(conn: sqlite3.Connection, batch_id: str, gtin: str, lot: str, expiry, planned: int,
                 case_size: int, pallet_size: int, *, site: str | None = None,
                 read_point: str | None = None, user: str | None = None) -> Batch:
    """`site` (SGLN URN or GLN of a configured site; default: the only one) and `read_point`
    (SGLN URN or GLN.EXT; default: the site) say where the batch's EPCIS events happen. With
    `user`, the batch and its audit record (batch.create, sealing its master data) commit together."""
    expiry = _date(expiry)
    if not batch_id or not batch_id.isprintable():
        raise MasterDataError(f"bad batch id {batch_id!r}")
    if conn.execute("SELECT 1 FROM product WHERE gtin=?", (gtin,)).fetchone() is None:
        raise MasterDataError(f"unknown GTIN {gtin}: add the product first")
    gs1.validate([("01", gtin), ("10", lot), ("17", gs1.yymmdd(expiry))])
    if expiry <= _dt.date.today():
        raise MasterDataError(f"expiry {expiry} is not in the future")
    for name, v in (("planned", planned), ("case_size", case_size), ("pallet_size", pallet_size)):
        if int(v) <= 0:
            raise MasterDataError(f"{name} must be positive, got {v}")
    site = _site(conn, site)
    if site is None and read_point is not None:
        raise MasterDataError("a read point needs a site: configure one (serialine batch site … --tz ZONE)")
    with transaction(conn):
        try:
            conn.execute("INSERT INTO batch (batch_id, gtin, lot, expiry, planned, case_size, pallet_size)"
                         " VALUES (?,?,?,?,?,?,?)",
                         (batch_id, gtin, lot, gs1.expiry_text(expiry), planned, case_size, pallet_size))
        except sqlite3.IntegrityError as exc:
            raise MasterDataError(f"batch {batch_id}: {exc}") from None
        if site is not None:
            conn.execute("INSERT INTO batch_site VALUES (?,?,?)", (batch_id, site, _read_point(read_point, site)))
        b = get_batch(conn, batch_id)
        _audit(conn, user, "batch.create", {"batch_id": batch_id, "gtin": gtin, "lot": lot,
                                            "expiry": gs1.expiry_text(expiry), "site": b.site,
                                            "read_point": b.read_point})
    return b


def start_batch(conn: sqlite3.Connection, batch_id: str, *, user: str | None = None) -> None:
    """created -> running; with `user`, audited (batch.start) in the same transaction."""
    with transaction(conn):
        cur = conn.execute("UPDATE batch SET state='running' WHERE batch_id=? AND state='created'",
                           (batch_id,))
        if cur.rowcount != 1:
            state = get_batch(conn, batch_id).state  # an unknown batch says so here
            raise MasterDataError(f"batch {batch_id} is {state}: only a created batch can be started")
        _audit(conn, user, "batch.start", {"batch_id": batch_id})


def get_batch(conn: sqlite3.Connection, batch_id: str) -> Batch:
    row = conn.execute(
        "SELECT b.batch_id, b.gtin, b.lot, b.expiry, b.planned, b.case_size, b.pallet_size, b.state,"
        " p.market, p.company_prefix_len, p.nhrn_ai, p.nhrn, s.site, s.read_point, l.tz"
        " FROM batch b JOIN product p USING (gtin) LEFT JOIN batch_site s USING (batch_id)"
        " LEFT JOIN location l ON l.sgln = s.site WHERE b.batch_id=?", (batch_id,)).fetchone()
    if row is None:
        raise MasterDataError(f"unknown batch {batch_id!r}")
    row = list(row)
    row[3] = gs1.parse_expiry(row[3])
    return Batch(*row)
