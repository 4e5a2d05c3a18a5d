"""Host fixtures: a real SQLite ledger file with one product, a serial pool and a running batch."""

from __future__ import annotations

import pytest

from serialine.host import db, masterdata, serials
from serialine.host.db import transaction
from serialine.host.ledger import Ledger

from hostkit import GTIN, PREFIX_LEN, Line  # noqa: E402


@pytest.fixture
def conn(tmp_path):
    c = db.connect(str(tmp_path / "ledger.db"))
    masterdata.add_product(c, GTIN, "Aspirin 100 mg", "EU_FMD", PREFIX_LEN)
    serials.generate(c, GTIN, 300)
    masterdata.create_batch(c, "B1", GTIN, "L1", "2030-01-31", 100, 3, 2)
    masterdata.start_batch(c, "B1")
    yield c
    c.close()


@pytest.fixture
def ledger(conn):
    return Ledger(conn, "B1")


@pytest.fixture
def line(ledger):
    with transaction(ledger.conn):
        ledger.queue_codes(20)
    return Line(ledger)
