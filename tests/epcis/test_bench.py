"""The benchmark runs end to end (tiny sizes) and ends with its JSON figures line."""

from __future__ import annotations

import json

from serialine.host import cli


def test_bench_epcis_prints_json_last(capsys):
    assert cli.main(["bench", "epcis", "--events", "50", "--forward-events", "30",
                     "--doc-size", "7"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"events_per_s", "http_events_per_s", "mqtt_events_per_s"} <= set(figures)
    assert figures["forward_events"] == 30 and all(figures[k] > 0 for k in
                                                    ("events_per_s", "http_events_per_s", "mqtt_events_per_s"))
