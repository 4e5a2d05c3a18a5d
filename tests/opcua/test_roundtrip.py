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
    creds = {"SERIALINE_OPCUA_USER": "emil:" + PASSWORDS["emil"][1]}
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


def produce(conn, batch_id: str, n: int) -> None:
    """n packs through the host path (tools/bench_batch.py's poll: detected, printed, inspected, passed)."""
    from serialine.host.ledger import Ledger
    L, seq = Ledger(conn, batch_id), 0
    with db.transaction(conn):
        L.queue_codes(n)
    with db.transaction(conn):
        msgs = []
        for k in range(n):
            for name, f in (("UNIT_DETECTED", dict(unit_seq=k, pos=0, t_us=0, flags=0)),
                            ("UNIT_PRINTED", dict(unit_seq=k, pos=0, t_us=0)),
                            ("UNIT_INSPECTED", dict(unit_seq=k, pos=0, t_us=0))):
                seq += 1
                msgs.append((name, {**f, "event_seq": seq}))
        L.store_batch("t", 1, msgs)
        rows = []
        for k in range(n):
            code = L.expected_code("t", 1, k)
            verdict, reason, serial = L.judge.decide("]d2" + code, "A", code)
            rows.append(("t", 1, k, verdict, reason, serial, "A"))
        L.record_verdicts(rows)
    with db.transaction(conn):
        L.store_batch("t", 1, [("UNIT_OUTCOME", dict(event_seq=seq + 1 + k, unit_seq=k, outcome=1, reason=0,
                                                     gate_error=0, pos=0, t_us=0)) for k in range(n)])
        L.flush_events()


def test_batch_close_returns_unused_serials_to_the_pool_they_came_from(tmp_path, upstream):
    endpoint, site_db = upstream
    line_db = tmp_path / "line.db"
    make_ledger(line_db, batch=False).close()
    creds = {"SERIALINE_OPCUA_USER": "emil:" + PASSWORDS["emil"][1]}
    base = ["--db", str(line_db), "--user", "eve"]
    assert cli("batch", "serials", GTIN, *base, "--from", endpoint, "--count", "30", env=creds).returncode == 0
    ln = db.connect(str(line_db))
    for b, lot in (("B1", "L1"), ("B2", "L2")):
        masterdata.create_batch(ln, b, GTIN, lot, "2030-01-31", 100, 10, 2)
        masterdata.start_batch(ln, b)
    produce(ln, "B2", 5)
    with db.transaction(ln):
        b1 = serials.allocate(ln, "B1", GTIN, 12)
        b2 = serials.allocate(ln, "B2", GTIN, 8)
    site = db.connect(str(site_db))
    out_upstream = {s for (s,) in site.execute("SELECT serial FROM serial_grant WHERE state='out'")}
    assert set(b1) | set(b2) <= out_upstream

    # the upstream refuses these credentials: B1 ends (abort gives its serials back as close does), they
    # stay due upstream, said in one line
    wrong = cli("batch", "abort", "B1", *base, "--reason", "line fault", env={"SERIALINE_OPCUA_USER": "olga:wrong-password"})
    assert wrong.returncode == 0 and "batch B1 aborted" in wrong.stdout, wrong.stderr
    (line,) = [x for x in wrong.stderr.splitlines() if "upstream" in x]
    assert "12 unused serial(s) of batch B1 stay marked to return upstream" in line and "return-serials B1" in line
    assert "Traceback" not in wrong.stderr
    due = dict(ln.execute("SELECT serial, state FROM serial_upstream_return WHERE batch_id='B1'"))
    assert due == {s: "due" for s in b1}
    with pytest.raises(serials.SerialError, match="exhausted"):  # out of this pool from now on
        with db.transaction(ln):
            serials.allocate(ln, "B2", GTIN, 6)  # 30 - 5 - 12 - 8 = 5 left
    assert {s for (s,) in site.execute("SELECT serial FROM serial_grant WHERE state='out'")} == out_upstream

    again = cli("batch", "return-serials", "B1", *base, env=creds)
    assert again.returncode == 0 and f"12 unused serial(s) of batch B1 returned to {endpoint}" in again.stdout, again.stderr
    assert set(dict(ln.execute("SELECT serial, state FROM serial_upstream_return WHERE batch_id='B1'")).values()) == {"returned"}
    back = {s: st for s, st in site.execute("SELECT serial, state FROM serial_grant WHERE serial IN "
                                            "(SELECT value FROM json_each(?))", (__import__("json").dumps(b1),))}
    assert back == {s: "returned" for s in b1}  # the site's pool has them again
    assert serials.available(site, GTIN) == 2500 - 30 + 12
    assert "13 unused" not in again.stdout
    nothing = cli("batch", "return-serials", "B1", *base, env=creds)
    assert nothing.returncode == 0 and "no serials due upstream" in nothing.stdout
    # B2 closes with good credentials: returned at once; audit records on both sides
    ok = cli("batch", "close", "B2", *base, env=creds)
    assert ok.returncode == 0 and "8 unused serial(s) of batch B2 returned" in ok.stdout, ok.stderr
    acts = [a for (a,) in ln.execute("SELECT action FROM audit WHERE action LIKE '%upstream%' ORDER BY seq")]
    assert acts == ["serials.upstream_due", "opcua.returned_upstream", "serials.upstream_due", "opcua.returned_upstream"]
    assert site.execute("SELECT count(*) FROM audit WHERE action='opcua.SNReturnUnallocated' AND user='opcua:emil'"
                        " AND detail LIKE '%NoError%'").fetchone()[0] == 2
    site.close(), ln.close()
