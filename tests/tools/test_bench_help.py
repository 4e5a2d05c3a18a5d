"""`serialine bench NAME --help` prints help and runs nothing, for every benchmark."""

from __future__ import annotations

import time

import pytest

from serialine.tools import bench


@pytest.mark.parametrize("name", sorted(bench.BENCHES))
def test_every_bench_help_prints_help_without_running(name, capsys):
    t0 = time.monotonic()
    try:
        rc = bench.main([name, "--help"])
    except SystemExit as e:  # argparse's own --help
        rc = e.code
    assert rc == 0
    out = capsys.readouterr().out
    assert f"serialine bench {name}" in out
    assert time.monotonic() - t0 < 5, "the benchmark ran"
    assert "{" not in out.strip().splitlines()[-1], "a JSON result line: the benchmark ran"


def test_bench_help_and_unknown():
    assert bench.main(["--help"]) == 0
    assert bench.main(["nope"]) == 2
