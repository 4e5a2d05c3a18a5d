"""Fuzz the fast host codec and its stream decoder (hypothesis)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serialine.protocol import fastcodec as F
from serialine.protocol import schema as S

from .streams import FRAMES, build_stream, check_yield

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feed_all(data: bytes, cuts: list[int]) -> tuple[F.StreamDecoder, list[bytes]]:
    dec = F.StreamDecoder()
    got, pos = [], 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        for t, seq, ack, fields in dec.feed(data[pos:cut]):
            if isinstance(fields, F.ValueOutOfRange):
                assert fields.detail == str(fields) and "is not a" in fields.detail
                fields = fields.values
            got.append(F.encode(t, seq, ack, fields))
        pos = max(pos, cut)
    return dec, got


@SETTINGS
@given(seed=st.integers(0, 2**32), pieces=st.integers(1, 60), cuts=st.lists(st.integers(0, 10**6), max_size=30))
def test_stream_decoder_recovers_every_intact_frame_and_no_false_one(seed, pieces, cuts):
    stream, intact = build_stream(random.Random(seed), pieces)
    dec, got = _feed_all(stream, cuts)
    check_yield(stream, intact, got)
    assert dec.frames == len(got)


@SETTINGS
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 10**6), max_size=10))
def test_stream_decoder_on_arbitrary_bytes(data, cuts):
    _, got = _feed_all(data, cuts)
    for frame in got:
        assert frame in data


@SETTINGS
@given(frame=st.sampled_from(FRAMES), bit=st.integers(0, 8 * S.MAX_FRAME))
def test_a_flipped_bit_is_always_refused(frame, bit):
    bad = bytearray(frame)
    bad[bit // 8 % len(bad)] ^= 1 << (bit % 8)
    try:
        F.decode(bytes(bad))
    except F.FrameError:
        return
    raise AssertionError(f"corrupted frame accepted: {bytes(bad).hex()}")


@SETTINGS
@given(data=st.binary(max_size=120))
def test_decode_of_arbitrary_bytes_raises_frame_error_or_roundtrips(data):
    try:
        t, seq, ack, fields = F.decode(data)
    except F.FrameError:
        return
    assert F.encode(t, seq, ack, fields) == data


ENUM_MSGS = [m for m in S.MESSAGES if any(f.enum for f in S.flat_fields(m.payload))]


@st.composite
def _enum_frames(draw):
    """A CRC-valid frame of a message with enum fields, every u8 enum field any byte value."""
    m = draw(st.sampled_from(ENUM_MSGS))
    values = []
    for f in S.flat_fields(m.payload):
        if f.enum is not None:
            values.append(draw(st.one_of(st.sampled_from([int(x) for x in f.enum]), st.integers(0, 255))))
        elif f.kind == "int":
            bits = 8 * f.size
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if f.fmt.islower() else (0, (1 << bits) - 1)
            values.append(draw(st.integers(lo, hi)))
        else:
            values.append(draw(st.text("abcXYZ09", max_size=min(f.size, 12))))
    return m, tuple(values)


@SETTINGS
@given(frame=_enum_frames(), seq=st.integers(0, 255), ack=st.integers(0, 255))
def test_enum_values_are_checked_at_decode_like_the_reference(frame, seq, ack):
    m, values = frame
    raw = F.encode(m.msg_type, seq if m.sequenced else 0, ack, values)
    bad = [f"{m.name}.{f.name} {v} is not a {f.enum.__name__}"
           for f, v in zip(S.flat_fields(m.payload), values) if f.enum and v not in set(f.enum)]
    try:
        got = F.decode(raw)
    except F.ValueOutOfRange as exc:
        assert bad and exc.detail == "; ".join(bad) and exc.values == values
        assert exc.msg_name == m.name and exc.fields == F.as_dict(m.msg_type, values)
        try:
            S.parse_frame(raw)
        except ValueError as ref:
            assert str(ref) == exc.detail  # the reference refuses it with the same words
        else:
            raise AssertionError("the reference codec accepted " + exc.detail)
        [(_, _, _, streamed)] = F.StreamDecoder().feed(raw)
        assert isinstance(streamed, F.ValueOutOfRange) and streamed.values == values
        return
    assert not bad and got[3] == values


def test_truncated_and_lengthened_frames_are_refused():
    for frame in FRAMES[:: 7]:
        for bad in (frame[:-1], frame + b"\0", frame[:5]):
            try:
                F.decode(bad)
            except F.FrameError as exc:
                assert str(exc)
            else:
                raise AssertionError(bad.hex())


def test_a_frame_whose_length_disagrees_with_its_message_is_refused():
    # A CRC-valid frame that claims UNIT_OUTCOME with one byte too many payload.
    good = F.encode(S.BY_NAME["UNIT_OUTCOME"].msg_type, 1, 2, (1, 2, 3, 4, -5, 6, 7))
    body = bytes([good[2] + 1]) + good[3:-4] + b"\0"
    bad = S.SOF + body + S.crc32(body).to_bytes(4, "little")
    try:
        F.decode(bad)
    except F.FrameError as exc:
        assert "definition" in str(exc)
    else:
        raise AssertionError("decoded a frame of the wrong length")
    dec = F.StreamDecoder()
    assert dec.feed(bad + good) == [F.decode(good)]
    assert dec.bad_header == 1


def test_encode_rejects_bad_input_with_a_clear_error():
    t = S.BY_NAME["UNIT_OUTCOME"].msg_type
    cases = [
        ((1, 2, 3, 4, 40000, 6, 7), "gate_error"),
        ((1, 2, 3, 4, 5, 6), "7 expected"),
        ((-1, 2, 3, 4, 5, 6, 7), "event_seq"),
    ]
    for fields, words in cases:
        try:
            F.encode(t, 0, 0, fields)
        except F.FrameError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(fields)
    log = S.BY_NAME["LOG"].msg_type
    for text, words in (("x" * 81, "at most 80"), ("é", "not ASCII")):
        try:
            F.encode(log, 0, 0, (1, 20, text))
        except F.FrameError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(text)
    try:
        F.encode(0x7F, 0, 0, ())
    except F.FrameError as exc:
        assert "unknown msg_type" in str(exc)


def test_encode_names_a_missing_dict_field():
    t = S.BY_NAME["VERDICT"].msg_type
    try:
        F.encode(t, 0, 0, {"unit_seq": 1, "verdict": 1})
    except F.FrameError as exc:
        assert "reason" in str(exc)
    else:
        raise AssertionError("encoded without a reason")
