# A small device for link tests and `serialine selftest`: the device link endpoint on a tty,
# emitting N synthetic UNIT_DETECTED events (not the real firmware).
#
#   micropython linkdev.py TTY N [--rate EPS] [--fingerprint HEX] [--timeout MS]
#
# Applies host messages through the link's handler and prints one line per application
# ("APPLIED COMMAND <command> <arg>"), and answers each with a LOG event "applied <arg>", so a
# test can check exactly-once on both sides. Prints "LINK UP"/"LINK LOST" on changes. Exits on
# COMMAND REBOOT, after printing "DONE emitted=.. queue_fill=.. retransmits=.. ...".
import select
import sys
import time

import link
import wire


class Info:
    fw_version = "linkdev-1"
    board = "sim"
    device_id = "linkdev"
    reset_cause = 1  # POWER_ON
    state = 1  # IDLE
    pos = 0
    next_unit_seq = 0

    def __init__(self):
        self.boot_id = int.from_bytes(__import__("os").urandom(4), "little") & 0x3FFFFFFF


def main(argv):
    path, total = argv[0], int(argv[1])
    rate, fp, timeout = 0, None, 2000
    i = 2
    while i < len(argv):
        if argv[i] == "--rate":
            rate = int(argv[i + 1])
        elif argv[i] == "--fingerprint":
            fp = int(argv[i + 1], 16)
        elif argv[i] == "--timeout":
            timeout = int(argv[i + 1])
        i += 2
    port = link.open_tty(path)
    info = Info()
    lk = link.Link(port, info, timeout_ms=timeout)
    if fp is not None:
        lk.fingerprint = fp  # a device built from "another schema"
    fields = [0] * 8
    pending_logs = []  # args of applied commands still to report (LOG events)
    state = {"quit": False}

    def handler(t, frame):
        if t == wire.MSG_COMMAND:
            wire.dec_command(frame, fields)
            print("APPLIED COMMAND", fields[0], fields[1])
            if fields[0] == wire.CMD_REBOOT:
                state["quit"] = True
            else:
                pending_logs.append(fields[1])
        else:
            print("APPLIED", t)

    poller = select.poll()
    poller.register(port, select.POLLIN)
    emitted = 0
    event_seq = 0
    period_us = 1000000 // rate if rate else 0
    next_emit = time.ticks_us()
    was_up = False
    while not state["quit"]:
        now = time.ticks_ms()
        lk.poll(now, handler)
        if lk.up != was_up:
            was_up = lk.up
            print("LINK UP" if was_up else "LINK LOST")
        while pending_logs:
            slot = lk.reserve()
            if slot is None:
                break
            n = wire.enc_log(slot, 0, 0, event_seq, 20, "applied %d" % pending_logs.pop(0))
            lk.commit(n)
            event_seq += 1
        while emitted < total:
            if period_us and time.ticks_diff(time.ticks_us(), next_emit) < 0:
                break
            slot = lk.reserve()
            if slot is None:
                break  # ring full: a real device would fail safe; here we just wait
            n = wire.enc_unit_detected(slot, 0, 0, event_seq, emitted, emitted * 100,
                                       time.ticks_us() & 0x3FFFFFFF, 0)
            lk.commit(n)
            emitted += 1
            event_seq += 1
            info.next_unit_seq = emitted
            next_emit = time.ticks_add(next_emit, period_us)
        poller.poll(2 if (lk.sent or lk.count) else 10)
    d = lk.deframer
    print("DONE emitted=%d queue_fill=%d retransmits=%d duplicates=%d bad_crc=%d bad_header=%d"
          " fast_retransmits=%d timeouts=%d srtt_ms=%d rto_ms=%d"
          % (emitted, lk.queue_fill, lk.retransmits, lk.duplicates, d.bad_crc, d.bad_header,
             lk.fast_retransmits, lk.timeouts, lk.srtt8 >> 3, lk.rto))


main(sys.argv[1:])
