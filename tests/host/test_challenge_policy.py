"""`[policy] challenge` and `serialine batch start` on a real ledger: the configuration records the
service writes (challenge.record_configuration) and the challenge records (challenge.record), then the
real CLI's refusal or start."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
from pathlib import Path

import pytest

from serialine.host import challenge, cli, linefile
from serialine.host.db import transaction
from serialine.host.ledgerfile import open_ledger

from rigs import line_text
from test_service import GTIN, SERIALINE, make_batch


def three_batches(db: Path, user: str = "qa-anna") -> Path:
    """A ledger with batch B1 running and B2, B3 made, not started."""
    make_batch(db, "B1")
    for b in ("B2", "B3"):
        assert cli.main(["batch", "create", b, GTIN, "L" + b, "2031-01-31", "--planned", "10", "--case-size", "10",
                         "--pallet-size", "10", "--db", str(db), "--user", user]) == 0
    return db


@pytest.fixture
def ledger(tmp_path):
    return three_batches(tmp_path / "serialine.db")


def cfg_for(tmp_path: Path, db: Path, policy: str, line: str = "line-1"):
    path = tmp_path / f"{line}.toml"
    path.write_text(line_text(db, line_id=line, extra=f'\n[policy]\nchallenge = "{policy}"\nshift_hours = 8\n'))
    return linefile.load(path)


def configure(db: Path, cfg, boot: int = 1) -> bool:
    conn = open_ledger(db)
    try:
        with transaction(conn):
            return challenge.record_configuration(conn, cfg, linefile.device_fields(cfg, boot), user="serialine-agent",
                                                  device_id="line-1", boot_id=boot, config_id=boot, how="applied")
    finally:
        conn.close()


def challenged(db: Path, cfg, result: str = "passed") -> None:
    conn = open_ledger(db)
    try:
        with transaction(conn):
            challenge.record(conn, cfg, None, user="eng-bob", reason="challenge test", result=result, packs=[],
                             problems=[] if result == "passed" else ["pack 1 no_code: not confirmed in the bin"])
    finally:
        conn.close()


def start(db: Path, batch: str, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([SERIALINE, "batch", "start", batch, "--db", str(db), "--user", "qa-anna", *extra],
                          capture_output=True, text=True, timeout=60)


def refused(r, *words) -> bool:
    return r.returncode == 1 and r.stderr.count("\n") == 1 and all(w in r.stderr for w in words) \
        and "Traceback" not in r.stderr


def test_on_change(ledger, tmp_path):
    cfg = cfg_for(tmp_path, ledger, "on_change")
    assert configure(ledger, cfg)
    assert refused(start(ledger, "B2"), "batch B2 not started", "line line-1 has no passed challenge since its"
                   " configuration changed", 'challenge = "on_change"')
    challenged(ledger, cfg, "failed")
    assert refused(start(ledger, "B2"), "no passed challenge")
    challenged(ledger, cfg)
    assert not configure(ledger, cfg, boot=2)  # a new boot on the same settings is no change
    assert start(ledger, "B2").returncode == 0
    changed = dataclasses.replace(cfg, geometry=dataclasses.replace(cfg.geometry, gate_lead_ms=9.0))
    assert configure(ledger, changed, boot=3)
    assert refused(start(ledger, "B3"), "configuration changed", "the last passed one was at")


def test_a_waived_challenge_is_audited_with_its_reason(ledger, tmp_path):
    cfg = cfg_for(tmp_path, ledger, "on_change")
    configure(ledger, cfg)
    assert refused(start(ledger, "B2", "--waive-challenge", "x"), "reason")  # the one reason rule
    ok = start(ledger, "B2", "--waive-challenge", "deviation DV-12: batch closed before its challenge")
    assert ok.returncode == 0, ok
    conn = open_ledger(ledger)
    try:
        (user, text), = conn.execute("SELECT user, detail FROM audit WHERE action='challenge.waived'").fetchall()
    finally:
        conn.close()
    assert user == "qa-anna" and "DV-12" in text and "no passed challenge" in text


def test_per_batch_and_per_shift(ledger, tmp_path):
    cfg = cfg_for(tmp_path, ledger, "per_batch")
    configure(ledger, cfg)
    challenged(ledger, cfg)
    assert start(ledger, "B2").returncode == 0
    assert refused(start(ledger, "B3"), "since the last batch start", '"per_batch"')
    challenged(ledger, cfg)
    assert start(ledger, "B3").returncode == 0

    shift = cfg_for(tmp_path, ledger, "per_shift")
    configure(ledger, shift)
    challenged(ledger, shift)
    conn = open_ledger(ledger)
    try:
        assert challenge.missing(conn, "line-1") is None
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=9)
        assert "no passed challenge in the last 8 h" in challenge.missing(conn, "line-1", now=later)
    finally:
        conn.close()


def test_no_policy_and_several_lines(ledger, tmp_path):
    assert configure(ledger, cfg_for(tmp_path, ledger, "none"))
    assert start(ledger, "B2").returncode == 0  # [policy] challenge = "none": not gated
    one, two = cfg_for(tmp_path, ledger, "on_change", "line-1"), cfg_for(tmp_path, ledger, "on_change", "line-2")
    configure(ledger, one)
    configure(ledger, two)
    challenged(ledger, two)
    assert refused(start(ledger, "B3"), "lines line-1, line-2 ask for a challenge", "--line")
    assert refused(start(ledger, "B3", "--line", "line-1"), "line line-1 has no passed challenge")
    assert start(ledger, "B3", "--line", "line-2").returncode == 0


@pytest.mark.parametrize("plan,why", [("good,no_code", "bad packs come first"), ("no_code,bogus", "unknown pack kind"),
                                      (",".join(["good"] * 33), "1..32 packs")])
def test_plan_refused(plan, why):
    with pytest.raises(challenge.ChallengeError, match=why):
        challenge.parse_plan(plan)
