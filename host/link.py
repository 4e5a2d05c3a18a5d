"""Host end of the reliable link (go-back-N, Klipper-like), over pyserial.

The host acks a device event only after the application says it is durably stored:
`poll()` hands delivered messages to the caller, the caller commits them and calls
`ack_delivered()`; only then does the ack number sent to the device advance.
Host->device sequenced messages are kept until the device acks them and resent (go back N)
after an RTO computed from the measured ack time, or at once on two duplicate acks; the window
halves on every go-back and grows back with progress; the RTO backs off only while the device
is silent. See docs/link.md for the state machine and the goodput under corruption.
"""

from __future__ import annotations

import select
import time
from collections import deque

import serial  # type: ignore[import-untyped]

from serialine.protocol import schema
from serialine.protocol.fastcodec import StreamDecoder, ValueOutOfRange, as_dict, encode
from serialine.protocol.schema import BY_NAME, BY_TYPE, FINGERPRINT, PROTOCOL_VERSION, HelloStatus

MSG_ACK = BY_NAME["ACK"].msg_type
MSG_HELLO = BY_NAME["HELLO"].msg_type
MSG_HELLO_REPLY = BY_NAME["HELLO_REPLY"].msg_type
MSG_PING = BY_NAME["PING"].msg_type
MSG_PONG = BY_NAME["PONG"].msg_type


class LinkError(Exception):
    """The link could not be opened or was lost; the message says why."""


class FingerprintMismatch(LinkError):
    """Host and device were built from different schemas (or protocol versions)."""


class HostLink:
    """`HostLink(port_path)`; `connect(timeout)` -> hello dict; `poll(timeout)` -> delivered
    [(msg_name, fields)]; `ack_delivered()` after storing them; `send(msg_name, fields)`."""

    def __init__(self, port_path: str, *, baudrate: int = 115200, window: int = 32,
                 rto: float = 0.05, rto_max: float = 1.0, rto_min: float = 0.005,
                 ping_interval: float = 0.5,
                 timeout: float = 2.0, hello_timeout: float = 0.1,
                 fingerprint: int = FINGERPRINT, proto_version: int = PROTOCOL_VERSION) -> None:
        if not 0 < window < 128:
            raise ValueError("window must be 1..127 (seq numbers are modulo 256)")
        # a URL too (socket://host:port, rfc2217://host:port): a device behind a serial server
        self.port = serial.serial_for_url(port_path, baudrate=baudrate, timeout=0)
        self.window, self.rto_init, self.rto_min, self.rto_max = window, rto, rto_min, rto_max
        self.ping_interval, self.timeout, self.hello_timeout = ping_interval, timeout, hello_timeout
        self.fingerprint, self.proto_version = fingerprint, proto_version
        self.decoder = StreamDecoder()  # the one host stream decoder (fuzzed, benchmarked)
        self.up = False
        self.hello: dict | None = None
        self.state = "closed"  # closed -> hello_sent -> open (docs/link.md)
        # receive side: rx_expected = next device seq to deliver; ack_upto = what we have acked
        self.rx_expected = 0
        self.ack_upto = 0
        self.delivered_unacked = 0
        # frames that arrived after a hole, by seq: delivered once the hole is filled, so the
        # device resends only the hole (fast retransmit) rather than everything after it
        self.rx_hold: dict[int, tuple[str, dict]] = {}
        # send side: unacked host->device messages as [msg_type, fields, sent_at, resent];
        # tx_base = seq of [0]
        self.txq: deque[list] = deque()
        self.tx_base = 0
        self.tx_sent = 0  # how many of txq are in flight
        self.tx_hi = 0  # how many of txq were sent at least once this session
        self.cwnd = window  # adapts below `window` to the error rate
        self.grow = 0
        self.dupacks = 0
        self.heard = False  # a valid frame since the last go-back: the device is there
        self.srtt: float | None = None  # smoothed ack time of sequenced messages, s
        self.rttvar = 0.0
        self.rto = rto
        self.tx_timer = 0.0
        self.last_rx = 0.0
        self.last_ping = 0.0
        self.hello_sent_at = 0.0
        self.ping_nonce = 0
        self.ping_sent: dict[int, float] = {}
        self.rtts: list[float] = []  # seconds, from PING/PONG
        # counters
        self.frames_in = 0
        self.frames_out = 0
        self.retransmits = 0
        self.fast_retransmits = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.sessions = 0
        self.links_lost = 0
        self.last_status: dict | None = None
        self.last_config_report: dict | None = None  # the device's answer to our latest CONFIG_SET
        self.error: LinkError | None = None
        self._early: list[tuple[str, dict]] = []

    # --- public API ---

    @property
    def bad_frames(self) -> int:
        return self.decoder.bad_crc + self.decoder.bad_header

    def close(self) -> None:
        self.port.close()

    def connect(self, timeout: float = 5.0) -> dict:
        """Open a session with HELLO; returns the device's HELLO_REPLY fields.
        Raises FingerprintMismatch when the schemas differ, LinkError when nobody answers."""
        self._start_hello(time.monotonic())
        deadline = time.monotonic() + timeout
        while self.state != "open":
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                raise LinkError(f"no HELLO_REPLY from the device on {self.port.port} "
                                f"within {timeout:g} s")
            self._step(0.02, self._early)
        assert self.hello is not None
        return dict(self.hello)

    def poll(self, timeout: float = 0.0) -> list[tuple[str, dict]]:
        """Read, retransmit, heartbeat; return the messages delivered in order since the last
        call (each exactly once per session). Call ack_delivered() once they are stored."""
        out, self._early = self._early, []  # anything that arrived during connect()
        end = time.monotonic() + timeout
        while True:
            self._step(max(0.0, min(0.02, end - time.monotonic())), out)
            if self.error is not None:
                err, self.error = self.error, None
                raise err
            if out or time.monotonic() >= end:
                return out

    def ack_delivered(self) -> None:
        """Everything poll() returned so far is durably stored: let the device forget it."""
        if self.delivered_unacked:
            self.ack_upto = (self.ack_upto + self.delivered_unacked) & 0xFF
            self.delivered_unacked = 0
            if self.state == "open":
                self._write(encode(MSG_ACK, 0, self.ack_upto, {}))

    def send(self, msg_name: str, fields: dict) -> None:
        """Queue a host->device message. Sequenced ones are resent until the device acks them."""
        msg = BY_NAME.get(msg_name)
        if msg is None or msg.direction == "device>host" or msg.msg_type in (MSG_HELLO, MSG_ACK):
            raise ValueError(f"the host cannot send {msg_name!r}; it sends one of "
                             f"{', '.join(m.name for m in BY_NAME.values() if m.direction == 'host>device' and m.msg_type != MSG_HELLO)}")
        for f in schema.flat_fields(msg.payload):
            if f.enum is not None and f.name in fields and fields[f.name] not in set(f.enum):
                raise ValueError(f"{msg_name}.{f.name}={fields[f.name]!r} is not a "
                                 f"{f.enum.__name__} ({', '.join(e.name for e in f.enum)})")
        frame = encode(msg.msg_type, 0, 0, fields)  # validate now: bad input raises, changes nothing
        if not msg.sequenced:
            self._write(frame)
            return
        self.txq.append([msg.msg_type, dict(fields), 0.0, False])
        if self.state == "open":
            self._send_window(time.monotonic())

    @property
    def tx_pending(self) -> int:
        return len(self.txq)

    def counters(self) -> dict:
        return dict(frames_in=self.frames_in, frames_out=self.frames_out,
                    retransmits=self.retransmits, fast_retransmits=self.fast_retransmits,
                    rto_ms=round(self.rto * 1000, 3), bad_frames=self.bad_frames,
                    garbage_bytes=self.decoder.skipped_bytes,
                    out_of_range=self.decoder.out_of_range, duplicates=self.duplicates,
                    out_of_order=self.out_of_order, sessions=self.sessions,
                    links_lost=self.links_lost)

    # --- machinery ---

    def _write(self, frame: bytes) -> None:
        self.port.write(frame)
        self.frames_out += 1

    def _start_hello(self, now: float) -> None:
        self.state = "hello_sent"
        self.hello_sent_at = now
        self._write(encode(MSG_HELLO, 0, 0, dict(fingerprint=self.fingerprint,
                                                 proto_version=self.proto_version)))

    def _open_session(self, fields: dict, now: float) -> None:
        if fields["fingerprint"] != self.fingerprint or fields["proto_version"] != self.proto_version:
            self.state = "closed"
            status = fields["status"]
            self.error = FingerprintMismatch(
                f"device schema fingerprint 0x{fields['fingerprint']:08x} protocol version "
                f"{fields['proto_version']}, host fingerprint 0x{self.fingerprint:08x} protocol "
                f"version {self.proto_version}: host and device were built from different "
                f"schemas; refusing to talk (device status "
                f"{HelloStatus(status).name if status in set(HelloStatus) else status})")
            return
        if "invalid" in fields:
            self.state = "closed"
            self.error = LinkError(f"the device's HELLO_REPLY is invalid: {fields['invalid']}")
            return
        if fields["status"] != HelloStatus.OK:
            self.state = "closed"
            self.error = FingerprintMismatch(
                f"device refused the session: {HelloStatus(fields['status']).name}")
            return
        # both sides restart numbering at 0; undelivered device events come again, renumbered;
        # our unacked messages are resent from seq 0 (handlers on the device are idempotent)
        self.state, self.up, self.hello = "open", True, fields
        self.sessions += 1
        self.rx_expected = self.ack_upto = self.delivered_unacked = 0
        self.rx_hold.clear()
        self._early.clear()  # delivered in the old session but never acked: they come again
        self.tx_base, self.tx_sent, self.tx_hi, self.dupacks = 0, 0, 0, 0
        self.cwnd, self.rto = self.window, self._rto_now()
        self.last_rx = self.last_ping = now
        self._send_window(now)

    def _send_window(self, now: float) -> None:
        while self.tx_sent < min(len(self.txq), self.cwnd):
            entry = self.txq[self.tx_sent]
            seq = (self.tx_base + self.tx_sent) & 0xFF
            if self.tx_sent == 0:
                self.tx_timer = now
            self._write(encode(entry[0], seq, self.ack_upto, entry[1]))
            entry[2], entry[3] = now, self.tx_sent < self.tx_hi  # Karn: no sample from a resend
            self.tx_sent += 1
            self.tx_hi = max(self.tx_hi, self.tx_sent)

    def _go_back(self, now: float) -> None:
        """Resend everything in flight, from the oldest unacked, with half the window."""
        self.retransmits += self.tx_sent
        self.tx_sent, self.dupacks, self.heard = 0, 0, False
        self.cwnd, self.grow = max(2, self.cwnd // 2), 0
        self.tx_timer = now

    def _rto_now(self) -> float:
        if self.srtt is None:
            return self.rto_init
        return min(self.rto_max, max(self.rto_min, self.srtt + max(4 * self.rttvar, 0.004)))

    def _on_ack(self, ack: int, now: float, is_ack_msg: bool) -> None:
        n = (ack - self.tx_base) & 0xFF
        if 0 < n <= self.tx_hi:  # sent, maybe before a go-back; anything else is stale or bogus
            newest = self.txq[n - 1]
            if not self.dupacks and not any(self.txq[i][3] for i in range(n)):  # Karn
                sample = max(0.0, now - newest[2])
                if self.srtt is None:
                    self.srtt, self.rttvar = sample, sample / 2
                else:
                    self.rttvar += (abs(sample - self.srtt) - self.rttvar) / 4
                    self.srtt += (sample - self.srtt) / 8
            for _ in range(n):
                self.txq.popleft()
            self.tx_base, self.tx_sent, self.tx_hi = ack, max(0, self.tx_sent - n), self.tx_hi - n
            self.rto, self.tx_timer, self.dupacks = self._rto_now(), now, 0  # progress: no backoff
            self.grow += n
            if self.grow >= self.cwnd and self.cwnd < self.window:
                self.cwnd, self.grow = self.cwnd + 1, 0
        elif n == 0 and is_ack_msg and self.tx_sent:
            self.dupacks += 1  # the device got something out of order: a frame was lost
            if self.dupacks >= 2:
                self.fast_retransmits += 1
                self._go_back(now)

    def _step(self, wait: float, out: list) -> None:
        now = time.monotonic()
        data = self.port.read(4096)
        if not data and wait > 0:  # sleep until bytes arrive, at most `wait`
            try:
                select.select([self.port.fileno()], [], [], wait)
            except (AttributeError, OSError, ValueError):  # rfc2217: no descriptor to wait on
                time.sleep(min(wait, 0.001))
            now = time.monotonic()
            data = self.port.read(4096)
        for msg_type, seq, ack, values in self.decoder.feed(data) if data else ():
            if isinstance(values, ValueOutOfRange):
                # intact but with an enum value out of range: delivered as an invalid event (the
                # caller stores and acks it without applying it), never dropped into a resend loop
                fields = dict(values.fields, invalid=values.detail)
            else:
                fields = as_dict(msg_type, values)
            self._on_frame(msg_type, seq, ack, fields, now, out)
        self._timers(now)

    def _on_frame(self, msg_type: int, seq: int, ack: int, fields: dict, now: float,
                  out: list) -> None:
        self.frames_in += 1
        if msg_type == MSG_HELLO_REPLY:
            if self.state == "hello_sent":
                self._open_session(fields, now)
            return  # a late duplicate reply to a HELLO we already had answered: ignore
        if self.state != "open":
            return  # frames from before this session
        self.last_rx, self.heard = now, True
        self._on_ack(ack, now, msg_type == MSG_ACK)
        msg = BY_TYPE[msg_type]
        if msg_type == MSG_PONG:
            sent = self.ping_sent.pop(fields["nonce"], None)
            if sent is not None:
                self.rtts.append(now - sent)
        elif msg.name == "STATUS" and "invalid" not in fields:
            self.last_status = fields
        elif msg.name == "CONFIG_REPORT" and "invalid" not in fields:
            self.last_config_report = fields
        if not msg.sequenced:
            return
        if seq == self.rx_expected:
            out.append((msg.name, fields))
            self.rx_expected = (seq + 1) & 0xFF
            self.delivered_unacked += 1
            while self.rx_expected in self.rx_hold:  # the hole is filled: what came after it
                out.append(self.rx_hold.pop(self.rx_expected))
                self.rx_expected = (self.rx_expected + 1) & 0xFF
                self.delivered_unacked += 1
        else:
            if (self.rx_expected - seq) & 0xFF <= 128:
                self.duplicates += 1  # already have it (delivered, maybe not yet acked)
            elif seq in self.rx_hold:
                self.duplicates += 1
            else:
                self.out_of_order += 1  # a gap: something before it was lost; keep this one
                self.rx_hold[seq] = (msg.name, fields)
            self._write(encode(MSG_ACK, 0, self.ack_upto, {}))  # a duplicate ack: go back early

    def _timers(self, now: float) -> None:
        if self.state == "hello_sent":
            if now - self.hello_sent_at > self.hello_timeout:
                self._start_hello(now)  # reply lost (or no device yet): ask again
            return
        if self.state != "open":
            return
        if now - self.last_rx > self.timeout:
            self.up = False
            self.links_lost += 1
            self._start_hello(now)  # reconnect: a new session, unacked events are resent
            return
        if now - self.last_ping >= self.ping_interval:
            self.last_ping = now
            self.ping_nonce = (self.ping_nonce + 1) & 0xFFFFFFFF
            self.ping_sent[self.ping_nonce] = now
            if len(self.ping_sent) > 64:  # lost PONGs: forget the oldest
                self.ping_sent.pop(next(iter(self.ping_sent)))
            self._write(encode(MSG_PING, 0, self.ack_upto,
                               dict(nonce=self.ping_nonce, host_ms=int(now * 1000) & 0xFFFFFFFF)))
        if self.tx_sent and now - self.tx_timer > self.rto:
            # go back N; back off only if the device said nothing since the last go-back
            rto = self.rto * 2 if not self.heard else self._rto_now()
            self._go_back(now)
            self.rto = min(rto, self.rto_max)
            self._send_window(now)
        else:
            self._send_window(now)
