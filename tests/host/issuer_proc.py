"""A stand-alone agent process for the SIGKILL test: queues codes ahead (allocation), stores a
deterministic device event stream, judges every unit, and prints `ACK <event_seq>` only after the
transaction holding that event committed — what the real agent acknowledges to the device.

usage: issuer_proc.py DB BOOT_ID FIRST_UNIT LAST_UNIT [RESEND_BOOT RESEND_FROM_UNIT RESEND_TO_UNIT]"""

import sys

from serialine.host import db
from serialine.host.db import transaction
from serialine.host.ledger import Ledger


def unit_events(u):
    """The device's events for unit u: event_seq 4u+1..4u+4 (identical when resent)."""
    s = 4 * u
    return [("UNIT_DETECTED", dict(event_seq=s + 1, unit_seq=u, pos=0, t_us=0, flags=0)),
            ("UNIT_PRINTED", dict(event_seq=s + 2, unit_seq=u, pos=0, t_us=0)),
            ("UNIT_INSPECTED", dict(event_seq=s + 3, unit_seq=u, pos=0, t_us=0)),
            ("UNIT_OUTCOME", dict(event_seq=s + 4, unit_seq=u, outcome=1, reason=0, gate_error=0, pos=0, t_us=0))]


def run_unit(L, boot, u):
    ev = unit_events(u)
    with transaction(L.conn):
        if L.queued_depth() < 4:
            L.queue_codes(4)
    with transaction(L.conn):
        for name, f in ev[:3]:
            L.store("dev1", boot, name, f)
        code = L.expected_code("dev1", boot, u)
        if code is not None:
            v, r, s = L.judge.decide("]d2" + code, "A", code)
            L.record_verdict("dev1", boot, u, v, r, s, "A")
    with transaction(L.conn):
        L.store("dev1", boot, *ev[3])
        L.flush_events()
    print(f"ACK {boot} {ev[3][1]['event_seq']}", flush=True)


def main(argv):
    path, boot, first, last = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    L = Ledger(db.connect(path), "B1")
    if len(argv) > 4:  # the device resends what it had not seen acknowledged (some was stored)
        rboot, rfrom, rto = map(int, argv[4:7])
        for u in range(rfrom, rto + 1):
            run_unit(L, rboot, u)
    with transaction(L.conn):
        L.new_boot("dev1", boot)
    for u in range(first, last + 1):
        run_unit(L, boot, u)
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
