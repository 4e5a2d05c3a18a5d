"""The host endpoint on its own: bad input refused without side effects, an out-of-range enum
delivered as an invalid event, and its go-back-N sender driven byte for byte through a real pty.
Its stream decoder is protocol.fastcodec.StreamDecoder, fuzzed in test_fuzz_host.py."""

from __future__ import annotations

import os
import time
import tty

import pytest

from serialine.host.link import HostLink
from serialine.protocol.fastcodec import StreamDecoder, as_dict, encode
from serialine.protocol.schema import BY_NAME, FINGERPRINT, PROTOCOL_VERSION

UNIT = BY_NAME["UNIT_DETECTED"].msg_type
ACK = BY_NAME["ACK"].msg_type


def unit_frame(i: int) -> bytes:
    return encode(UNIT, i & 0xFF, 0, dict(event_seq=i, unit_seq=i, pos=i * 3, t_us=i * 5, flags=0))


@pytest.fixture
def pty_host():
    master, slave = os.openpty()
    tty.setraw(slave)
    host = HostLink(os.ttyname(slave), rto=0.05, rto_max=0.2, hello_timeout=0.2)
    yield host, master
    host.close()
    os.close(master)
    os.close(slave)


def read_frames(master: int, d: StreamDecoder, wait: float = 0.3, host=None) -> list[tuple]:
    """What the host wrote to the wire during `wait` seconds (driving its timers if given)."""
    end, out = time.monotonic() + wait, []
    os.set_blocking(master, False)
    while time.monotonic() < end:
        if host is not None:
            assert host.poll(0.005) == []
        try:
            out += [(t, s, a, as_dict(t, f)) for t, s, a, f in d.feed(os.read(master, 4096))]
        except BlockingIOError:
            time.sleep(0.01)
    return out


def hello_reply(fp: int = FINGERPRINT) -> bytes:
    return encode(BY_NAME["HELLO_REPLY"].msg_type, 0, 0, dict(
        fingerprint=fp, proto_version=PROTOCOL_VERSION, status=0, fw_version="x", board="sim",
        device_id="d", boot_id=1, uptime_ms=2, reset_cause=1, next_unit_seq=0, state=1))


def test_bad_input_is_refused_and_changes_nothing(pty_host):
    host, _ = pty_host
    assert type(host.decoder) is StreamDecoder  # the one host stream decoder, the fuzzed one
    with pytest.raises(ValueError, match="cannot send 'UNIT_DETECTED'"):
        host.send("UNIT_DETECTED", {})
    with pytest.raises(ValueError, match="cannot send 'NOPE'"):
        host.send("NOPE", {})
    with pytest.raises(Exception):
        host.send("VERDICT", dict(unit_seq=1, verdict=9, reason=0))  # no such Verdict
    with pytest.raises(ValueError, match="not a Verdict"):
        host.send("VERDICT", dict(unit_seq=1, verdict=9, reason=0))
    with pytest.raises(Exception):
        host.send("COMMAND", dict(command=1))  # arg missing
    assert host.tx_pending == 0 and host.frames_out == 0
    with pytest.raises(ValueError):
        HostLink("/dev/null", window=128)


def test_host_sender_go_back_n_ack_and_delivery_gated_by_storage(pty_host):
    host, master = pty_host
    d = StreamDecoder()
    host._start_hello(time.monotonic())
    assert [t for t, *_ in read_frames(master, d, 0.05)] == [BY_NAME["HELLO"].msg_type]
    os.write(master, hello_reply())
    assert host.poll(0.1) == [] and host.up and host.state == "open"
    for arg in range(3):
        host.send("COMMAND", dict(command=1, arg=arg))
    sent = [(t, s, f["arg"]) for t, s, a, f in read_frames(master, d, 0.12, host)
            if t == BY_NAME["COMMAND"].msg_type]
    # sent once, then (no ack within the RTO) all three again: go back N
    assert sent[:6] == [(0x14, 0, 0), (0x14, 1, 1), (0x14, 2, 2)] * 2
    assert host.retransmits >= 3
    os.write(master, encode(ACK, 0, 2, {}))  # device acks the first two
    host.poll(0.05)
    assert host.tx_pending == 1
    # device events: delivered once; the ack the device sees moves only with ack_delivered()
    os.write(master, unit_frame(0) + unit_frame(1) + unit_frame(1) + unit_frame(3))
    got = host.poll(0.1)
    assert [f["unit_seq"] for _, f in got] == [0, 1]
    assert host.duplicates == 1 and host.out_of_order == 1
    acks = [a for t, s, a, f in read_frames(master, d, 0.1) if t == ACK]
    assert acks and set(acks) == {0}  # nothing acked before storage said so
    host.ack_delivered()
    acks = [a for t, s, a, f in read_frames(master, d, 0.1) if t == ACK]
    assert acks[0] == 2


def test_fingerprint_mismatch_reply_raises_with_both_values(pty_host):
    host, master = pty_host
    os.write(master, hello_reply(0xDEADBEEF))
    with pytest.raises(Exception) as err:
        host.connect(timeout=1)
    assert "0xdeadbeef" in str(err.value) and f"0x{FINGERPRINT:08x}" in str(err.value)


def test_an_out_of_range_enum_is_delivered_as_an_invalid_event_and_acked(pty_host):
    # The crash loop: a CRC-valid UNIT_OUTCOME with reason 99. It must come out of poll()
    # in its place (fields["invalid"] says why) so the caller stores and acks it like any event.
    host, master = pty_host
    d = StreamDecoder()
    host._start_hello(time.monotonic())
    os.write(master, hello_reply())
    assert host.poll(0.1) == [] and host.state == "open"
    outcome = BY_NAME["UNIT_OUTCOME"].msg_type
    bad = encode(outcome, 1, 0, (8, 4, 1, 99, 0, 5, 6))
    os.write(master, unit_frame(0) + bad + unit_frame(2))
    got = host.poll(0.1)
    assert [n for n, _ in got] == ["UNIT_DETECTED", "UNIT_OUTCOME", "UNIT_DETECTED"]
    name, fields = got[1]
    assert fields["invalid"] == "UNIT_OUTCOME.reason 99 is not a Reason"
    assert (fields["event_seq"], fields["unit_seq"], fields["reason"]) == (8, 4, 99)
    assert "invalid" not in got[0][1] and host.counters()["out_of_range"] == 1
    host.ack_delivered()
    acks = [a for t, s, a, f in read_frames(master, d, 0.1) if t == ACK]
    assert acks and acks[0] == 3  # the invalid event is acked with the rest: no resend loop


def test_frames_after_a_hole_are_held_and_delivered_once_when_it_fills(pty_host):
    host, master = pty_host
    d = StreamDecoder()
    host._start_hello(time.monotonic())
    os.write(master, hello_reply())
    assert host.poll(0.1) == [] and host.state == "open"
    read_frames(master, d, 0.02)
    os.write(master, unit_frame(0) + unit_frame(2) + unit_frame(3) + unit_frame(2))
    assert [f["unit_seq"] for _, f in host.poll(0.1)] == [0]
    assert host.out_of_order == 2 and host.duplicates == 1
    dup_acks = [a for t, s, a, f in read_frames(master, d, 0.05) if t == ACK]
    assert dup_acks == [0, 0, 0]  # one per frame it could not deliver: the device resends early
    os.write(master, unit_frame(1) + unit_frame(3))  # the hole, then a late copy of a held one
    assert [f["unit_seq"] for _, f in host.poll(0.1)] == [1, 2, 3]
    host.ack_delivered()
    assert [a for t, s, a, f in read_frames(master, d, 0.05) if t == ACK][-1] == 4
    os.write(master, unit_frame(4))
    assert [f["unit_seq"] for _, f in host.poll(0.1)] == [4]  # exactly once, in order


def test_two_duplicate_acks_make_the_host_resend_at_once(pty_host):
    host, master = pty_host
    d = StreamDecoder()
    host = HostLink(host.port.port, rto=5.0, rto_max=5.0, hello_timeout=0.2)  # no RTO in this test
    try:
        host._start_hello(time.monotonic())
        os.write(master, hello_reply())
        assert host.poll(0.1) == [] and host.state == "open"
        for arg in range(3):
            host.send("COMMAND", dict(command=1, arg=arg))
        cmd = BY_NAME["COMMAND"].msg_type
        assert [s for t, s, a, f in read_frames(master, d, 0.05) if t == cmd] == [0, 1, 2]
        os.write(master, encode(ACK, 0, 1, {}))  # seq 0 applied, then the device saw 2 before 1
        os.write(master, encode(ACK, 0, 1, {}) + encode(ACK, 0, 1, {}))
        assert [s for t, s, a, f in read_frames(master, d, 0.1, host) if t == cmd] == [1, 2]
        assert host.fast_retransmits == 1 and host.tx_pending == 2
    finally:
        host.close()
