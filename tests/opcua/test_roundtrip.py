"""Two Serialine ledgers: one serves its pool (`serialine opcua serve`, a real process), the other
fills its pool from it (`serialine batch serials GTIN --from … --count N`): all or nothing,
idempotent with the same request token, no serial issued twice."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from serialine.host import db, masterdata, serials

from opcuakit import GTIN, PASSWORDS, free_port, make_ledger

CLI = [sys.executable, "-m", "serialine.host.cli"]


def cli(*args, env=None, input=None):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120, input=input,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def upstream(tmp_path, users_file):
    site = make_ledger(tmp_path / "site.db", 2500, batch=False)
    site.close()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(CLI + ["opcua", "serve", "--db", str(tmp_path / "site.db"), "--endpoint", endpoint,
                                   "--users", str(users_file)], stderr=subprocess.PIPE, text=True)
    line = ""
    deadline = time.monotonic() + 60
    while "serving" not in line and time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "opcua serve ended early"
    assert "serving" in line
    yield endpoint, tmp_path / "site.db"
    proc.terminate()
    assert proc.wait(30) == 0


def test_pool_round_trip_between_two_ledgers(tmp_path, upstream):
    endpoint, site_db = upstream
    line = make_ledger(tmp_path / "line.db", batch=False)
    line.close()
    creds = {"SERIALINE_OPCUA_USER": "olga:" + PASSWORDS["olga"][1]}
    args = ["batch", "serials", GTIN, "--db", str(tmp_path / "line.db"), "--from", endpoint, "--user", "eve"]

    too_many = cli(*args, "--count", "3000", env=creds)  # more than the site has: nothing at all
    assert too_many.returncode == 1 and "InsufficientSerialNumbers" in too_many.stderr, too_many.stderr
    assert "Traceback" not in too_many.stderr
    first = cli(*args, "--count", "2100", env=creds)  # three pages of 1,000
    assert first.returncode == 0, first.stderr
    token = re.search(r"request token (\S+):", first.stdout).group(1)
    again = cli(*args, "--count", "2100", "--request-token", token, env=creds)
    assert again.returncode == 0 and "already imported" in again.stdout, again.stdout + again.stderr

    site, ln = db.connect(str(site_db)), db.connect(str(line_db := tmp_path / "line.db"))
    got = {s for (s,) in ln.execute("SELECT serial FROM serial WHERE gtin=?", (GTIN,))}
    assert len(got) == 2100 and serials.available(ln, GTIN) == 2100
    assert serials.available(site, GTIN) == 400  # 2,500 minus what the line holds (the failed try gave back all)
    # both ledgers issue: the site's own batch never gets one of the line's serials
    masterdata.create_batch(site, "S1", GTIN, "LS", "2030-01-31", 400, 10, 2)
    masterdata.start_batch(site, "S1")
    with db.transaction(site):
        site_issued = set(serials.allocate(site, "S1", GTIN, 400))
    with pytest.raises(serials.SerialError, match="exhausted"):
        with db.transaction(site):
            serials.allocate(site, "S1", GTIN, 1)
    assert not site_issued & got
    # the wrong password, and a viewer, get nothing and change nothing
    before = db.snapshot(ln)
    wrong = cli(*args, "--count", "10", env={"SERIALINE_OPCUA_USER": "olga:wrong-password"})
    viewer = cli(*args, "--count", "10", env={"SERIALINE_OPCUA_USER": "vera:" + PASSWORDS["vera"][1]})
    assert wrong.returncode == 1 and "refused" in wrong.stderr and "Traceback" not in wrong.stderr
    assert viewer.returncode == 1 and "BadUserAccessDenied" in viewer.stderr, viewer.stderr
    assert db.snapshot(ln) == before
    site.close(), ln.close(), line_db
