"""Hypothesis against the firmware's config parsers under MicroPython: any file bytes either
load as a valid configuration or are refused with a reason; validate() agrees with the rules."""

from __future__ import annotations

import ast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serialine.protocol import schema as S

FIELDS = tuple(f.name for f in S.flat_fields(S.ConfigFields))
GOOD = [7, 400, 800, 2000, 2100, 2600, 1000, 5000, 150, 0, 200, 100, 100, 20000, 10000,
        0, 1000, 0, 0, 0, 500, 0]

SLOW = settings(max_examples=8, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def mutate(draw_blob: bytes, good: bytes) -> bytes:
    import zlib

    if len(draw_blob) % 2:  # a right checksum over a fuzzed body reaches the body parser
        return good + b"%08x" % zlib.crc32(draw_blob) + draw_blob
    return good[: len(draw_blob) % (len(good) + 1)] + draw_blob


@SLOW
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=25))
def test_any_file_bytes_load_or_are_refused_with_a_reason(mp, tmp_path_factory, blobs):
    d = tmp_path_factory.mktemp("cfg")
    good = b"SLC1"  # a valid prefix makes the fuzzer reach the checksum and the body
    paths = []
    for i, blob in enumerate(blobs):
        p = d / f"{i}.cfg"
        p.write_bytes(mutate(blob, good))
        paths.append(str(p))
    code = f"""
import config
for p in {paths!r}:
    c, why = config.load(p)
    print(repr((c is not None, why)))
"""
    for line in mp(code):
        ok, why = ast.literal_eval(line)
        assert ok or why.startswith("config file rejected: "), why


@SLOW
@given(st.lists(st.lists(st.integers(0, 70000), min_size=22, max_size=22), min_size=1, max_size=25))
def test_validate_accepts_only_whole_valid_configs(mp, configs):
    configs = [[g if i in (0, 9, 15, 21) else v for i, (g, v) in enumerate(zip(GOOD, c))]
               for c in configs] + [GOOD]
    code = f"""
import config
for c in {configs!r}:
    print(repr(config.validate(c)))
"""
    results = [ast.literal_eval(line) for line in mp(code)]
    assert results[-1] == (0, 255)
    for c, (res, bad) in zip(configs, results):
        order = 0 < c[1] < c[2] < c[3] <= c[4] < c[5]
        if res == 0:
            assert order and bad == 255
            v = c[13]
            counts = c[3] - c[7] * v // 1_000_000 - c[12] - c[2]
            assert counts * 1_000_000 // v >= c[14]
        else:
            assert 0 <= bad < 22 and res in (1, 2, 3)
            if res == 1:
                assert not order
