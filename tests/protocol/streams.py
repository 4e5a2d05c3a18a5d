"""Build byte streams mixing intact frames with garbage, truncated, bit-flipped and spliced frames,
and check what a stream decoder made of them. Shared by the CPython and MicroPython fuzz tests."""

from __future__ import annotations

import random

from serialine.protocol import fastcodec as F
from serialine.protocol import schema as S
from serialine.protocol import vectors as V

FRAMES = [bytes.fromhex(v["hex"]) for v in V.load()]


def build_stream(rng: random.Random, pieces: int) -> tuple[bytes, list[bytes]]:
    """(stream, intact frames in order). Corrupted pieces never equal an intact frame by chance
    of construction: the checker only requires intact frames to come out, in order."""
    out, intact = bytearray(), []
    for _ in range(pieces):
        frame = rng.choice(FRAMES)
        kind = rng.randrange(6)
        if kind <= 1:
            out += frame
            intact.append(frame)
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


def check_yield(stream: bytes, intact: list[bytes], got: list[bytes]) -> None:
    """No false frame (each yielded frame is a CRC-valid frame present in the stream) and every
    intact frame recovered, in order (extra frames may only be real frames found in the stream)."""
    for frame in got:
        F.decode(frame)  # raises on a bad CRC or malformed frame
        assert frame in stream
    it = iter(got)
    for frame in intact:
        assert any(frame == g for g in it), f"intact frame {frame.hex()} was not recovered"
