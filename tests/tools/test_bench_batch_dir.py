"""`serialine bench batch --dir DIR` where DIR is no directory to work in: one line, exit 1, nothing run."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("where, why", [("no/such/dir", "No such file or directory"), ("file", "Not a directory")])
def test_a_bad_work_dir_is_one_line_and_exit_1(tmp_path, where, why):
    (tmp_path / "file").write_text("")
    bad = tmp_path / where
    r = subprocess.run([sys.executable, "-m", "serialine.host.cli", "bench", "batch", "--units", "10", "--dir", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r
    assert r.stderr == f"serialine bench batch: --dir {bad}: {why}\n", r.stderr
    assert r.stdout == ""
