"""Fixtures for the EPCIS tests: a context, EPCs, and one event of every kind we emit."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from serialine.host.epcis import events as ev
from serialine.host.epcis.eventhash import check_digit

GTIN = "04012345123456"


def sscc(n: int) -> str:
    body = f"34012345{n:09d}"
    return body + str(check_digit(body))


@pytest.fixture
def ctx():
    return ev.Context(read_point=ev.sgln_urn("4012345000009", 7, "1"),
                      biz_location=ev.sgln_urn("4012345000009", 7), tz_offset="+01:00")


def all_kinds(ctx, n_units: int = 3, batch: str = "B1") -> list[dict]:
    """One event of every kind the agent emits, in ledger order."""
    when = datetime(2026, 11, 24, 17, 0, 0, 123000, tzinfo=timezone.utc)
    units = [ev.sgtin_urn(GTIN, f"{batch}S{i:04d}", 7) for i in range(n_units)]
    case = ev.sscc_urn(sscc(1), 7)
    pallet = ev.sscc_urn(sscc(2), 7)
    return [
        ev.commissioning(ctx, units, "L0042", date(2028, 1, 31), when),
        ev.packing(ctx, case, units, when),
        ev.packing(ctx, pallet, [case], when),
        ev.unpacking(ctx, case, units[:1], when),
        ev.decommissioning(ctx, units[:1], "destroyed", when),
        ev.sampling(ctx, units[:1], when),  # a sample's end of life is a decommissioning, as next
        ev.decommissioning(ctx, units[:1], "decommissioned", when),
    ]


@pytest.fixture
def events_all(ctx):
    return all_kinds(ctx)
