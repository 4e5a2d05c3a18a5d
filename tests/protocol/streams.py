"""Build byte streams mixing intact frames with garbage, truncated, bit-flipped and spliced frames,
and check what a stream decoder made of them. Shared by the CPython and MicroPython fuzz tests."""

from __future__ import annotations

import random

from serialine.protocol import fastcodec as F
from serialine.protocol import schema as S
from serialine.protocol import vectors as V

FRAMES = [bytes.fromhex(v["hex"]) for v in V.load()]  # out-of-range enum vectors included


def build_stream(rng: random.Random, pieces: int) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(stream, intact frames in order with their offsets)."""
    out, intact = bytearray(), []
    for _ in range(pieces):
        frame = rng.choice(FRAMES)
        kind = rng.randrange(6)
        if kind <= 1:
            intact.append((len(out), frame))
            out += frame
        elif kind == 2:  # garbage, sometimes rich in start-of-frame bytes
            n = rng.randrange(1, 40)
            out += bytes(rng.choice((0xA5, 0x5A, rng.randrange(256))) for _ in range(n))
        elif kind == 3:  # truncated
            out += frame[: rng.randrange(1, len(frame))]
        elif kind == 4:  # bit flips
            bad = bytearray(frame)
            for _ in range(rng.randrange(1, 4)):
                bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
            out += bad
        else:  # splice: head of one frame, tail of another
            other = rng.choice(FRAMES)
            out += frame[: rng.randrange(1, len(frame))] + other[rng.randrange(1, len(other)):]
    # A live link keeps going: idle bytes after the last piece, so a corrupted header near the
    # end whose length reaches past the last intact frame is resolved rather than awaited.
    out += bytes(S.MAX_FRAME)
    return bytes(out), intact


def check_yield(stream: bytes, intact: list[tuple[int, bytes]], got: list[bytes]) -> None:
    """No false frame: each yielded frame is CRC-valid and present in the stream. Every intact
    frame recovered, in order, except where a corrupted piece plus the intact frame's first bytes
    happen to form a real CRC-valid frame (e.g. a frame truncated by one byte followed by an A5):
    then that real frame is yielded instead, which no decoder can tell apart; that must be rare."""
    spans, pos = [], 0
    for frame in got:
        try:
            F.decode(frame)  # raises FrameError on a bad CRC or malformed frame
        except F.ValueOutOfRange:
            pass  # intact, its enum checked by the decoder: yielded for the caller to judge
        at = stream.find(frame, pos)  # a decoder yields the earliest valid frame after the last
        assert at >= 0, f"yielded frame {frame.hex()} is not in the stream (in order)"
        spans.append((at, at + len(frame)))
        pos = at + len(frame)
    starts = {a for a, _ in spans}
    masked = 0
    for offset, frame in intact:
        if offset in starts:
            continue
        end = offset + len(frame)
        assert any(a < end and offset < b for a, b in spans), \
            f"intact frame {frame.hex()} at {offset} was not recovered"
        masked += 1
    assert masked <= 1 + len(intact) // 50, f"{masked} of {len(intact)} intact frames masked"
