"""What one poll leaves in the ledger's rows: a device event's body without the fields its key and
unit_seq columns hold (the row still carries the whole event), and a unit printed in the poll
that detected it gets its serial with its row, one printed later by an update: the same rows."""

import json

from hostkit import GTIN


def test_event_body_leaves_out_what_its_columns_hold(line):
    conn = line.ledger.conn
    line.store([line.event("UNIT_DETECTED", unit_seq=0, pos=11, t_us=22, flags=0)])
    (seq, unit, body), = conn.execute("SELECT event_seq, unit_seq, body FROM device_event_v1").fetchall()
    assert unit == 0 and json.loads(body) == {"pos": 11, "t_us": 22, "flags": 0}
    assert seq == line.event_seq


def test_a_print_binds_the_same_with_or_without_its_detection_in_the_poll(line):
    conn = line.ledger.conn
    line.store([line.event("UNIT_DETECTED", unit_seq=0, pos=0, t_us=0, flags=0),
                line.event("UNIT_PRINTED", unit_seq=0, pos=0, t_us=0)])  # one poll: inserted with its serial
    line.store([line.event("UNIT_DETECTED", unit_seq=1, pos=0, t_us=0, flags=0)])
    line.store([line.event("UNIT_PRINTED", unit_seq=1, pos=0, t_us=0)])  # a later poll: updated
    line.store([line.event("UNIT_PRINTED", unit_seq=3, pos=0, t_us=0)])  # unit 2 and 3 never detected
    rows = conn.execute("SELECT unit_seq, gtin, serial, outcome FROM unit ORDER BY unit_seq").fetchall()
    jobs = [s for (s,) in conn.execute("SELECT serial FROM coder_job WHERE state='bound' ORDER BY job_id")]
    assert [(u, g, s) for u, g, s, _ in rows] == [(0, GTIN, jobs[0]), (1, GTIN, jobs[1]), (2, GTIN, jobs[2]),
                                                  (3, GTIN, jobs[3])]
    assert [o for *_, o in rows] == [None, None, "UNKNOWN", "UNKNOWN"]
    assert dict(conn.execute("SELECT state, count(*) FROM serial WHERE batch_id='B1' GROUP BY state"))["printed"] == 4
