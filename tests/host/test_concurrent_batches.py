"""Two batches of one GTIN drawing from the same pool at the same time, over separate connections:
no serial goes to both."""

import threading

from serialine.host import db, masterdata
from serialine.host.db import transaction
from serialine.host.ledger import Ledger

from hostkit import GTIN


def test_concurrent_batches_never_share_a_serial(conn, tmp_path):
    masterdata.create_batch(conn, "B2", GTIN, "L2", "2030-01-31", 100, 3, 2)
    masterdata.start_batch(conn, "B2")
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    got = {"B1": [], "B2": []}

    def issue(batch_id):
        ledger = Ledger(db.connect(path), batch_id)
        for _ in range(25):
            with transaction(ledger.conn):
                got[batch_id] += [s for s, _ in ledger.queue_codes(5)]

    threads = [threading.Thread(target=issue, args=(b,)) for b in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got["B1"]) == len(got["B2"]) == 125
    assert not set(got["B1"]) & set(got["B2"])
    rows = dict(conn.execute("SELECT batch_id, count(*) FROM serial WHERE state='allocated' GROUP BY batch_id"))
    assert rows == {"B1": 125, "B2": 125}
