"""With the host's own ledger (host/db.py connections: WAL, explicit BEGIN IMMEDIATE): events
enter the outbox in the ledger's transaction, and a forwarder on its own connection delivers them
while the ledger keeps writing — in order, each once in the ledger's count, all upstream."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta

import pytest

from serialine.host import db, masterdata, reporting
from serialine.host.epcis import document, outbox, validate
from serialine.host.epcis.capture_server import CaptureServer
from serialine.host.epcis.forwarder import Forwarder
from serialine.host.epcis.sinks.http import HttpCaptureSink

GTIN = "04012345123456"


@pytest.fixture
def ledger(tmp_path):
    path = str(tmp_path / "ledger.db")
    conn = db.connect(path)
    masterdata.add_product(conn, GTIN, "Test tablets", "EU_FMD", 7)
    masterdata.create_batch(conn, "B1", GTIN, "LOT7", date.today() + timedelta(days=700), 1000, 10, 100)
    masterdata.start_batch(conn, "B1")
    return path, conn, masterdata.get_batch(conn, "B1")


def test_failed_ledger_transaction_leaves_no_event(ledger):
    path, conn, batch = ledger
    ctx = reporting.context_for(batch)
    with pytest.raises(RuntimeError):
        with db.transaction(conn):
            reporting.commissioned(conn, ctx, batch, ["A1", "A2"])
            raise RuntimeError("unit store failed")
    assert outbox.counts(conn) == {"pending": 0, "delivered": 0}
    with db.transaction(conn):
        reporting.commissioned(conn, ctx, batch, ["A1", "A2"])
    events = outbox.batch_events(conn, "B1")
    assert len(events) == 1 and events[0]["ilmd"]["cbvmda:lotNumber"] == "LOT7"
    validate.json_document(document.epcis_document(events))


def test_forwarder_delivers_while_the_ledger_writes(ledger):
    path, conn, batch = ledger
    ctx = reporting.context_for(batch)
    stop = threading.Event()
    with CaptureServer() as server:
        server.fail_http = 3  # a few upstream hiccups along the way
        fwd_conn = db.connect(path)
        fwd = Forwarder(fwd_conn, HttpCaptureSink(server.url, poll_interval=0.005), doc_size=4,
                        backoff_base=0.01, backoff_max=0.05)
        thread = threading.Thread(target=fwd.run, args=(stop, 0.01))
        thread.start()
        try:
            for i in range(40):
                with db.transaction(conn):
                    reporting.commissioned(conn, ctx, batch, [f"S{i:04d}"])
            deadline = time.monotonic() + 20
            while outbox.counts(conn)["pending"] and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            thread.join(10)
        ids = [e["eventID"] for e in outbox.batch_events(conn, "B1")]
        assert outbox.counts(conn) == {"pending": 0, "delivered": 40}
        assert set(server.events) == set(ids) and server.duplicates == 0
        delivered_order = [r[0] for r in conn.execute(
            "SELECT event_id FROM epcis_outbox ORDER BY delivered_at, seq")]
        assert delivered_order == ids
