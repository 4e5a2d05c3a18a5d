"""SERIALS_LOW: the agent warns once when the serial pool falls below its low-water mark, however
many top-ups see it low; while the pool is not low it counts the pool at most every
LOW_WATER_EVERY_S (a count at every top-up is a sixth of one)."""

from __future__ import annotations

import functools

import pytest

from serialine.host import agent as agent_mod, serials
from serialine.protocol.schema import Reason, Verdict

from hostkit import GTIN
from test_agent_devices import agent_line, run_unit


def _lows(conn) -> int:
    return conn.execute("SELECT count(*) FROM alarm_log WHERE alarm = 'SERIALS_LOW'").fetchone()[0]


@pytest.mark.parametrize("every_s, said", [(0.0, 1), (3600.0, 0)])
def test_serials_low_is_said_once_per_crossing(conn, monkeypatch, every_s, said):
    # the pool holds 300; 5 go to the coder at the start: the mark at 292 is crossed by the 4th unit's top-up
    monkeypatch.setattr(serials, "low_water", functools.partial(serials.low_water, threshold=292))
    counted = []
    real = serials.low_water
    monkeypatch.setattr(serials, "low_water", lambda *a, **k: counted.append(1) or real(*a, **k))
    monkeypatch.setattr(agent_mod, "LOW_WATER_EVERY_S", every_s)
    with agent_line(conn, fill_ahead=5, window_s=0.3) as (agent, link, sc, scam):
        assert _lows(conn) == 0  # 295 available: not low
        assert [run_unit(agent, link, sc, scam, u) for u in range(8)] == [(Verdict.PASS, Reason.OK)] * 8
    assert serials.available(conn, GTIN) < 292
    # every top-up counted: the crossing is said once, not at each of the later top-ups that see it low;
    # counted once an hour: the pool, not low at the first count, is not counted again within the test
    assert _lows(conn) == said
    assert (len(counted) > 1) == (every_s == 0.0)
