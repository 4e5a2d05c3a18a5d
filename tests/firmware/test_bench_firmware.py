"""`serialine bench firmware` runs and ends with its JSON line (small counts; figures are
checked for shape and for the zero-allocation and gate-error properties, not for speed)."""

from __future__ import annotations

import json

from serialine.tools import bench_firmware


def test_bench_prints_a_table_then_one_json_object(capsys):
    assert bench_firmware.main(["--units", "12", "--fires", "40"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("gate position error")
    result = json.loads(lines[-1])
    for key in ("us_per_unit", "allocs_per_unit", "max_units_per_s", "gate_error_counts_max",
                "fire_jitter_ms_p99"):
        assert key in result
    assert result["allocs_per_unit"] == 0
    assert result["gate_error_counts_max"] <= 1
    assert result["us_per_unit"] > 0 and result["max_units_per_s"] > 0
