# Glue: the core's events become wire frames in the link's ring; host messages become core
# calls. Board-independent; a board passes its adapter, its link port and its WDT.
from micropython import const
from array import array
import core
import config
import wire
import time

FW_VERSION = "0.1.0"
_NO_UNIT = const(0xFFFFFFFF)
_EV_WORDS = const(7)  # pending event: type, a, b, c, d, e, f
_EV_DETECTED = const(1)
_EV_PRINTED = const(2)
_EV_INSPECTED = const(3)
_EV_OUTCOME = const(4)
_EV_ALARM = const(5)
_STATUS_MS = const(200)
# room kept for events still to come once the device has failed safe: each tracked unit's print,
# inspection and outcome (3 per unit, counted live) plus this many (alarms, packs still arriving)
_RESERVE = const(24)


class Device:
    """board: adapter (ticks_*, now(), inputs(), out_*); port: link stream; wdt: .feed()."""

    def __init__(self, board, port, device_id="sim-1", cfg_path=config.PATH, capacity=64,
                 pending=None, reset_cause=1, link_timeout_ms=2000):
        import os
        import link

        self.hw = board
        self.fw_version = FW_VERSION
        self.board = board.NAME if hasattr(board, "NAME") else "board"  # read by the link
        self.device_id = device_id
        self.boot_id = int.from_bytes(os.urandom(4), "little") & 0x3FFFFFFF
        self.reset_cause = reset_cause
        # no host yet is not a lost link: no alarm at boot, but a pack seen before a host has
        # opened a session is still rejected (link_lost)
        self.core = core.Core(board, self, capacity, link_up=False)
        self.store = config.Store(self.core, cfg_path)
        self.boot_note = self.store.boot()  # "" or why there is no configuration
        self.event_seq = 0
        self.verdicts_in = 0  # VERDICT messages applied this boot
        # events the link ring had no room for, in order; flushed first on every scan. Sized for
        # every event the units in flight can still emit after the fail-safe stop (see _emit).
        if pending is None:
            pending = 3 * capacity + 64
        self.pend = array("i", bytes(4 * _EV_WORDS * pending))
        self.npend_cap = pending
        self.phead = 0
        self.pcount = 0
        self.lost_events = 0  # only if pending is smaller than the reserve needs: never by default
        self.failed_safe = False  # the buffer ran low: line stopped, open units rejected
        self.fields = [0] * 32
        self.status_buf = bytearray(wire.MAX_FRAME)
        self.last_status = 0
        self.link = link.Link(port, self, timeout_ms=link_timeout_ms)
        self.handler = self.handle  # bound once: a bound method made per scan would allocate
        if reset_cause == 2:  # ResetCause.WATCHDOG: the host hears it as an alarm too
            self.core._raise(core.A_WATCHDOG_RESET, core.NO_UNIT)

    # --- what the link reads at HELLO / PING ---
    @property
    def next_unit_seq(self):
        return self.core.next_seq

    @property
    def state(self):
        return self.core.state

    @property
    def pos(self):
        return self.core.pos

    # --- the core's sink: one queued frame per event, nothing allocated ---
    def _emit(self, kind, a, b, c, d, e, f):
        if not self.pcount and self._send(kind, a, b, c, d, e, f):
            return
        if self.pcount == self.npend_cap:  # a buffer below the reserve: counted, the line stopped
            self.lost_events += 1
            self._fail_safe()
            return
        i = self.phead + self.pcount
        if i >= self.npend_cap:
            i -= self.npend_cap
        p = self.pend
        j = i * _EV_WORDS
        p[j] = kind
        p[j + 1] = a
        p[j + 2] = b
        p[j + 3] = c
        p[j + 4] = d
        p[j + 5] = e
        p[j + 6] = f
        self.pcount += 1
        if not self.failed_safe and self.npend_cap - self.pcount < 3 * self.core.count + _RESERVE:
            self._fail_safe()

    def _fail_safe(self):
        # Stop before an event could be lost: no unit passes whose outcome might find no room,
        # and what the units in flight still emit fits in the reserve.
        if self.failed_safe:
            return
        self.failed_safe = True
        self.core._raise(core.A_BUFFER_OVERFLOW, core.NO_UNIT)
        self.core._reject_open(core.R_BUFFER_OVERFLOW)
        self.core._line_stop()

    def _send(self, kind, a, b, c, d, e, f):
        slot = self.link.reserve()
        if slot is None:
            return False
        s = self.event_seq
        if kind == _EV_DETECTED:
            n = wire.enc_unit_detected(slot, 0, 0, s, a, b, c, d)
        elif kind == _EV_PRINTED:
            n = wire.enc_unit_printed(slot, 0, 0, s, a, b, c)
        elif kind == _EV_INSPECTED:
            n = wire.enc_unit_inspected(slot, 0, 0, s, a, b, c)
        elif kind == _EV_OUTCOME:
            n = wire.enc_unit_outcome(slot, 0, 0, s, a, b, c, d, e, f)
        else:
            n = wire.enc_alarm(slot, 0, 0, s, a, b, _NO_UNIT if c == core.NO_UNIT else c, d)
        self.link.commit(n)
        self.event_seq = s + 1
        return True

    def _flush(self):
        p = self.pend
        while self.pcount:
            j = self.phead * _EV_WORDS
            if not self._send(p[j], p[j + 1], p[j + 2], p[j + 3], p[j + 4], p[j + 5], p[j + 6]):
                return
            self.phead += 1
            if self.phead == self.npend_cap:
                self.phead = 0
            self.pcount -= 1
        self.failed_safe = False  # drained: the next shortage fails safe again

    def detected(self, unit, pos, t, flags):
        self._emit(_EV_DETECTED, unit, pos, t, flags, 0, 0)

    def printed(self, unit, pos, t):
        self._emit(_EV_PRINTED, unit, pos, t, 0, 0, 0)

    def inspected(self, unit, pos, t):
        self._emit(_EV_INSPECTED, unit, pos, t, 0, 0, 0)

    def outcome(self, unit, outcome, reason, gate_error, pos, t):
        self._emit(_EV_OUTCOME, unit, outcome, reason, gate_error, pos, t)

    def alarm(self, alarm, active, unit, t):
        self._emit(_EV_ALARM, alarm, active, unit, t, 0, 0)

    # --- host messages, each applied exactly once (the link guarantees it) ---
    def handle(self, t, frame):
        f = self.fields
        c = self.core
        if t == wire.MSG_VERDICT:
            self.verdicts_in += 1  # for a simulator's barrier (boards/sim)
            if wire.dec_verdict(frame, f) < 0:
                c.apply_verdict(f[0], f[1], f[2])
            else:  # an enum out of range: fail safe, the unit is rejected
                c.apply_verdict(f[0], wire.VERDICT_FAIL, wire.REASON_VERDICT_FAIL)
        elif t == wire.MSG_COMMAND:
            cmd = f[0] if wire.dec_command(frame, f) < 0 else 0  # 0: no such command, ignored
            if cmd == wire.CMD_START:
                c.start()
            elif cmd == wire.CMD_STOP:
                c.stop()
            elif cmd == wire.CMD_CLEAR_ALARM:
                c.clear_alarm()
            elif cmd == wire.CMD_PURGE:
                c.purge()
            elif cmd == wire.CMD_REBOOT:
                self.reboot = True
        elif t == wire.MSG_TEST_UNIT:
            wire.dec_test_unit(frame, f)
            c.test_units(f[0])
        elif t == wire.MSG_CONFIG_SET:
            bad = wire.dec_config_set(frame, f)
            if bad >= 0:  # an enum out of range: refused, nothing applied
                self._config_report(wire.CFG_BAD_RANGE, bad)
            else:
                res, bad = self.store.set(f[:config.NFIELDS])
                self._config_report(res, bad)
        elif t == wire.MSG_CONFIG_GET:
            self._config_report(0, config.NO_FIELD)

    def _config_report(self, res, bad):
        cf = self.core.cfg or [0] * config.NFIELDS
        slot = self.link.reserve()
        if slot is None:
            return  # the host re-asks with CONFIG_GET
        n = wire.enc_config_report(slot, 0, 0, self.event_seq, res, bad, *cf)
        self.link.commit(n)
        self.event_seq += 1

    # --- one scan of the main loop ---
    reboot = False

    def scan(self, now_us, pos, pe, confirm, bin_full, now_ms):
        self.link.poll(now_ms, self.handler)
        up = self.link.up
        if up != self.core.link_up:
            self.core.set_link(up)
        self.core.update(now_us, pos, pe, confirm, bin_full)
        if self.pcount:
            self._flush()
        if time.ticks_diff(now_ms, self.last_status) >= _STATUS_MS:
            self.last_status = now_ms
            self._status(now_us)

    def _status(self, now_us):
        c = self.core
        flags = (1 if self.link.up else 0) | (2 if c.bin_prev else 0) | (4 if c.purging else 0)
        n = wire.enc_status(self.status_buf, 0, 0, c.state, c.alarms, flags, c.detected,
                            c.passed, c.rejected, c.count, c.speed_cps(), c.pos,
                            self.link.queue_fill, now_us)
        self.link.send_unsequenced(self.status_buf, n)
