"""The barrier's view of the wire (host/sim/wiretap.py): a camera result is held until a host ACK
says every device event before the device's event mark is stored. ACKs name the seq the host
awaits next, mod 256; a new session (HELLO) or a new boot numbers the events from 0 again."""

from __future__ import annotations

from serialine.host.sim.wiretap import VerdictTap
from serialine.protocol.fastcodec import encode
from serialine.protocol.schema import BY_NAME, FINGERPRINT, PROTOCOL_VERSION

ACK = BY_NAME["ACK"].msg_type
HELLO = BY_NAME["HELLO"].msg_type


def _ack(upto: int) -> bytes:
    return encode(ACK, 0, upto, {})


def test_stored_once_an_ack_reaches_the_mark_also_across_the_wrap():
    tap = VerdictTap()
    assert not tap.stored(0)  # nothing acked this session yet
    tap(_ack(5))
    assert tap.stored(5) and tap.stored(3) and not tap.stored(6)
    tap(_ack(250))
    assert tap.stored(250) and not tap.stored(251)
    tap(_ack(2) + _ack(3))  # past the wrap: 3 follows 255, 0, 1, 2
    assert tap.stored(255) and tap.stored(3) and not tap.stored(4)
    assert tap.wait_stored(3, 0.0) and not tap.wait_stored(4, 0.0)


def test_a_new_session_or_boot_forgets_the_old_numbering():
    tap = VerdictTap()
    tap(_ack(40))
    tap(encode(HELLO, 0, 0, {"fingerprint": FINGERPRINT, "proto_version": PROTOCOL_VERSION}))
    assert not tap.stored(0) and not tap.stored(3)  # the old session's 40 says nothing now
    tap(_ack(3))
    assert tap.stored(3)
    tap.reset()  # the device rebooted
    assert not tap.stored(0)


def test_frames_are_counted_for_a_waiter():
    tap = VerdictTap()
    seen = tap.frames
    assert tap.wait_frames(seen, 0.0) == seen  # nothing came: the timeout, not a wake-up
    tap(_ack(1) + _ack(2))
    assert tap.wait_frames(seen, 0.0) == seen + 2 and tap.acks == 2
