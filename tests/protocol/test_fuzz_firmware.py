"""Random streams through the firmware Deframer, and random enum values through its decoders,
under the real MicroPython unix port."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serialine.protocol import fastcodec as F
from serialine.protocol import schema as S

from .streams import build_stream, check_yield
from .test_fuzz_host import _enum_frames


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_firmware_deframer_on_random_streams(seed, run_mp, repo_root, tmp_path):
    stream, intact = build_stream(random.Random(seed), 400)
    path = tmp_path / "stream.bin"
    path.write_bytes(stream)
    script = (repo_root / "tests" / "protocol" / "mp" / "deframe_stream.py").read_text()
    out = run_mp(f"STREAM = {str(path)!r}\nSEED = {seed}\n" + script).split("\n")
    out = [line for line in out if line]
    assert out[-1].startswith("END "), out[-3:]
    assert not any(line.startswith("HANG") for line in out)
    got = [bytes.fromhex(line) for line in out[:-1]]
    check_yield(stream, intact, got)
    frames, bad_crc, skipped, _ = map(int, out[-1].split()[1:])
    assert frames == len(got)
    assert bad_crc > 0 and skipped > 0  # the corruption was really there and really skipped


ENUM_SCRIPT = """
import wire
out = [0] * wire.MAX_FIELDS
d = wire.Deframer()
for h in FRAMES:
    b = bytes.fromhex(h)
    d.feed(b, len(b))
    t = d.next()
    name = [k for k in dir(wire) if k.startswith('MSG_') and getattr(wire, k) == t][0][4:]
    print(getattr(wire, 'dec_' + name.lower())(d.frame, out))
"""


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(_enum_frames(), min_size=1, max_size=60))
def test_firmware_decoders_refuse_out_of_range_enums_like_the_host(run_mp, frames):
    raws, want = [], []
    for m, values in frames:
        raw = F.encode(m.msg_type, 0, 0, values)
        raws.append(raw.hex())
        try:
            F.decode(raw)
            want.append(-1)
        except F.ValueOutOfRange as exc:
            want.append(next(i for i, f in enumerate(S.flat_fields(m.payload))
                             if f.enum and exc.values[i] not in set(f.enum)))
    out = run_mp(f"FRAMES = {raws!r}\n" + ENUM_SCRIPT).split()
    assert [int(x) for x in out] == want
