"""Random streams through the firmware Deframer under the real MicroPython unix port."""

from __future__ import annotations

import random

import pytest

from .streams import build_stream, check_yield


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
