"""The protocol benchmark runs end to end (tiny sizes) and ends with its JSON figures."""

from __future__ import annotations

import json

from serialine.tools import bench_protocol


def test_bench_protocol_prints_json_last(capsys):
    assert bench_protocol.main(["--seconds", "0.02", "--mp-frames", "640"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = json.loads(last)
    for key in ("construct_decode_fps", "host_decode_fps", "host_encode_fps", "mp_decode_fps", "mp_encode_fps"):
        assert figures[key] > 0, key
