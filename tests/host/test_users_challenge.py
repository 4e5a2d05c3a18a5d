"""Challenge permissions on a ledger with users (issue 14 with issue 12's challenge): starting a batch
without the challenge its line's policy wants (`batch start --waive-challenge`) is QA's decision
(challenge.waive); the control interface's challenge.run needs line.challenge."""

import pytest

from serialine.host import cli
from serialine.host.control import Client, ControlError
from serialine.host.db import connect

from test_challenge_policy import cfg_for, configure
from test_control_users import PASSWORDS as CONTROL_PASSWORDS
from test_control_users import agent, ledger  # noqa: F401 - fixtures: a ControlServer on a ledger with users
from test_service import GTIN, make_batch
from userskit import PASSWORDS, add_people
from userskit import cli as run

WHY = "deviation DV-12: challenge kit at calibration"


def start(db, batch, who, *extra):
    return run("batch", "start", batch, "--user", who, *extra, db_path=db, password=PASSWORDS[who])


def test_only_qa_waives_the_challenge_and_the_start_is_theirs(tmp_path):
    db = tmp_path / "serialine.db"
    make_batch(db, "B1")
    for b in ("B2", "B3"):
        assert cli.main(["batch", "create", b, GTIN, "L" + b, "2031-01-31", "--planned", "10", "--case-size", "10",
                         "--pallet-size", "10", "--db", str(db), "--user", "setup"]) == 0
    configure(db, cfg_for(tmp_path, db, "on_change"))
    conn = connect(str(db))
    add_people(conn, "ann", "olga", "eve")
    r = start(db, "B2", "olga")
    assert r.returncode == 1 and "batch B2 not started: line line-1 has no passed challenge" in r.stderr, r.stderr
    for who, role in (("olga", "operator"), ("eve", "engineer")):
        r = start(db, "B2", who, "--waive-challenge", WHY)
        assert r.returncode == 1 and r.stderr == f"error: {who} ({role}) may not do challenge.waive: it takes the role qa\n"
    r = start(db, "B2", "ann", "--waive-challenge", "x")  # the reason rule before any password
    assert r.returncode == 1 and "a reason is required" in r.stderr
    assert conn.execute("SELECT count(*) FROM audit WHERE action='challenge.waived'").fetchone() == (0,)
    r = start(db, "B2", "ann", "--waive-challenge", WHY)
    assert r.returncode == 0, r.stderr
    assert conn.execute("SELECT user FROM audit WHERE action='challenge.waived'").fetchall() == [("ann",)]
    assert conn.execute("SELECT user FROM audit WHERE action='batch.start' AND json_extract(detail, '$.batch_id')"
                        " = 'B2'").fetchall() == [("ann",)]
    assert conn.execute("SELECT user, json_extract(detail, '$.action') FROM audit WHERE action='user.refused'"
                        " ORDER BY seq").fetchall() == [("olga", "challenge.waive"), ("eve", "challenge.waive")]


def test_running_the_challenge_needs_line_challenge(agent):
    """Through the control interface's authorizer: an operator may not run it, QA may."""
    server, loop = agent
    client = Client(server.address)
    with pytest.raises(ControlError, match=r"^otto \(operator\) may not do line.challenge: it takes the role engineer or qa$"):
        client.command("challenge.run", "otto", "after the changeover", password=CONTROL_PASSWORDS["otto"])
    assert loop.seen == []
    try:
        client.command("challenge.run", "quinn", "after the changeover", password=CONTROL_PASSWORDS["quinn"])
    except ControlError:
        pass  # the stand-in loop need not know the command: it got there, past the authorizer
    assert [(r.command, r.user) for r in loop.seen] == [("challenge.run", "quinn")]
