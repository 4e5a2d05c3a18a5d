"""`serialine bench serials` (and `bench batch`'s serial figures) over several draws: each draw a
`batch serials --generate` of its own into the same pool, serials_per_s the median draw's,
serials_per_s_best the best, serials_draws every one; a bad count is one line."""

from __future__ import annotations

import json
import statistics

import pytest

from serialine.tools import bench_batch, bench_serials


def test_the_figure_is_the_median_of_the_draws_each_one_real_work_into_the_pool(tmp_path, capsys):
    assert bench_serials.main(["--serials", "400", "--draws", "3", "--pool", "100", "--dir", str(tmp_path)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    draws = figures["serials_draws"]
    assert len(draws) == 3 and len(figures["serials_draws_cpu_s"]) == 3
    assert figures["serials_per_s"] == round(statistics.median(draws))
    assert figures["serials_per_s_best"] == max(draws)
    assert figures["serials_in_pool"] == 100 + 3 * 400 and figures["serials_per_draw"] == 400
    for key in ("serials_per_cpu_s", "serials_per_cpu_s_best", "serials_s", "serials_cpu_s", "serials_peak_rss_mb",
                "serial_bytes_per_serial"):
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, key


@pytest.mark.parametrize("main, flag", [(bench_serials.main, "--draws"), (bench_serials.main, "--serials"),
                                        (bench_batch.main, "--serial-draws")])
def test_a_count_under_one_is_refused_in_one_line(main, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main([flag, "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {flag}: '0' is not a whole number of 1 or more" in err
    assert "Traceback" not in err
