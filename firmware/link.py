# Device end of the reliable link (sliding window, Klipper-like). MicroPython; runs unchanged on
# CPython for tools. See docs/link.md for the state machine and the API.
#
# Every sequenced event waits in a preallocated ring of frame slots until the host acks it
# (the host acks only after storing it). Under corruption it degrades gracefully: the RTO comes
# from the measured ack time (Jacobson/Karels, timed from the oldest frame's latest send); two
# duplicate acks from the host resend the oldest frame at once, and so does every partial ack
# after it (fast retransmit, NewReno: the host keeps frames that arrive after a hole, so only
# holes are resent, and the window need not shrink with the error rate); an RTO resends the
# oldest too (twice or three times after RTOs in a row); the RTO backs off only once the link
# is down (the host absent, not lossy). A new session resends everything. Nothing on the
# per-event path allocates:
# reserve/commit, poll with nothing to do, ack handling and retransmission run with the heap
# locked (tests/protocol/test_link_device.py proves it).
from micropython import const
from array import array
import time
import wire

_SEQ_MASK = const(0xFF)
_STATE_IDLE = const(0)  # no HELLO yet: send nothing sequenced
_STATE_OPEN = const(1)  # session open
_STATE_REFUSED = const(2)  # last HELLO had another fingerprint/version: accept nothing
_DUPACKS = const(2)  # duplicate acks that mean a frame was lost: go back without waiting
_HELLO_COPIES = const(4)  # the reply is sent this often: the one long frame of the handshake
_MAX_COPIES = const(3)  # a hole resent after consecutive RTOs goes this many times at most


class Link:
    # port: object with readinto(buf) -> n|None and write(buf, n) (a MicroPython stream:
    #   UART, USB-CDC, or a raw tty from open_tty()).
    # info: object with attributes fw_version, board, device_id (str), boot_id,
    #   reset_cause, next_unit_seq, state, pos (ints), read at HELLO/PING time.
    def __init__(self, port, info, slots=32, window=16, rto_ms=50, rto_max_ms=1000,
                 timeout_ms=2000, rto_min_ms=5):
        if not 0 < window < 128:
            raise ValueError("window must be 1..127")
        self.port = port
        self.info = info
        self.fingerprint = wire.FINGERPRINT
        self.proto_version = wire.PROTOCOL_VERSION
        self.nslots = slots
        self.slots = [bytearray(wire.MAX_FRAME) for _ in range(slots)]
        self.lens = bytearray(slots)  # frame lengths (MAX_FRAME < 256)
        self.window = window
        self.rto_init = rto_ms  # until the first sample
        self.rto_min = rto_min_ms
        self.rto_max = rto_max_ms
        self.sent_at = array("i", bytes(4 * slots))  # ticks_ms a slot was last (re)sent
        self.srtt8 = 0  # smoothed ack time x 8, ms (0: no sample yet)
        self.rttvar4 = 0  # its mean deviation x 4, ms
        self.hi = 0  # frames from base sent at least once this session
        self.dupacks = 0
        self.recover = 0  # frames in flight when a fast retransmit began; 0: not recovering
        self.fast_retransmits = 0
        self.timeouts = 0
        self.streak = 0  # RTOs in a row without progress: the error rate is high
        self.timeout_ms = timeout_ms
        self.rxbuf = bytearray(64)
        self.deframer = wire.Deframer()
        self.ctl = bytearray(wire.MAX_FRAME)  # ACK / HELLO_REPLY / PONG
        self.fields = [0] * 32  # decode target, reused
        self.t0 = time.ticks_ms()
        self.state = _STATE_IDLE
        self.up = False
        self.head = 0  # ring index of the oldest unacked event
        self.count = 0  # events in the ring
        self.sent = 0  # of those, in flight since the last go-back
        self.base = 0  # seq of the oldest unacked event
        self.rx_expected = 0  # next host seq we will apply
        self.need_ack = False
        self.rto = rto_ms
        self.tx_timer = 0
        self.last_rx = 0
        self.retransmits = 0
        self.duplicates = 0
        self.sessions = 0
        self._ack_n = wire.enc_ack(self.ctl, 0, 0)

    @property
    def queue_fill(self):
        return self.count

    # --- producer API (the line core) ---

    def reserve(self):
        # A free slot to encode the next event into (wire.enc_*(slot, 0, 0, ...)), or None
        # when the ring is full: the caller fails safe (BUFFER_OVERFLOW); nothing is dropped.
        if self.count >= self.nslots:
            return None
        return self.slots[(self.head + self.count) % self.nslots]

    def commit(self, n):
        # The reserved slot now holds an n-byte frame: queue it (sent by poll()).
        self.lens[(self.head + self.count) % self.nslots] = n
        self.count += 1

    def send_unsequenced(self, buf, n):
        # STATUS and other latest-wins messages: sent now, never retransmitted.
        if self.state == _STATE_OPEN:
            wire.restamp(buf, 0, self.rx_expected)
            self.port.write(buf, n)

    # --- the engine ---

    def poll(self, now_ms, handler):
        # Read what arrived, call handler(msg_type, frame) exactly once per in-order sequenced
        # host message, process acks, (re)transmit, and track link liveness. Returns nothing.
        buf = self.rxbuf
        d = self.deframer
        while True:
            n = self.port.readinto(buf)
            if not n:
                break
            while n:
                took = d.feed(buf, n)
                while True:
                    t = d.next()
                    if t < 0:
                        break
                    self._on_frame(t, d.frame, now_ms, handler)
                if took == 0:  # cannot happen with whole frames drained; never spin
                    d.reset()
                elif took < n:  # the deframer was full: keep the rest, byte by byte (no slice)
                    for j in range(n - took):
                        buf[j] = buf[took + j]
                n -= took
        if self.state != _STATE_OPEN:
            return
        if self.up and time.ticks_diff(now_ms, self.last_rx) > self.timeout_ms:
            self.up = False  # no valid frame for too long; the host will HELLO again
        if self.sent and time.ticks_diff(now_ms, self.tx_timer) >= self.rto:
            # RTO: resend the oldest, recover the rest by partial acks; back off only while
            # the link is down (a lossy host still answers within the link timeout)
            r = self.rto * 2 if not self.up else self._rto_now()
            self.dupacks = 0
            self.recover = self.sent
            # after RTOs in a row the line is very noisy: send the hole more than once
            self.streak += 1
            self._resend_oldest(now_ms, self.streak if self.streak < _MAX_COPIES else _MAX_COPIES)
            self.fast_retransmits -= 1  # counted as a timeout, not a fast retransmit
            self.timeouts += 1
            self.rto = r if r < self.rto_max else self.rto_max
        self._send_window(now_ms)
        if self.need_ack:
            self.need_ack = False
            wire.restamp(self.ctl, 0, self.rx_expected)
            self.port.write(self.ctl, self._ack_n)

    def _send_window(self, now_ms):
        limit = self.count if self.count < self.window else self.window
        while self.sent < limit:
            i = (self.head + self.sent) % self.nslots
            slot = self.slots[i]
            wire.restamp(slot, (self.base + self.sent) & _SEQ_MASK, self.rx_expected)
            self.port.write(slot, self.lens[i])
            if self.sent == 0:
                self.tx_timer = now_ms
            self.sent_at[i] = now_ms
            if self.sent >= self.hi:
                self.hi = self.sent + 1
            self.sent += 1
            self.need_ack = False  # the ack rode along

    def _resend_oldest(self, now_ms, copies=1):
        # Fast retransmit: the host holds what came after the hole, so only the hole is resent.
        i = self.head
        slot = self.slots[i]
        wire.restamp(slot, self.base, self.rx_expected)
        for _ in range(copies):
            self.port.write(slot, self.lens[i])
        self.sent_at[i] = now_ms
        self.tx_timer = now_ms
        self.retransmits += 1
        self.fast_retransmits += 1
        self.need_ack = False

    def _rto_now(self):
        if not self.srtt8:
            return self.rto_init
        v = self.rttvar4 if self.rttvar4 > 4 else 4
        r = (self.srtt8 >> 3) + v
        if r < self.rto_min:
            return self.rto_min
        return r if r < self.rto_max else self.rto_max

    def _on_ack(self, ack, now_ms, is_ack_msg):
        k = (ack - self.base) & _SEQ_MASK
        if 0 < k <= self.hi:  # frames sent (maybe before a go-back); anything else is stale
            # ack time of the oldest frame, from its latest (re)send: under loss the ack almost
            # always answers the resend (the original was lost), and the host holds nothing
            # back behind it, so this is the round trip plus the host's storage time
            t = time.ticks_diff(now_ms, self.sent_at[self.head])
            if t < 0:
                t = 0
            if not self.srtt8:
                self.srtt8 = (t << 3) | 1
                self.rttvar4 = t << 1
            else:
                e = t - (self.srtt8 >> 3)
                self.srtt8 += e
                if self.srtt8 < 1:
                    self.srtt8 = 1
                if e < 0:
                    e = -e
                self.rttvar4 += e - (self.rttvar4 >> 2)
            self.head = (self.head + k) % self.nslots
            self.count -= k
            self.sent = self.sent - k if self.sent > k else 0
            self.hi -= k
            self.base = ack
            self.rto = self._rto_now()  # progress: backoff reset
            self.tx_timer = now_ms
            self.dupacks = 0
            self.streak = 0
            if self.recover:
                self.recover = self.recover - k if self.recover > k else 0
                if self.recover and self.sent:  # a partial ack: the next hole
                    self._resend_oldest(now_ms)
        elif k == 0 and is_ack_msg and self.sent:
            self.dupacks += 1  # the host got something out of order: a frame was lost
            if self.dupacks == _DUPACKS and not self.recover:
                self.recover = self.sent
                self._resend_oldest(now_ms)

    def _on_frame(self, t, frame, now_ms, handler):
        if t == wire.MSG_HELLO:
            self._on_hello(frame, now_ms)
            return
        if self.state != _STATE_OPEN:
            return  # refused or no session: accept nothing
        self.last_rx = now_ms
        self.up = True
        self._on_ack(wire.frame_ack(frame), now_ms, t == wire.MSG_ACK)
        if t == wire.MSG_PING:
            self._pong(frame)
        elif wire.is_sequenced(t):
            seq = wire.frame_seq(frame)
            if seq == self.rx_expected:
                self.rx_expected = (seq + 1) & _SEQ_MASK
                handler(t, frame)
            else:
                self.duplicates += 1  # old or out of order: discard, re-ack
            self.need_ack = True

    def _on_hello(self, frame, now_ms):
        f = self.fields
        wire.dec_hello(frame, f)
        if f[0] != self.fingerprint:
            status = wire.HELLO_FINGERPRINT_MISMATCH
        elif f[1] != self.proto_version:
            status = wire.HELLO_VERSION_MISMATCH
        else:
            status = wire.HELLO_OK
        # a new session: both sides count from 0; unacked events stay and are renumbered
        self.base = 0
        self.sent = 0
        self.hi = 0
        self.dupacks = 0
        self.recover = 0
        self.streak = 0
        self.rx_expected = 0
        self.rto = self._rto_now()
        self.need_ack = False
        self.last_rx = now_ms
        if status == wire.HELLO_OK:
            self.state = _STATE_OPEN
            self.up = True
            self.sessions += 1
        else:
            self.state = _STATE_REFUSED
            self.up = False
        i = self.info
        n = wire.enc_hello_reply(self.ctl, 0, 0, self.fingerprint, self.proto_version, status,
                                 i.fw_version, i.board, i.device_id, i.boot_id,
                                 time.ticks_diff(now_ms, self.t0), i.reset_cause,
                                 i.next_unit_seq, i.state)
        for _ in range(_HELLO_COPIES):  # all before any frame of the session: extra ones are ignored
            self.port.write(self.ctl, n)
        self._ack_n = wire.enc_ack(self.ctl, 0, 0)

    def _pong(self, frame):
        f = self.fields
        wire.dec_ping(frame, f)
        n = wire.enc_pong(self.ctl, 0, self.rx_expected, f[0], time.ticks_us() & 0x3FFFFFFF,
                          self.info.pos)
        self.port.write(self.ctl, n)
        self._ack_n = wire.enc_ack(self.ctl, 0, 0)


def open_tty(path):
    # A tty (pty in the simulator) as a non-blocking raw stream: VMIN=0/VTIME=0 so readinto()
    # returns 0 at once when nothing is there. Unix port only.
    import termios

    f = open(path, "r+b")
    fd = f.fileno()
    termios.setraw(fd)
    a = termios.tcgetattr(fd)
    a[6][6] = 0  # VMIN (Linux index): return at once...
    a[6][5] = 0  # VTIME: ...without waiting
    termios.tcsetattr(fd, termios.TCSANOW, a)
    return f
