"""`serialine frames`: a captured stream with an injected CRC error, garbage and a retransmission;
fingerprint mismatches; any bytes decode to frames and flagged errors, never an exception."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from serialine.protocol import schema as S
from serialine.protocol.fastcodec import StreamDecoder, encode
from serialine.tools import frames

T = {m.name: m.msg_type for m in S.MESSAGES}


def hello_reply(fingerprint=S.FINGERPRINT, status=0):
    return encode(T["HELLO_REPLY"], 0, 0, dict(
        fingerprint=fingerprint, proto_version=S.PROTOCOL_VERSION, status=status, fw_version="0.1.0",
        board="sim", device_id="sim-1", boot_id=7, uptime_ms=5, reset_cause=1, next_unit_seq=0,
        state=0))


def detected(seq, unit):
    return encode(T["UNIT_DETECTED"], seq, 0, dict(event_seq=unit, unit_seq=unit, pos=unit * 400,
                                                   t_us=unit * 1000, flags=0))


def run(capsys, argv):
    assert frames.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(x) for x in lines]


def test_captured_stream_with_crc_error_garbage_and_a_retransmission(tmp_path, capsys):
    bad = bytearray(detected(2, 2))
    bad[-1] ^= 0xFF  # its CRC no longer matches
    stream = (hello_reply() + detected(0, 0) + detected(1, 1) + bytes(bad) + b"\x00junk"
              + detected(2, 2) + detected(1, 1) + detected(3, 3))
    cap = tmp_path / "capture.bin"
    cap.write_bytes(stream)
    recs = run(capsys, [str(cap), "--json"])
    summary = recs.pop()["summary"]
    kinds = [r.get("msg") or r["error"] for r in recs]
    assert kinds == ["HELLO_REPLY", "UNIT_DETECTED", "UNIT_DETECTED", "crc_error", "skipped",
                     "UNIT_DETECTED", "UNIT_DETECTED", "UNIT_DETECTED"]
    hr, d0, d1, crc, skipped, d2, again, d3 = recs
    assert hr["fields"]["state"] == "BOOT" and hr["fields"]["device_id"] == "sim-1" and not hr["flags"]
    assert d1["offset"] == len(hello_reply()) + len(detected(0, 0)) and d1["dir"] == "device>host"
    assert skipped["offset"] == crc["offset"] == d1["offset"] + len(detected(1, 1))
    assert skipped["bytes"] == len(bad) + 5
    assert d2["flags"] == ["resync"] and d2["fields"]["unit_seq"] == 2
    assert again["seq"] == 1 and again["flags"] == ["retransmission"]
    assert d3["flags"] == []
    assert summary == dict(frames=6, crc_errors=1, bad_headers=0, skipped_bytes=len(bad) + 5,
                           retransmissions=1, fingerprint_mismatches=0, out_of_range=0)
    # the same as text, through the hex input
    assert frames.main(["--hex", stream.hex(" ")]) == 0
    out = capsys.readouterr().out
    assert "CRC error" in out and "[retransmission]" in out and "[resync]" in out


def test_a_new_session_numbers_from_zero_and_mismatches_are_flagged(capsys):
    hello = encode(T["HELLO"], 0, 0, dict(fingerprint=S.FINGERPRINT ^ 1, proto_version=1))
    stream = detected(0, 0) + hello + hello_reply(S.FINGERPRINT ^ 1, status=1) + detected(0, 5)
    recs = run(capsys, ["--json", "--hex", stream.hex()])
    assert [r["flags"] for r in recs[:-1]] == [[], ["fingerprint_mismatch"], ["fingerprint_mismatch"], []]
    assert recs[1]["dir"] == "host>device" and recs[2]["fields"]["status"] == "FINGERPRINT_MISMATCH"
    assert "fingerprint 0x" in recs[1]["detail"]
    assert recs[-1]["summary"]["fingerprint_mismatches"] == 2


def test_bad_input_is_one_line(tmp_path, capsys):
    assert frames.main(["--hex", "zz"]) == 2
    assert frames.main([str(tmp_path / "none.bin")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "not hex" in err[0] and "No such file" in err[1]


_frame = st.builds(detected, st.integers(0, 255), st.integers(0, 2**20))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), _frame,
                          st.builds(hello_reply, st.integers(0, 2**32 - 1), st.integers(0, 5))),
                max_size=12),
       st.integers(1, 64))
def test_any_bytes_decode_to_frames_and_flagged_errors(parts, chunk):
    data = b"".join(parts)
    s = frames.Stream()
    recs = []
    for i in range(0, len(data), chunk):
        recs += s.feed(data[i:i + chunk], t=float(i))
    recs += s.flush()
    ref = StreamDecoder()
    assert sum("msg" in r for r in recs) == len(ref.feed(data))  # what the host link accepts
    for r in recs:
        json.dumps(r)
        frames.text(r)
        assert 0 <= r["offset"] <= len(data)
    assert s.counts["skipped_bytes"] + s.framed == len(data)


def test_an_enum_value_out_of_range_is_flagged(capsys):
    bad = encode(T["UNIT_OUTCOME"], 4, 0, dict(event_seq=1, unit_seq=1, outcome=99, reason=0,
                                               gate_error=0, t_us=0, pos=0))
    (rec, summary) = run(capsys, ["--json", "--hex", bad.hex()])
    assert rec["flags"] == ["out_of_range"] and "is not a Outcome" in rec["detail"]
    assert rec["fields"]["outcome"] == 99 and summary["summary"]["out_of_range"] == 1


def test_a_live_link_through_the_tee(sim_board):
    import subprocess
    import sys

    from serialine.host.link import HostLink
    from serialine.tools import flash as F

    F.flash(sim_board.port, "sim", F.Settings("tee-1"))
    proc = subprocess.Popen([sys.executable, "-m", "serialine.host.cli", "frames", "--tee", sim_board.link,
                             "--seconds", "3", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    pty = proc.stderr.readline().split()[1]
    link = HostLink(pty)
    try:
        assert link.connect(timeout=5)["device_id"] == "tee-1"
        link.poll(0.8)  # PING / PONG, STATUS
    finally:
        link.close()
    out, _ = proc.communicate(timeout=20)
    recs = [json.loads(x) for x in out.splitlines()]
    seen = {(r["dir"], r["msg"]) for r in recs if "msg" in r}
    assert {("host>device", "HELLO"), ("device>host", "HELLO_REPLY"), ("host>device", "PING"),
            ("device>host", "PONG")} <= seen
    reply = next(r for r in recs if r.get("msg") == "HELLO_REPLY")
    assert reply["fields"]["device_id"] == "tee-1" and reply["flags"] == [] and reply["t"] > 0
    assert recs[-1]["summary"]["crc_errors"] == 0


def test_a_live_port_is_timestamped_and_saved(tmp_path):
    import os
    import subprocess
    import sys
    import time

    master, slave = os.openpty()
    saved = tmp_path / "raw.bin"
    proc = subprocess.Popen([sys.executable, "-m", "serialine.host.cli", "frames", "--port", os.ttyname(slave),
                             "--seconds", "2", "--json", "--save", str(saved)], stdout=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(0.7)
        os.write(master, detected(0, 0) + b"\xff\xfe")
        time.sleep(0.3)
        os.write(master, detected(0, 0))
        out, _ = proc.communicate(timeout=20)
    finally:
        os.close(master)
        os.close(slave)
    recs = [json.loads(x) for x in out.splitlines()]
    first, skipped, again, summary = recs
    assert first["msg"] == "UNIT_DETECTED" and 0.2 < first["t"] < again["t"]
    assert skipped["bytes"] == 2 and again["flags"] == ["resync", "retransmission"]
    assert summary["summary"]["frames"] == 2
    assert saved.read_bytes() == detected(0, 0) + b"\xff\xfe" + detected(0, 0)
