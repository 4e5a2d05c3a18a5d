# Runs under the MicroPython unix port: the per-unit path of firmware/wire.py with the heap
# locked. Any allocation raises MemoryError; each step prints "ok NAME" or "ALLOC NAME".
import micropython

import wire

buf = bytearray(wire.MAX_FRAME)
out = [0] * wire.MAX_FIELDS
d = wire.Deframer()
V = 0x3FFFFFFF  # largest value a 32-bit board holds as a small int


def enc_all():
    n = wire.enc_unit_detected(buf, 1, 2, V, V, V, V, wire.UNIT_FLAG_TEST)
    n = wire.enc_unit_printed(buf, 1, 2, V, V, V, V)
    n = wire.enc_unit_inspected(buf, 1, 2, V, V, V, V)
    n = wire.enc_alarm(buf, 3, 4, V, wire.ALARM_BIN_FULL, 1, V, V)
    n = wire.enc_status(buf, 0, 4, wire.STATE_RUNNING, 0x1FF, 7, V, V, V, 9, -V, V, 3, V)
    n = wire.enc_pong(buf, 0, 4, V, V, V)
    n = wire.enc_ack(buf, 0, 9)
    n = wire.enc_verdict(buf, 5, 6, V, wire.VERDICT_FAIL, wire.REASON_NO_READ)
    n = wire.enc_unit_outcome(buf, 255, 254, V, V, wire.OUTCOME_REJECTED_CONFIRMED,
                              wire.REASON_NO_VERDICT, -32768, V, V)
    return n


def restamp():
    wire.restamp(buf, 7, 8)
    return wire.frame_type(buf) + wire.frame_seq(buf) + wire.frame_ack(buf) + wire.frame_len(buf)


def deframe():
    taken = d.feed(buf, wire.frame_len(buf))
    t = d.next()
    return taken + t + d.next() + d.frames + d.bad_crc + d.skipped_bytes


def dec_all():
    f = d.frame
    wire.dec_unit_outcome(f, out)
    return out[4]


def dec_more():
    wire.enc_verdict(buf, 5, 6, V, wire.VERDICT_FAIL, wire.REASON_NO_READ)
    wire.dec_verdict(buf, out)
    wire.enc_unit_detected(buf, 1, 2, V, V, V, V, 1)
    wire.dec_unit_detected(buf, out)
    wire.enc_status(buf, 0, 4, 2, 0x1FF, 7, V, V, V, 9, -V, V, 3, V)
    wire.dec_status(buf, out)
    wire.enc_alarm(buf, 3, 4, V, 4, 1, V, V)
    wire.dec_alarm(buf, out)
    return out[0]


def control():
    return bytes(8)  # allocates: proves the lock is on


for name, fn in (("enc", enc_all), ("restamp", restamp), ("deframe", deframe), ("dec", dec_all),
                 ("dec_more", dec_more), ("control", control)):
    fn()  # warm up (first calls may intern or cache)
    micropython.heap_lock()
    try:
        fn()
        result = "ok"
    except MemoryError:
        result = "ALLOC"
    micropython.heap_unlock()
    print(result, name)
