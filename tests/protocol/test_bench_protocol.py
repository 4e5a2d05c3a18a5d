"""The protocol benchmark runs end to end (tiny sizes) and ends with its JSON figures."""

from __future__ import annotations

import json

from serialine.tools import bench, bench_protocol


def test_bench_protocol_prints_json_last(capsys):
    assert bench_protocol.main(["--seconds", "0.02", "--mp-frames", "640"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = json.loads(last)
    for key in ("construct_decode_fps", "host_decode_fps", "host_encode_fps", "mp_decode_fps", "mp_encode_fps"):
        assert figures[key] > 0, key


def test_bench_link_prints_a_table_then_one_json_line(capsys):
    assert bench.main(["link", "--events", "50", "--rates", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "events/s" in out and "exactly once" in out
    figures = json.loads(out.strip().splitlines()[-1])
    assert [r["corrupt_pct"] for r in figures["rows"]] == [0.0, 1.0]
    assert all(r["ok"] and r["delivered"] == 50 for r in figures["rows"])
    assert bench.main(["link", "--rates", "x"]) == 2
    assert "not a list of numbers" in capsys.readouterr().err
