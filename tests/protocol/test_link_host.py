"""The host endpoint on its own: its deframer fuzzed with hypothesis, bad input refused without
side effects, and its go-back-N sender driven byte for byte through a real pty."""

from __future__ import annotations

import os
import time
import tty

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serialine.host.link import Deframer, HostLink, decode, encode
from serialine.protocol.schema import BY_NAME, FINGERPRINT, PROTOCOL_VERSION, crc32

UNIT = BY_NAME["UNIT_DETECTED"].msg_type
ACK = BY_NAME["ACK"].msg_type


def unit_frame(i: int) -> bytes:
    return encode(UNIT, i & 0xFF, 0, dict(event_seq=i, unit_seq=i, pos=i * 3, t_us=i * 5, flags=0))


def crc_ok(frame: bytes) -> bool:
    return crc32(frame[2:-4]) == int.from_bytes(frame[-4:], "little")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 1000)), max_size=12),
    st.lists(st.integers(1, 64), min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
)
def test_deframer_never_yields_a_bad_frame_and_finds_the_good_ones(parts, chunks, flips):
    stream = bytearray()
    for garbage, i in parts:
        stream += garbage.replace(b"\xa5", b"\x00") + unit_frame(i)
    clean = bytes(stream)
    for pos, mask in flips:  # corrupt a few bytes anywhere
        if stream:
            stream[pos % len(stream)] ^= mask
    d, got, at, k = Deframer(), [], 0, 0
    while at < len(stream):
        n = chunks[k % len(chunks)]
        got += d.feed(bytes(stream[at : at + n]))
        at, k = at + n, k + 1
    assert all(crc_ok(f) for f in got)
    for f in got:
        decode(f)  # a yielded frame is a valid message of this schema
    if not any(mask for _, mask in flips) or stream == clean:
        assert [decode(f)[3]["unit_seq"] for f in got] == [i for _, i in parts]


@pytest.fixture
def pty_host():
    master, slave = os.openpty()
    tty.setraw(slave)
    host = HostLink(os.ttyname(slave), rto=0.05, rto_max=0.2, hello_timeout=0.2)
    yield host, master
    host.close()
    os.close(master)
    os.close(slave)


def read_frames(master: int, d: Deframer, wait: float = 0.3, host=None) -> list[tuple]:
    """What the host wrote to the wire during `wait` seconds (driving its timers if given)."""
    end, out = time.monotonic() + wait, []
    os.set_blocking(master, False)
    while time.monotonic() < end:
        if host is not None:
            assert host.poll(0.005) == []
        try:
            out += [decode(f) for f in d.feed(os.read(master, 4096))]
        except BlockingIOError:
            time.sleep(0.01)
    return out


def hello_reply(fp: int = FINGERPRINT) -> bytes:
    return encode(BY_NAME["HELLO_REPLY"].msg_type, 0, 0, dict(
        fingerprint=fp, proto_version=PROTOCOL_VERSION, status=0, fw_version="x", board="sim",
        device_id="d", boot_id=1, uptime_ms=2, reset_cause=1, next_unit_seq=0, state=1))


def test_bad_input_is_refused_and_changes_nothing(pty_host):
    host, _ = pty_host
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
    d = Deframer()
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
