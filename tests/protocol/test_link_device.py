"""The device link endpoint under the real MicroPython unix port, driven through an in-memory
port: ring, acks, go-back-N, HELLO renumbering, exactly-once apply, and no allocation on the
per-event path (heap locked)."""

from __future__ import annotations

PRELUDE = r"""
import micropython, time, wire, link

class Info:
    fw_version = "t-1"
    board = "sim"
    device_id = "dev-1"
    boot_id = 7
    reset_cause = 1
    next_unit_seq = 0
    state = 1
    pos = 0

class Port:
    # bytes the 'host' sent wait in rx; every frame the device writes is recorded (type/seq/ack)
    def __init__(s):
        s.rx = bytearray(8192); s.n = 0; s.p = 0
        s.writes = 0; s.last_type = -1; s.last_seq = -1; s.last_ack = -1
        s.types = bytearray(4096); s.seqs = bytearray(4096)
    def load(s, b, n):
        for j in range(n):
            s.rx[s.n + j] = b[j]
        s.n += n
    def readinto(s, buf):
        k = s.n - s.p
        if k > len(buf):
            k = len(buf)
        for j in range(k):
            buf[j] = s.rx[s.p + j]
        s.p += k
        if s.p == s.n:
            s.p = 0; s.n = 0
        return k
    def write(s, buf, n):
        if s.writes < 4096:
            s.types[s.writes] = buf[5]; s.seqs[s.writes] = buf[3]
        s.writes += 1; s.last_type = buf[5]; s.last_seq = buf[3]; s.last_ack = buf[4]
        return n

applied = [0, 0, 0]  # count, last command arg, last msg type
def handler(t, frame):
    applied[0] += 1
    applied[1] = frame[7] | (frame[8] << 8)
    applied[2] = t

def frame(enc, *args):
    b = bytearray(wire.MAX_FRAME)
    return b, enc(b, *args)

port = Port()
lk = link.Link(port, Info(), slots=8, window=4, rto_ms=50, rto_max_ms=400, timeout_ms=1000)
hello, hn = frame(wire.enc_hello, 0, 0, wire.FINGERPRINT, wire.PROTOCOL_VERSION)
"""


def test_hello_opens_session_and_refuses_other_fingerprint(run_mp):
    out = run_mp(PRELUDE + r"""
bad, bn = frame(wire.enc_hello, 0, 0, wire.FINGERPRINT ^ 1, wire.PROTOCOL_VERSION)
port.load(bad, bn); lk.poll(0, handler)
print("refused", port.last_type, lk.up)
cmd, cn = frame(wire.enc_command, 0, 0, wire.CMD_START, 5)
port.load(cmd, cn); lk.poll(1, handler)
print("after-refusal applied", applied[0])
port.load(hello, hn); lk.poll(2, handler)
print("open", port.last_type, lk.up, lk.sessions)
port.load(cmd, cn); lk.poll(3, handler)
print("applied", applied[0], applied[1])
""")
    lines = out.splitlines()
    assert lines[0] == "refused 2 False"
    assert lines[1] == "after-refusal applied 0"
    assert lines[2] == "open 2 True 1"  # the HELLO_REPLY was the last frame written
    assert lines[3] == "applied 1 5"


def test_host_messages_applied_once_in_order(run_mp):
    out = run_mp(PRELUDE + r"""
port.load(hello, hn); lk.poll(0, handler)
c0, n0 = frame(wire.enc_command, 0, 0, wire.CMD_START, 10)
c1, n1 = frame(wire.enc_command, 1, 0, wire.CMD_STOP, 11)
c2, n2 = frame(wire.enc_command, 2, 0, wire.CMD_START, 12)
port.load(c1, n1); lk.poll(1, handler)          # gap: seq 1 before 0 -> discarded, re-acked
print("gap", applied[0], port.last_type, port.last_ack)
port.load(c0, n0); lk.poll(2, handler)
print("first", applied[0], applied[1], port.last_ack)
port.load(c0, n0); lk.poll(3, handler)          # duplicate -> not applied again
print("dup", applied[0], lk.duplicates, port.last_ack)
port.load(c1, n1); port.load(c2, n2); lk.poll(4, handler)
print("rest", applied[0], applied[1], port.last_ack)
""")
    lines = out.splitlines()
    assert lines[0] == "gap 0 0 0"  # an ACK saying 'still expecting 0'
    assert lines[1] == "first 1 10 1"
    assert lines[2] == "dup 1 2 1"
    assert lines[3] == "rest 3 12 3"


def test_ring_full_ack_retransmit_and_renumbering(run_mp):
    out = run_mp(PRELUDE + r"""
port.load(hello, hn); lk.poll(0, handler)
print("replies", port.writes, port.last_type)       # the HELLO_REPLY, four times
def ev(i):
    s = lk.reserve()
    if s is None:
        return False
    lk.commit(wire.enc_unit_detected(s, 0, 0, i, i, i * 10, i * 7, 0))
    return True
n = 0
while ev(n):
    n += 1
print("capacity", n, lk.queue_fill)
lk.poll(0, handler)
print("sent", port.writes - 4, lk.sent, port.last_seq)   # window 4 of 8
a2, an = frame(wire.enc_ack, 0, 2)
port.load(a2, an); lk.poll(10, handler)             # ack time 10 ms: srtt 10, rto 10 + 4 x 5
print("acked2", lk.queue_fill, lk.sent, port.last_seq, lk.rto)
w = port.writes
port.load(a2, an); lk.poll(11, handler)             # a duplicate ack: not yet
port.load(a2, an); lk.poll(12, handler)             # the second: fast retransmit of seq 2 only
print("fast", port.writes - w, port.seqs[port.writes - 1], lk.fast_retransmits)
a3, an3 = frame(wire.enc_ack, 0, 3)
w = port.writes
port.load(a3, an3); lk.poll(13, handler)            # a partial ack: the next hole at once
print("partial", port.writes - w, port.seqs[w], lk.queue_fill, lk.rto)
w = port.writes
lk.poll(13 + lk.rto - 1, handler)
print("before-rto", port.writes - w)
lk.poll(13 + lk.rto, handler)                       # RTO: only the oldest (seq 3) again
print("rto", port.writes - w, port.types[w], port.seqs[w], lk.timeouts)
r0 = lk.rto
w = port.writes
lk.poll(13 + 3 * r0, handler)                       # the host is there (link up): no backoff,
print("no-backoff", lk.timeouts, lk.rto == r0, port.writes - w)  # but the hole goes twice
lk.poll(1100, handler)                              # silent past timeout_ms: link down
r0 = lk.rto
lk.poll(1100 + r0, handler)
print("backoff", lk.up, lk.rto == 2 * r0)
bogus, bn = frame(wire.enc_ack, 0, 200)
port.load(bogus, bn); lk.poll(2000, handler)
print("bogus", lk.queue_fill)
# a new session: unacked events stay and are renumbered from 0
port.load(hello, hn); lk.poll(3000, handler)
print("renumbered", lk.queue_fill, port.seqs[port.writes - 4], port.last_seq, lk.sessions)
""")
    lines = out.splitlines()
    assert lines[0] == "replies 4 2"
    assert lines[1] == "capacity 8 8"
    assert lines[2] == "sent 4 4 3"
    assert lines[3] == "acked2 6 4 5 30"
    assert lines[4] == "fast 1 2 1"
    assert lines[5] == "partial 2 3 5 33"  # seq 3 and the new seq 6 sent; srtt 9 + 4 x rttvar 6
    assert lines[6] == "before-rto 0"
    assert lines[7] == "rto 1 32 3 1"
    assert lines[8] == "no-backoff 2 True 2"
    assert lines[9] == "backoff False True"
    assert lines[10] == "bogus 5"
    assert lines[11] == "renumbered 5 0 3 2"


def test_link_lost_after_timeout(run_mp):
    out = run_mp(PRELUDE + r"""
port.load(hello, hn); lk.poll(0, handler)
lk.poll(1000, handler); print(lk.up)
lk.poll(1001, handler); print(lk.up)
p, pn = frame(wire.enc_ping, 0, 0, 9, 0)
port.load(p, pn); lk.poll(1002, handler); print(lk.up, port.last_type)
""")
    assert out.split() == ["True", "False", "True", "4"]


def test_per_event_path_allocates_nothing(run_mp):
    out = run_mp(PRELUDE + r"""
port.load(hello, hn); lk.poll(0, handler)
acks = [frame(wire.enc_ack, 0, (i + 1) & 0xFF) for i in range(300)]
cmds = [frame(wire.enc_command, i & 0xFF, 0, wire.CMD_START, i) for i in range(300)]
now = 1
micropython.heap_lock()
try:
    i = 0
    full = 0
    while i < 300:
        s = lk.reserve()
        lk.commit(wire.enc_unit_detected(s, 0, 0, i, i, i * 10, i * 7, 0))
        lk.poll(now, handler)                   # send
        lk.poll(now, handler)                   # nothing to do
        now = time.ticks_add(now, 60)
        lk.poll(now, handler)                   # RTO: retransmit
        b, n = acks[i]
        port.load(b, n)
        b, n = cmds[i]
        port.load(b, n)
        lk.poll(now, handler)                   # ack + a host message applied + our ack
        i += 1
    while lk.reserve() is not None:             # fill the ring: the caller learns it
        lk.commit(wire.enc_unit_detected(lk.reserve(), 0, 0, 0, 0, 0, 0, 0))
        full += 1
finally:
    micropython.heap_unlock()
print(lk.retransmits, applied[0], applied[1], lk.queue_fill, full)
""")
    retransmits, applied, last, fill, full = map(int, out.split())
    assert retransmits == 300 and applied == 300 and last == 299
    assert fill == 8 and full == 8


def test_fast_retransmit_partial_acks_and_repeated_rtos_allocate_nothing(run_mp):
    out = run_mp(PRELUDE + r"""
port.load(hello, hn); lk.poll(0, handler)
dups = [frame(wire.enc_ack, 0, i & 0xFF) for i in range(200)]
now = 1
i = _ = n = 0  # the loop's globals exist before the lock
s = b = None
micropython.heap_lock()
try:
    for i in range(200):
        for _ in range(3):
            s = lk.reserve()
            if s is not None:
                lk.commit(wire.enc_unit_detected(s, 0, 0, i, i, i * 10, i * 7, 0))
        lk.poll(now, handler)                   # send the window
        b, n = dups[i]
        port.load(b, n); port.load(b, n)        # two duplicate acks: fast retransmit
        lk.poll(now, handler)
        for _ in range(3):                      # RTOs in a row: the hole goes 1, 2, 3 times
            now = time.ticks_add(now, 1100)
            lk.poll(now, handler)
        b, n = dups[(i + 1) % 200]
        port.load(b, n)                         # a partial ack: the next hole at once
        lk.poll(now, handler)
finally:
    micropython.heap_unlock()
print(lk.fast_retransmits > 100, lk.timeouts >= 600, lk.queue_fill)
""")
    assert out.split()[:2] == ["True", "True"]
