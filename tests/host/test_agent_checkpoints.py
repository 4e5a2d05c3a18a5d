"""The running agent seals its logs as it goes (audit.Checkpointer in Agent._step, after the
verdicts) and when it stops (Agent.release), so a batch close finds only its own rows unsealed."""

from __future__ import annotations

import contextlib
import json
import threading

from serialine.host import audit
from serialine.protocol.schema import Reason, Verdict

from test_agent_devices import agent_line, run_unit


@contextlib.contextmanager
def _line(conn):
    """A started agent checkpointing after every 2 units' events."""
    with agent_line(conn, fill_ahead=4, window_s=0.3) as (agent, link, sc, scam):
        agent.checkpoints = audit.Checkpointer(conn, "serialine-agent", units=2, seconds=float("inf"))
        yield agent, link, sc, scam


def _checkpoints(conn):
    return [(user, json.loads(detail)["parts"]) for user, detail in conn.execute(
        "SELECT user, detail FROM audit WHERE action = ? ORDER BY seq", (audit.CHECKPOINT,))]


def test_the_agent_checkpoints_as_the_line_runs_and_as_it_stops(conn):
    with _line(conn) as (agent, link, sc, scam):
        assert [run_unit(agent, link, sc, scam, u) for u in range(3)] == [(Verdict.PASS, Reason.OK)] * 3
        assert agent.checkpoints.wait(60)  # (it runs on a thread of its own)
        ran = _checkpoints(conn)
        assert [user for user, _ in ran] == ["serialine-agent"]  # after 2 units' 8 events, not before
        agent.release()  # the agent stops: the third unit's events are sealed too
        stopped = _checkpoints(conn)
    assert len(stopped) == 2
    (n,) = conn.execute("SELECT count(*) FROM device_event WHERE unit_seq IS NOT NULL").fetchone()
    part = next(p for p in stopped[1][1] if audit._PARTS[p][0].startswith("device_event"))  # its chain, any form
    assert stopped[1][1][part]["rows"] >= n == 12
    assert audit.verify(conn)[0]


def test_the_line_goes_on_while_a_checkpoint_runs(conn, monkeypatch):
    """A checkpoint held on purpose (in the middle of hashing the logs): the agent's steps go on,
    units are stored and judged, verdicts sent; the checkpoint ends after, and the stop seals the rest."""
    entered, go, where = threading.Event(), threading.Event(), []
    real = audit._continue_logs

    def held(*args, **kwargs):
        if not where:
            where.append(threading.current_thread())
            entered.set()
            if not go.wait(30):
                raise RuntimeError("held past the test's deadline")
        return real(*args, **kwargs)
    monkeypatch.setattr(audit, "_continue_logs", held)
    with _line(conn) as (agent, link, sc, scam):
        assert [run_unit(agent, link, sc, scam, u) for u in range(2)] == [(Verdict.PASS, Reason.OK)] * 2
        assert entered.wait(30) and where[0] is not threading.current_thread()
        assert [run_unit(agent, link, sc, scam, u) for u in range(2, 6)] == [(Verdict.PASS, Reason.OK)] * 4
        assert agent.checkpoints.made == 0 and not _checkpoints(conn)  # still held: the line went on regardless
        go.set()
        assert agent.checkpoints.wait(60) and agent.checkpoints.made == 1
        agent.release()
    made = _checkpoints(conn)
    assert len(made) == 2
    part = next(p for p in made[1][1] if audit._PARTS[p][0].startswith("device_event"))
    (n,) = conn.execute("SELECT count(*) FROM device_event WHERE unit_seq IS NOT NULL").fetchone()
    assert made[1][1][part]["rows"] >= n == 24
    assert audit.verify(conn)[0]
