"""Master data: market profiles, products and batches (work orders)."""

from __future__ import annotations

import datetime as _dt
import sqlite3
from dataclasses import dataclass

from . import gs1
from .db import transaction


@dataclass(frozen=True)
class MarketProfile:
    name: str
    alphabet: str  # serial characters the pool generator draws from
    serial_length: int
    nhrn_ais: tuple[str, ...]  # national number AIs this market may carry
    max_guess_probability: float = 1e-4  # EU Delegated Regulation 2016/161 art. 4(b)


PROFILES = {
    # EU FMD: alphanumeric (no I/O to keep reads unambiguous), up to 20; NHRN (710-714) where needed.
    "EU_FMD": MarketProfile("EU_FMD", "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", 12,
                            ("710", "711", "712", "713", "714", "715", "716")),
    # US DSCSA: SNI = GTIN + serial (up to 20 alphanumeric); numeric serials keep US readers simple.
    "US_DSCSA": MarketProfile("US_DSCSA", "0123456789", 12, ()),
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

    @property
    def company_prefix(self) -> str:
        return self.gtin[1:1 + self.company_prefix_len]


def add_product(conn: sqlite3.Connection, gtin: str, name: str, market: str, company_prefix_len: int,
                nhrn_ai: str | None = None, nhrn: str | None = None) -> None:
    if market not in PROFILES:
        raise MasterDataError(f"unknown market profile {market!r} (known: {', '.join(PROFILES)})")
    gs1.validate([("01", gtin)])
    if not 6 <= int(company_prefix_len) <= 12:
        raise MasterDataError(f"company prefix length must be 6..12, got {company_prefix_len}")
    if nhrn_ai is not None:
        if nhrn_ai not in PROFILES[market].nhrn_ais:
            raise MasterDataError(f"market {market} carries no national number AI ({nhrn_ai})")
        gs1.validate([("01", gtin), (nhrn_ai, nhrn or "")])
    with transaction(conn):
        try:
            conn.execute("INSERT INTO product VALUES (?,?,?,?,?,?)",
                         (gtin, name, market, int(company_prefix_len), nhrn_ai, nhrn))
        except sqlite3.IntegrityError as exc:
            raise MasterDataError(f"product {gtin}: {exc}") from None


def _date(value) -> _dt.date:
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value))
    except ValueError:
        raise MasterDataError(f"invalid date {value!r} (want YYYY-MM-DD)") from None


def create_batch(conn: sqlite3.Connection, batch_id: str, gtin: str, lot: str, expiry, planned: int,
                 case_size: int, pallet_size: int) -> None:
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
    with transaction(conn):
        try:
            conn.execute("INSERT INTO batch (batch_id, gtin, lot, expiry, planned, case_size, pallet_size)"
                         " VALUES (?,?,?,?,?,?,?)",
                         (batch_id, gtin, lot, expiry.isoformat(), planned, case_size, pallet_size))
        except sqlite3.IntegrityError as exc:
            raise MasterDataError(f"batch {batch_id}: {exc}") from None


def start_batch(conn: sqlite3.Connection, batch_id: str) -> None:
    with transaction(conn):
        cur = conn.execute("UPDATE batch SET state='running' WHERE batch_id=? AND state='created'",
                           (batch_id,))
        if cur.rowcount != 1:
            raise MasterDataError(f"batch {batch_id} is not a created batch")


def get_batch(conn: sqlite3.Connection, batch_id: str) -> Batch:
    row = conn.execute(
        "SELECT b.batch_id, b.gtin, b.lot, b.expiry, b.planned, b.case_size, b.pallet_size, b.state,"
        " p.market, p.company_prefix_len, p.nhrn_ai, p.nhrn FROM batch b JOIN product p USING (gtin)"
        " WHERE b.batch_id=?", (batch_id,)).fetchone()
    if row is None:
        raise MasterDataError(f"unknown batch {batch_id!r}")
    row = list(row)
    row[3] = _dt.date.fromisoformat(row[3])
    return Batch(*row)
