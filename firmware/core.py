# The line device's pure core: unit tracking, station firing, fail-safe decisions.
# No hardware imports: time, encoder and outputs come from a board adapter, events go to a sink.
#
# board: ticks_diff(a, b) / ticks_add(a, b) (wrapping at 2**30 like a real board),
#        out_coder(now, pos), out_camera(now, pos), out_gate(on, now, pos), out_stop(on, now, pos)
# sink:  detected(unit, pos, t, flags), printed(unit, pos, t), inspected(unit, pos, t),
#        outcome(unit, outcome, reason, gate_error, pos, t), alarm(alarm, active, unit, t)
#
# Per-unit path (edge, stations, verdict, outcome) allocates nothing: state lives in preallocated
# arrays, positions and times are small ints below 2**30 compared modulo 2**30.
from micropython import const
from array import array

_MASK = const(0x3FFFFFFF)  # positions wrap at 2**30 (the wrap itself is not a 32-bit small int)
_HALF = const(0x20000000)

# Schema values (protocol/schema.py), generated into wire.py as const(); short names here.
from wire import (OUTCOME_PASSED as PASSED, OUTCOME_REJECTED_CONFIRMED as REJECTED_CONFIRMED,
                  OUTCOME_REJECTED_UNCONFIRMED as REJECTED_UNCONFIRMED)
from wire import (REASON_OK as R_OK, REASON_NO_VERDICT as R_NO_VERDICT,
                  REASON_DOUBLE_DETECT as R_DOUBLE_DETECT, REASON_BUFFER_OVERFLOW as R_BUFFER_OVERFLOW,
                  REASON_LINK_LOST as R_LINK_LOST, REASON_PURGE as R_PURGE,
                  REASON_TEST_UNIT as R_TEST_UNIT)
from wire import (ALARM_DOUBLE_DETECT as A_DOUBLE_DETECT,
                  ALARM_REJECT_UNCONFIRMED as A_REJECT_UNCONFIRMED,
                  ALARM_REJECT_STREAK as A_REJECT_STREAK, ALARM_BIN_FULL as A_BIN_FULL,
                  ALARM_ENCODER_STALL as A_ENCODER_STALL, ALARM_LINK_LOST as A_LINK_LOST,
                  ALARM_BUFFER_OVERFLOW as A_BUFFER_OVERFLOW,
                  ALARM_WATCHDOG_RESET as A_WATCHDOG_RESET)
from wire import STATE_BOOT, STATE_IDLE, STATE_RUNNING, STATE_STOPPED, VERDICT_PASS
from wire import POLICY_STOP_ON_LINK_LOSS, POLICY_STOP_ON_DOUBLE_DETECT
# Config indices: ConfigFields order.
from wire import (C_CODER_AT, C_CAMERA_AT, C_GATE_AT, C_CONFIRM_FROM, C_CONFIRM_TO,
                  C_GATE_LEAD_US, C_DWELL, C_DWELL_UNIT, C_DEBOUNCE_US, C_MIN_PITCH,
                  C_DEADLINE_MARGIN, C_REJECT_STREAK_LIMIT, C_LINK_STOP_MS, C_PURGE_COUNTS,
                  C_VIRTUAL_SPEED_CPS, C_STALL_MS, C_POLICY)

NO_UNIT = const(0x3FFFFFFF)  # the firmware's small-int "no unit"; the glue sends wire.NO_UNIT

# Unit stage bits.
_PRINTED = const(1)
_INSPECTED = const(2)
_DECIDED = const(4)  # pass/reject fixed at the decision deadline (or earlier by a fail-safe)
_FIRED = const(8)  # gate fired for this unit
_MEASURED = const(16)  # gate_error measured (gate physically effective)
_DONE = const(32)  # outcome emitted
_REJECT = const(64)
_TEST = const(128)

_SPEED_WINDOW_US = const(4000)  # speed estimated over about this much travel time
_PURGE_TAIL_US = const(2000)  # beyond the gate's lead: scans are this far apart at worst


def pdiff(a, b):
    """a - b for positions/ticks that wrap at 2**30, in (-2**29, 2**29]."""
    d = (a - b) & _MASK
    if d > _HALF:
        d = d - _MASK - 1
    return d


class Core:
    def __init__(self, board, sink, capacity=64, link_up=True):
        self.board = board
        self.sink = sink
        self.cap = capacity
        self.useq = array("i", bytes(4 * capacity))
        self.upos = array("i", bytes(4 * capacity))
        self.ut = array("i", bytes(4 * capacity))
        self.tfire = array("i", bytes(4 * capacity))
        self.gerr = array("i", bytes(4 * capacity))
        self.stage = bytearray(capacity)
        self.verdict = bytearray(capacity)  # 0 none, else a Verdict
        self.reason = bytearray(capacity)
        self.cfg = None  # list of ConfigFields values, or None (STATE_BOOT)
        self.pass_at = 0  # rel position at which a passing unit's outcome is final
        self.reach = 0  # counts past gate_at within which the paddle takes a pack off
        self.state = STATE_BOOT
        self.alarms = 0
        self.reset_counters()
        self.link_up = link_up

    def reset_counters(self):
        self.head = 0
        self.count = 0
        self.next_seq = 0
        self.detected = 0
        self.passed = 0
        self.rejected = 0
        self.now = 0
        self.pos = 0
        self.prev_t = 0
        self.prev_pos = 0
        self.vacc = 0  # virtual encoder: us*cps not yet a whole count
        self.sp_t = 0  # speed window start
        self.sp_pos = 0
        self.sp_dpos = 0  # counts travelled over the last window ...
        self.sp_dt = 1  # ... of this many us
        self.moved_t = 0
        self.pe_stable = 0
        self.pe_cand = 0
        self.pe_t = 0
        self.pe_pos = 0
        self.last_edge_pos = 0
        self.have_edge = False
        self.confirm_prev = 0
        self.bin_prev = 0
        self.gate_on = False
        self.gate_until = 0
        self.gate_until_is_t = False
        self.gate_hold = False
        self.purge_until = 0
        self.purging = False
        self.purge_tail = False  # the purge's gate closed, its paddle may still be out (lead time)
        self.purge_tail_t = 0
        self.streak = 0
        self.test_left = 0
        self.link_up = True
        self.link_down_t = 0
        self.overflow = False

    # --- configuration and commands (not on the per-unit path) ---

    def configure(self, values):
        """Apply a validated configuration (config.validate); the caller refuses while busy."""
        self.cfg = values
        # A pass is final only beyond the purge's reach: a purge after a reboot rejects whatever is
        # within purge_counts of the photo-eye, so a pack this boot reported PASSED is never one
        # the next boot's purge pushes off (set purge_counts to the gate's far edge).
        self.pass_at = max(values[C_GATE_AT], values[C_PURGE_COUNTS])
        # How far past gate_at the paddle still takes a pack: to the gate's far edge if purge_counts
        # says where it is, else half the smallest pitch (beyond it the paddle is nearer the next).
        self.reach = self.pass_at - values[C_GATE_AT] or values[C_MIN_PITCH] // 2
        if self.state == STATE_BOOT:
            self.state = STATE_IDLE

    def busy(self):
        return self.count > 0

    def start(self):
        if self.cfg is None or self.state == STATE_STOPPED:  # a latched stop needs CLEAR_ALARM
            return False
        self.state = STATE_RUNNING
        self.purge_until = (self.pos + self.cfg[C_PURGE_COUNTS]) & _MASK
        self.purging = self.cfg[C_PURGE_COUNTS] > 0
        self.purge_tail = False
        self.board.out_stop(False, self.now, self.pos)  # the run permissive: off from boot until here
        return True

    def stop(self):
        """The host stops the line: latched like an alarm's stop, released by CLEAR_ALARM."""
        if self.state == STATE_RUNNING:
            self._line_stop()

    def clear_alarm(self):
        """Releases a latched line stop and clears every alarm."""
        for a in range(1, 16):
            if self.alarms & (1 << a):
                self.sink.alarm(a, 0, NO_UNIT, self.now)
        self.alarms = 0
        self.streak = 0
        if self.state == STATE_STOPPED:
            self.state = STATE_RUNNING
            self.board.out_stop(False, self.now, self.pos)

    def purge(self):
        """Reject everything in flight now, reason purge."""
        self._reject_open(R_PURGE)

    def test_units(self, n):
        self.test_left = n

    def set_link(self, up):
        if up == self.link_up:
            return
        self.link_up = up
        if up:  # the alarm clears; a line stop it caused stays latched until CLEAR_ALARM
            if self.alarms & (1 << A_LINK_LOST):
                self.alarms &= ~(1 << A_LINK_LOST)
                self.sink.alarm(A_LINK_LOST, 0, NO_UNIT, self.now)
            return
        self.link_down_t = self.now
        self._raise(A_LINK_LOST, NO_UNIT)
        self._reject_open(R_LINK_LOST)

    def apply_verdict(self, unit, verdict, reason):
        """A host verdict. Applied only to a tracked unit not yet decided; True when applied."""
        i = self.head
        for _ in range(self.count):
            if self.useq[i] == unit:
                if self.stage[i] & _DECIDED or self.verdict[i]:
                    return False
                self.verdict[i] = verdict
                if verdict != VERDICT_PASS:
                    self.reason[i] = reason
                return True
            i += 1
            if i == self.cap:
                i = 0
        return False

    # --- the per-unit path ---

    def update(self, now, pos, pe, confirm, bin_full):
        """One scan: now (us ticks), pos (encoder counts), input levels 0/1."""
        cfg = self.cfg
        if cfg is None:
            self.now = now
            self.pos = pos
            return
        b = self.board
        vs = cfg[C_VIRTUAL_SPEED_CPS]
        if vs:  # no encoder: the line moves at its configured speed
            self.vacc += b.ticks_diff(now, self.now) * vs
            step = self.vacc // 1000000
            self.vacc -= step * 1000000
            pos = (self.pos + step) & _MASK
        self.prev_t = self.now
        self.prev_pos = self.pos
        self.now = now
        if pos != self.pos:
            self.moved_t = now
        self.pos = pos
        span = b.ticks_diff(now, self.sp_t)
        if span >= _SPEED_WINDOW_US:
            self.sp_dpos = pdiff(pos, self.sp_pos)
            self.sp_dt = span
            self.sp_t = now
            self.sp_pos = pos
        self._pe(now, pos, pe)
        if confirm and not self.confirm_prev:
            self._confirm(pos)
        self.confirm_prev = confirm
        if bin_full != self.bin_prev:
            self.bin_prev = bin_full
            if bin_full:
                self._raise(A_BIN_FULL, NO_UNIT)
                self._line_stop()
        if not self.link_up and self.state == STATE_RUNNING and cfg[C_POLICY] & POLICY_STOP_ON_LINK_LOSS \
                and cfg[C_LINK_STOP_MS]:  # a line that is not running has nothing to stop
            if b.ticks_diff(now, self.link_down_t) >= cfg[C_LINK_STOP_MS] * 1000:
                self._line_stop()
        if self.purging and pdiff(pos, self.purge_until) >= 0:
            self.purging = False
            self.purge_tail = True
            self.purge_tail_t = now
        self._stations(now, pos)
        self._gate(now, pos)

    def lead_counts(self):
        """Counts the line travels during the gate's lead time, at the measured speed."""
        d = self.sp_dpos
        if d <= 0:
            return 0
        return (d * self.cfg[C_GATE_LEAD_US] + self.sp_dt // 2) // self.sp_dt

    def speed_cps(self):
        return self.sp_dpos * 1000 // (self.sp_dt // 1000 or 1)

    def _pe(self, now, pos, pe):
        if pe == self.pe_stable:
            self.pe_cand = 0
            return
        if not self.pe_cand:  # a change starts: remember where, confirm after the debounce
            self.pe_cand = 1
            self.pe_t = now
            self.pe_pos = pos
        if self.board.ticks_diff(now, self.pe_t) < self.cfg[C_DEBOUNCE_US]:
            return
        self.pe_stable = pe
        self.pe_cand = 0
        if pe:
            self._detect(self.pe_t, self.pe_pos)

    def _detect(self, t, pos):
        cfg = self.cfg
        if self.count and self.board.ticks_diff(t, self.moved_t) >= cfg[C_STALL_MS] * 1000 \
                and cfg[C_STALL_MS]:
            self._raise(A_ENCODER_STALL, NO_UNIT)
        seq = self.next_seq
        self.next_seq = (seq + 1) & _MASK
        self.detected += 1
        flags = 1 if self.test_left else 0
        self.sink.detected(seq, pos, t, flags)
        if self.count == self.cap:  # nowhere to track it: it cannot be vouched for nor aimed at
            self.overflow = True
            self.gate_hold = True
            self._raise(A_BUFFER_OVERFLOW, seq)
            self._reject_open(R_BUFFER_OVERFLOW)
            self._line_stop()
            self.rejected += 1
            self.sink.outcome(seq, REJECTED_UNCONFIRMED, R_BUFFER_OVERFLOW, 0, pos, t)
            return
        i = self.head + self.count
        if i >= self.cap:
            i -= self.cap
        self.count += 1
        self.useq[i] = seq
        self.upos[i] = pos
        self.ut[i] = t
        self.verdict[i] = 0
        self.reason[i] = 0
        self.gerr[i] = 0
        self.stage[i] = 0
        if self.test_left:
            self.test_left -= 1
            self.stage[i] = _TEST
            self._decide(i, R_TEST_UNIT)
        if not self.link_up:
            self._decide(i, R_LINK_LOST)
        if self.have_edge and pdiff(pos, self.last_edge_pos) < cfg[C_MIN_PITCH]:
            self._raise(A_DOUBLE_DETECT, seq)
            self._decide(i, R_DOUBLE_DETECT)
            j = i - 1 if i else self.cap - 1
            if self.count > 1:
                self._decide(j, R_DOUBLE_DETECT)
            if cfg[C_POLICY] & POLICY_STOP_ON_DOUBLE_DETECT:
                self._line_stop()
        self.have_edge = True
        self.last_edge_pos = pos

    def _decide(self, i, reason):
        """Fix a reject for unit i unless it is already decided (the first reason wins)."""
        st = self.stage[i]
        if st & _DONE:
            return
        if st & _DECIDED:
            if st & _REJECT or st & _FIRED:
                return
            # decided PASS but not yet past the gate: a fail-safe still turns it into a reject
        self.stage[i] = st | _DECIDED | _REJECT
        self.reason[i] = reason

    def _reject_open(self, reason):
        i = self.head
        for _ in range(self.count):
            st = self.stage[i]
            if not st & _DONE and not (st & _DECIDED and st & _FIRED):
                if not st & _REJECT:
                    self._decide(i, reason)
            i += 1
            if i == self.cap:
                i = 0

    def _stations(self, now, pos):
        cfg = self.cfg
        coder = cfg[C_CODER_AT]
        camera = cfg[C_CAMERA_AT]
        gate = cfg[C_GATE_AT]
        fire_at = gate - self.lead_counts()
        deadline = fire_at - cfg[C_DEADLINE_MARGIN]
        reach = self.pass_at - gate
        # A purge's paddle reaches a pack `reach` counts before gate_at. While the purge holds the
        # gate, a pack that far within one lead time of travel is sure to meet it; after the gate
        # closed, the paddle is still out until the lead time has passed: a pack meets it if it
        # is that far by then (its position then, from the measured speed).
        sweep = self.purging
        sweep_from = fire_at - reach
        if self.purge_tail:
            late = self.board.ticks_diff(now, self.purge_tail_t) - cfg[C_GATE_LEAD_US]
            if late > _PURGE_TAIL_US:
                self.purge_tail = False
            else:
                sweep = True
                sweep_from = gate - reach + (late * self.sp_dpos) // self.sp_dt
        sink = self.sink
        b = self.board
        i = self.head
        cap = self.cap
        for _ in range(self.count):
            st = self.stage[i]
            if st & _DONE:
                pass
            else:
                rel = pdiff(pos, self.upos[i])
                if not st & _PRINTED and rel >= coder:
                    st |= _PRINTED
                    b.out_coder(now, pos)
                    sink.printed(self.useq[i], pos, now)
                if not st & _INSPECTED and rel >= camera:
                    st |= _INSPECTED
                    b.out_camera(now, pos)
                    sink.inspected(self.useq[i], pos, now)
                if not st & _DECIDED and rel >= deadline:
                    st |= _DECIDED
                    if self.verdict[i] != VERDICT_PASS:
                        st |= _REJECT
                        if not self.verdict[i]:
                            self.reason[i] = R_NO_VERDICT
                if sweep and not st & _FIRED and not st & _REJECT and rel >= sweep_from:
                    st |= _DECIDED | _REJECT
                    self.reason[i] = R_PURGE
                self.stage[i] = st
                self._unit_gate(i, st, rel, fire_at, now, pos)
            i += 1
            if i == cap:
                i = 0
        # drop finished units from the head
        while self.count and self.stage[self.head] & _DONE:
            self.head += 1
            if self.head == cap:
                self.head = 0
            self.count -= 1
        if self.overflow and self.count < cap // 2:
            self.overflow = False
            self.gate_hold = False

    def _unit_gate(self, i, st, rel, fire_at, now, pos):
        cfg = self.cfg
        b = self.board
        if st & _REJECT:
            if not st & _FIRED and rel >= fire_at:
                st |= _FIRED
                self.tfire[i] = now
                self._open_gate(now, pos)
                self._count_reject()
            if st & _FIRED and not st & _MEASURED:
                # the gate acts lead_us after firing: where was the unit then?
                if b.ticks_diff(now, self.tfire[i]) >= cfg[C_GATE_LEAD_US]:
                    st |= _MEASURED
                    self.gerr[i] = self._gate_error(i, now, pos)
            # unconfirmed: the paddle came out when the unit was already beyond its reach (a late
            # scan), or no confirm came in the window. Never a pass: a line stop names the unit.
            if st & _MEASURED and (rel > cfg[C_CONFIRM_TO] or self.gerr[i] > self.reach):
                st |= _DONE
                self.stage[i] = st
                self.alarms |= 1 << A_REJECT_UNCONFIRMED
                self.sink.alarm(A_REJECT_UNCONFIRMED, 1, self.useq[i], now)  # every such unit named
                self._line_stop()
                self._finish(i, REJECTED_UNCONFIRMED, now, pos)
                return
        elif st & _DECIDED and rel >= self.pass_at:
            st |= _DONE
            self.stage[i] = st
            self.streak = 0
            self.passed += 1
            self.sink.outcome(self.useq[i], PASSED, R_OK, 0, pos, now)
            return
        self.stage[i] = st

    def _count_reject(self):
        self.streak += 1
        lim = self.cfg[C_REJECT_STREAK_LIMIT]
        if lim and self.streak >= lim and not self.alarms & (1 << A_REJECT_STREAK):
            self._raise(A_REJECT_STREAK, NO_UNIT)
            self._line_stop()

    def _finish(self, i, outcome, now, pos):
        self.rejected += 1
        self.sink.outcome(self.useq[i], outcome, self.reason[i], self.gerr[i], pos, now)

    def _gate_error(self, i, now, pos):
        """Unit i's offset from gate_at when its paddle came out (lead_us after firing), counts:
        back from this scan by the travel since then, at this scan's speed."""
        late = self.board.ticks_diff(now, self.tfire[i]) - self.cfg[C_GATE_LEAD_US]
        dt = self.board.ticks_diff(now, self.prev_t)
        back = (pdiff(pos, self.prev_pos) * late + dt // 2) // dt if dt > 0 else 0
        return pdiff(pos, self.upos[i]) - back - self.cfg[C_GATE_AT]

    def _confirm(self, pos):
        """A confirm-sensor edge: the oldest fired reject inside its window is confirmed, if the
        paddle could reach it (a unit the paddle came out behind is not the pack in the chute)."""
        cfg = self.cfg
        i = self.head
        for _ in range(self.count):
            st = self.stage[i]
            if st & _FIRED and not st & _DONE:
                rel = pdiff(pos, self.upos[i])
                if cfg[C_CONFIRM_FROM] <= rel <= cfg[C_CONFIRM_TO]:
                    if not st & _MEASURED:  # confirmed before the measuring scan: measure now
                        self.gerr[i] = self._gate_error(i, self.now, pos)
                    if self.gerr[i] > self.reach:
                        self.stage[i] = st | _MEASURED  # finished unconfirmed at its next scan
                        i += 1
                        if i == self.cap:
                            i = 0
                        continue
                    self.stage[i] = st | _DONE | _MEASURED
                    self._finish(i, REJECTED_CONFIRMED, self.now, pos)
                    return
            i += 1
            if i == self.cap:
                i = 0

    def _open_gate(self, now, pos):
        cfg = self.cfg
        if cfg[C_DWELL_UNIT]:
            # both edges act lead_us late, so the dwell counts from the firing edge
            self.gate_until = (now + cfg[C_DWELL]) & _MASK
            self.gate_until_is_t = True
        else:
            self.gate_until = (pos + cfg[C_DWELL]) & _MASK
            self.gate_until_is_t = False
        if not self.gate_on:
            self.gate_on = True
            self.board.out_gate(True, now, pos)

    def _gate(self, now, pos):
        if self.gate_hold or self.purging:
            if not self.gate_on:
                self.gate_on = True
                self.board.out_gate(True, now, pos)
            self.gate_until = pos
            self.gate_until_is_t = False
            return
        if not self.gate_on:
            return
        if self.gate_until_is_t:
            over = self.board.ticks_diff(now, self.gate_until) >= 0
        else:
            over = pdiff(pos, self.gate_until) >= 0
        if over:
            self.gate_on = False
            self.board.out_gate(False, now, pos)

    def next_due(self, out):
        """When a scan must next run, for a board that sleeps between scans or a simulator that
        jumps to the next event (not called by scan: costs nothing on the per-unit path). Fills
        out[0] counts of travel to the next position that matters, out[1] µs to the next time
        deadline (NO_UNIT: nothing ahead)."""
        out[0] = out[1] = NO_UNIT
        cfg = self.cfg
        if cfg is None:
            return
        b = self.board
        now = self.now
        pos = self.pos
        gate = cfg[C_GATE_AT]
        fire_at = gate - self.lead_counts()
        deadline = fire_at - cfg[C_DEADLINE_MARGIN]
        lead = cfg[C_GATE_LEAD_US]
        dp = NO_UNIT
        dt = NO_UNIT
        i = self.head
        for _ in range(self.count):
            st = self.stage[i]
            if not st & _DONE:
                rel = pdiff(pos, self.upos[i])
                if not st & _PRINTED:
                    dp = min(dp, cfg[C_CODER_AT] - rel)
                if not st & _INSPECTED:
                    dp = min(dp, cfg[C_CAMERA_AT] - rel)
                if not st & _DECIDED:
                    v = self.verdict[i]
                    if not v:  # the first verdict wins: with one in, the deadline decides nothing
                        dp = min(dp, deadline - rel)
                    else:
                        dp = min(dp, (self.pass_at if v == VERDICT_PASS else fire_at) - rel)
                if self.purging and not st & _FIRED and not st & _REJECT:
                    dp = min(dp, fire_at - self.pass_at + gate - rel)  # the purge's sweep
                if st & _REJECT:
                    if not st & _FIRED:
                        dp = min(dp, fire_at - rel)
                    elif not st & _MEASURED:
                        dt = min(dt, lead - b.ticks_diff(now, self.tfire[i]))
                    else:
                        dp = min(dp, cfg[C_CONFIRM_TO] + 1 - rel)
                elif st & _DECIDED:
                    dp = min(dp, self.pass_at - rel)
            i += 1
            if i == self.cap:
                i = 0
        if self.gate_on and not (self.gate_hold or self.purging):
            if self.gate_until_is_t:
                dt = min(dt, b.ticks_diff(self.gate_until, now))
            else:
                dp = min(dp, pdiff(self.gate_until, pos))
        if self.purging:
            dp = min(dp, pdiff(self.purge_until, pos))
        if self.purge_tail:  # its sweep moves with time: scans as close as a board's
            dt = min(dt, 250, lead + _PURGE_TAIL_US + 1 - b.ticks_diff(now, self.purge_tail_t))
        if self.pe_cand:
            dt = min(dt, cfg[C_DEBOUNCE_US] - b.ticks_diff(now, self.pe_t))
        if not self.link_up and self.state == STATE_RUNNING and cfg[C_POLICY] & POLICY_STOP_ON_LINK_LOSS \
                and cfg[C_LINK_STOP_MS]:
            dt = min(dt, cfg[C_LINK_STOP_MS] * 1000 - b.ticks_diff(now, self.link_down_t))
        out[0] = max(1, dp)
        out[1] = max(1, dt)

    def _raise(self, alarm, unit):
        bit = 1 << alarm
        if not self.alarms & bit:
            self.alarms |= bit
            self.sink.alarm(alarm, 1, unit, self.now)

    def _line_stop(self):
        if self.state != STATE_STOPPED:
            self.state = STATE_STOPPED
            self.board.out_stop(True, self.now, self.pos)
