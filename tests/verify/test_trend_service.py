"""The agent service publishes the print-quality trend in its control status (`print_quality`), which
`serialine line status`, `serialine tune` and the console read. The line around the device is the
service rig of tests/host/test_service.py."""

import sys
from pathlib import Path

HOST_TESTS = Path(__file__).resolve().parents[1] / "host"
if str(HOST_TESTS) not in sys.path:
    sys.path.insert(0, str(HOST_TESTS))

from test_service import Agent, line, wait_for  # noqa: E402,F401 - `line` is the rig fixture


def test_the_status_carries_the_trend_of_the_grades_read(line):
    rig, cfg, db, batch = line()
    agent = Agent(cfg, batch)
    try:
        agent.wait_status(lambda s: s["ready"])
        wait_for(lambda: len(rig.packs) >= 8, 30, "8 packs on the line", rig)
        st = agent.wait_status(lambda s: ((s.get("print_quality") or {}).get("parameters") or {}).get("overall", {})
                               .get("n", 0) >= 3)
        pq = st["print_quality"]
        assert pq["window"] == 200 and pq["drifting"] == []
        assert pq["parameters"]["overall"]["grade"] == "A" and not pq["parameters"]["overall"]["drifting"]
        assert agent.stop() == 0, agent.log
    finally:
        agent.kill()
