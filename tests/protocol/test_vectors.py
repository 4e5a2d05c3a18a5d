"""Both codecs against the shared vectors (made by the construct reference)."""

from __future__ import annotations

import pytest

from serialine.protocol import fastcodec as F
from serialine.protocol import schema as S
from serialine.protocol import vectors as V

VECTORS = V.load()
GOOD = [v for v in VECTORS if "error" not in v]
BAD = [v for v in VECTORS if "error" in v]


def test_vectors_file_is_current_and_covers_every_message():
    assert V.dumps(V.generate()) == V.PATH.read_text(), "run python -m serialine.protocol.vectors"
    assert {v["msg_type"] for v in VECTORS} == set(S.BY_TYPE)
    assert any(v["name"] == "UNIT_OUTCOME" and v["fields"][4] == -32768 for v in VECTORS)
    assert any(v["name"] == "LOG" and len(v["fields"][2]) == S.LOG_MAX_TEXT for v in VECTORS)
    # every enum field of every message has its out-of-range vectors, the reason 99 too
    enum_fields = {(m.name, f.name) for m in S.MESSAGES for f in S.flat_fields(m.payload) if f.enum}
    assert {(v["name"], S.flat_fields(S.BY_NAME[v["name"]].payload)[v["bad_field"]].name)
            for v in BAD} == enum_fields
    assert any(v["case"] == "bad_reason_99" and v["name"] == "UNIT_OUTCOME" for v in BAD)


@pytest.mark.parametrize("v", GOOD, ids=lambda v: f"{v['name']}-{v['case']}")
def test_reference_parses_vector(v):
    t, seq, ack, fields = S.parse_frame(bytes.fromhex(v["hex"]))
    assert (t, seq, ack, V.flatten(S.BY_TYPE[t], fields)) == (v["msg_type"], v["seq"], v["ack"], v["fields"])
    # the fast codec also takes construct's (nested) dicts
    assert F.encode(t, seq, ack, fields) == bytes.fromhex(v["hex"])


@pytest.mark.parametrize("v", GOOD, ids=lambda v: f"{v['name']}-{v['case']}")
def test_fastcodec_matches_vector(v):
    frame = bytes.fromhex(v["hex"])
    t, seq, ack, fields = F.decode(frame)
    assert (t, seq, ack, list(fields)) == (v["msg_type"], v["seq"], v["ack"], v["fields"])
    assert F.encode(t, seq, ack, v["fields"]) == frame
    assert F.encode(t, seq, ack, F.as_dict(t, tuple(v["fields"]))) == frame
    assert F.StreamDecoder().feed(frame) == [(t, seq, ack, tuple(v["fields"]))]


@pytest.mark.parametrize("v", BAD, ids=lambda v: f"{v['name']}-{v['case']}")
def test_both_host_codecs_refuse_an_out_of_range_enum(v):
    frame = bytes.fromhex(v["hex"])
    with pytest.raises(ValueError, match=v["error"]):
        S.parse_frame(frame)
    with pytest.raises(F.ValueOutOfRange) as err:
        F.decode(frame)
    e = err.value
    assert (e.msg_name, e.seq, e.ack, list(e.values), e.detail) == (
        v["name"], v["seq"], v["ack"], v["fields"], v["error"])
    assert e.fields == F.as_dict(v["msg_type"], tuple(v["fields"]))
    [(t, seq, ack, got)] = F.StreamDecoder().feed(frame)
    assert isinstance(got, F.ValueOutOfRange) and got.detail == v["error"]
    assert F.encode(t, seq, ack, got.values) == frame  # the raw values are all there


def test_firmware_codec_matches_vectors_under_micropython(run_mp, repo_root):
    script = (repo_root / "tests" / "protocol" / "mp" / "check_vectors.py").read_text()
    sequenced = tuple(m.msg_type for m in S.MESSAGES if m.sequenced)
    out = run_mp(f"VECTORS = {str(V.PATH)!r}\nSEQUENCED = {sequenced!r}\n" + script)
    lines = out.strip().splitlines()
    assert lines[-1] == f"checked {len(VECTORS)} frames {len(VECTORS)} bad_crc 0", out
    assert len(lines) == 1, out  # any other line is a mismatch


def test_firmware_constants_match_schema(run_mp):
    names = {"FINGERPRINT": S.FINGERPRINT, "MAX_FRAME": S.MAX_FRAME, "MSG_UNIT_OUTCOME": 0x23,
             "REASON_NO_VERDICT": S.Reason.NO_VERDICT, "STATE_RUNNING": S.DeviceState.RUNNING,
             "CFG_BAD_ORDER": S.ConfigResult.BAD_ORDER, "CMD_PURGE": S.Command.PURGE,
             "NO_UNIT": S.NO_UNIT, "LOG_MAX_TEXT": S.LOG_MAX_TEXT, "PAYLOAD_UNIT_OUTCOME": 20,
             "POLICY_STOP_ON_DOUBLE_DETECT": S.POLICY_STOP_ON_DOUBLE_DETECT}
    out = run_mp("import wire\nprint(" + ", ".join(f"wire.{n}" for n in names) + ")")
    assert out.split() == [str(int(v)) for v in names.values()]
