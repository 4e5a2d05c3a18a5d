"""firmware/wire.py under the real MicroPython unix port: allocation-free per-unit path, and bad
input refused."""

from __future__ import annotations

from serialine.protocol import fastcodec as F
from serialine.protocol import schema as S


def test_per_unit_path_does_not_allocate(run_mp, repo_root):
    out = run_mp((repo_root / "tests" / "protocol" / "mp" / "heap_locked.py").read_text())
    assert out.split("\n")[:-1] == ["ok enc", "ok restamp", "ok deframe", "ok dec", "ok dec_more",
                                    "ALLOC control"]


def test_firmware_frame_decodes_on_the_host_after_restamp(run_mp):
    out = run_mp(
        "import wire\nb = bytearray(wire.MAX_FRAME)\n"
        "n = wire.enc_unit_outcome(b, 1, 2, 10, 11, wire.OUTCOME_PASSED, wire.REASON_OK, -7, 12, 13)\n"
        "wire.restamp(b, 200, 201)\nprint(bytes(b[:n]).hex())\n")
    assert F.decode(bytes.fromhex(out.strip())) == (0x23, 200, 201, (10, 11, 1, 0, -7, 12, 13))


def test_decoders_refuse_frames_of_another_length_or_type(run_mp):
    # A CRC-valid UNIT_OUTCOME with one payload byte too many, and a VERDICT given to dec_unit_outcome.
    good = F.encode(0x23, 1, 2, (1, 2, 3, 4, -5, 6, 7))
    body = bytes([good[2] + 1]) + good[3:-4] + b"\0"
    long_frame = S.SOF + body + S.crc32(body).to_bytes(4, "little")
    verdict = F.encode(0x13, 1, 2, (5, 1, 0))
    out = run_mp(
        "import wire\nout = [0] * wire.MAX_FIELDS\n"
        f"for frame in (bytes.fromhex({long_frame.hex()!r}), bytes.fromhex({verdict.hex()!r})):\n"
        "    try:\n        wire.dec_unit_outcome(frame, out)\n        print('decoded')\n"
        "    except ValueError as e:\n        print('refused', e)\n"
        "d = wire.Deframer()\n"
        f"s = bytes.fromhex({(long_frame + good).hex()!r})\n"
        "d.feed(s, len(s))\nprint(d.next(), d.next(), d.bad_header, out[:3])\n")
    assert out.split("\n")[:3] == ["refused not a valid UNIT_OUTCOME frame"] * 2 + ["35 -1 1 [0, 0, 0]"]


def test_string_encoders_refuse_bad_input_and_write_nothing(run_mp):
    out = run_mp(
        "import wire\nb = bytearray(wire.MAX_FRAME)\n"
        "for args in ((1, 20, 'x' * 81), (1, 20, b'\\xff')):\n"
        "    try:\n        wire.enc_log(b, 0, 0, *args)\n        print('encoded')\n"
        "    except ValueError as e:\n        print('refused', e, b == bytearray(wire.MAX_FRAME))\n"
        "n = wire.enc_log(b, 3, 4, 9, wire.LOG_INFO, 'x' * 80)\nprint(bytes(b[:n]).hex())\n")
    lines = out.split("\n")
    assert lines[:2] == ["refused string longer than 80 bytes True", "refused string is not ASCII True"]
    assert F.decode(bytes.fromhex(lines[2])) == (0x32, 3, 4, (9, 20, "x" * 80))


def test_deframer_feed_from_an_offset_and_when_full(run_mp):
    frames = b"".join(F.encode(0x23, i, 0, (i, i, 1, 0, -i, i, i)) for i in range(20))
    out = run_mp(
        "import wire\nd = wire.Deframer()\nout = [0] * wire.MAX_FIELDS\n"
        f"data = b'junk' + bytes.fromhex({frames.hex()!r})\n"
        "pos = 4\nseen = []\n"
        "while pos < len(data):\n"
        "    pos += d.feed(data, len(data) - pos, pos)\n"
        "    while d.next() >= 0:\n"
        "        wire.dec_unit_outcome(d.frame, out)\n        seen.append(out[4])\n"
        "print(seen, d.frames, d.skipped_bytes, d.bad_crc)\n")
    assert out.strip() == f"{[-i for i in range(20)]} 20 0 0"
