# The line device for the simulator, in the MicroPython unix port: the firmware's own core
# (firmware/core.py), link (firmware/link.py), configuration store (firmware/config.py) and the
# sim board (boards/sim/board.py), joined by a small glue that the simulator drives over
# stdin/stdout (a stand-in until the firmware's own device glue / host/simboard.py lands):
#
#   sim> S <t_us> <pos> <pe> <confirm> <bin_full>   one scan at virtual time t and encoder pos
#   dev< O <kind> <t_us> <pos>                      each output edge of that scan (board.OUT_NAMES)
#   dev< K <state>                                  end of the scan's answer (core state)
#
# The link runs on the wall clock (its liveness is about the real pty); the core on virtual time.
#   micropython simdevice.py TTY DEVICE_ID
import sys
import time

import board as simboard
import config
import core
import link
import wire

MASK = 0x3FFFFFFF


class Info:
    fw_version = "sim-glue-1"
    board = "sim"
    reset_cause = 1
    state = 0
    pos = 0
    next_unit_seq = 0

    def __init__(self, device_id):
        self.device_id = device_id
        self.boot_id = int.from_bytes(__import__("os").urandom(4), "little") & MASK


class Sink:
    """Core events → link frames; events wait in `pending` while the link's ring is full."""

    def __init__(self, lk):
        self.lk = lk
        self.seq = 0
        self.pending = []

    def _put(self, enc, *args):
        self.pending.append((enc, args))
        self.flush()

    def flush(self):
        while self.pending:
            slot = self.lk.reserve()
            if slot is None:
                return
            enc, args = self.pending.pop(0)
            self.lk.commit(enc(slot, 0, 0, self.seq, *args))
            self.seq += 1

    def detected(self, unit, pos, t, flags):
        self._put(wire.enc_unit_detected, unit, pos, t, flags)

    def printed(self, unit, pos, t):
        self._put(wire.enc_unit_printed, unit, pos, t)

    def inspected(self, unit, pos, t):
        self._put(wire.enc_unit_inspected, unit, pos, t)

    def outcome(self, unit, outcome, reason, gate_error, pos, t):
        self._put(wire.enc_unit_outcome, unit, outcome, reason, gate_error, pos, t)

    def alarm(self, alarm, active, unit, t):
        self._put(wire.enc_alarm, alarm, active, 0xFFFFFFFF if unit == core.NO_UNIT else unit, t)

    def config_report(self, result, bad, cfg):
        self._put(wire.enc_config_report, result, bad, *cfg)


def main(argv):
    tty, device_id = argv[0], argv[1]
    port = link.open_tty(tty)
    info = Info(device_id)
    lk = link.Link(port, info, slots=64, window=16)
    board = simboard.SimBoard(virtual=True)
    sink = Sink(lk)
    c = core.Core(board, sink, capacity=64)
    store = config.Store(c)
    store.boot()
    fields = [0] * 22
    quit = [False]

    def handler(t, frame):
        if t == wire.MSG_VERDICT:
            wire.dec_verdict(frame, fields)
            c.apply_verdict(fields[0], fields[1], fields[2])
        elif t == wire.MSG_CONFIG_SET:
            wire.dec_config_set(frame, fields)
            res, bad = store.set(list(fields))
            sink.config_report(res, bad, c.cfg if c.cfg is not None else fields)
        elif t == wire.MSG_CONFIG_GET:
            sink.config_report(0, 255, c.cfg if c.cfg is not None else [0] * 22)
        elif t == wire.MSG_COMMAND:
            wire.dec_command(frame, fields)
            cmd = fields[0]
            if cmd == wire.CMD_START:
                c.start()
            elif cmd == wire.CMD_STOP:
                c.stop()
            elif cmd == wire.CMD_CLEAR_ALARM:
                c.clear_alarm()
            elif cmd == wire.CMD_PURGE:
                c.purge()
            elif cmd == wire.CMD_REBOOT:
                quit[0] = True
        elif t == wire.MSG_TEST_UNIT:
            wire.dec_test_unit(frame, fields)
            c.test_units(fields[0])

    stdin, out = sys.stdin, sys.stdout
    seen = 0
    while not quit[0]:
        line = stdin.readline()
        if not line:
            break
        parts = line.split()
        if not parts or parts[0] != "S":
            continue
        t, pos = int(parts[1]) & MASK, int(parts[2]) & MASK
        board.t = t
        # scan first, then the link: a START applied in the poll then sees the current position
        # (the core's purge after a start is measured from it)
        c.update(t, pos, int(parts[3]), int(parts[4]), int(parts[5]))
        lk.poll(time.ticks_ms(), handler)
        c.set_link(lk.up)
        sink.flush()
        lk.poll(time.ticks_ms(), handler)
        info.next_unit_seq = c.next_seq
        info.state = c.state
        info.pos = pos
        while seen < board.n:
            i = seen % board.cap
            out.write("O %s %d %d\n" % (simboard.OUT_NAMES[board.kind[i]], board.et[i], board.ep[i]))
            seen += 1
        out.write("K %d\n" % c.state)


main(sys.argv[1:])
