"""`serialine sim` as a line engineer runs it: the command, its report, its plot, its exit status."""

from __future__ import annotations

import pytest

import json
import sqlite3

from serialine.host.sim import cli


def test_sim_command_writes_report_plot_ledger_and_epcis(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["--units", "40", "--seed", "3", "--out", str(out), "--report", str(tmp_path / "r.json"),
                   "--quiet"])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["ok"] and r["units_detected"] == 40 and r["scenario"] == "nominal" and r["mode"] == "virtual"
    for key in ("batch", "units_good", "units_bad", "bad_rejected", "good_rejected", "unaccounted",
                "serials_issued_twice", "events_lost", "gate_error_counts", "verdict_latency_ms",
                "throughput_ppm", "cases", "pallets", "epcis_events", "reconciliation_ok", "alarms"):
        assert key in r, key
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "epcis").glob("*.json*"))
    with sqlite3.connect(out / "serialine.db") as c:
        state = c.execute("SELECT state FROM batch WHERE batch_id=?", (r["batch"],)).fetchone()[0]
        assert state == "closed"
        assert c.execute("SELECT count(*) FROM unit WHERE batch_id=? AND outcome IS NOT NULL",
                         (r["batch"],)).fetchone()[0] == 40
        # the sim's ledger has the audit trail a real one has, from the product to the close
        assert {a for (a,) in c.execute("SELECT action FROM audit WHERE user='serialine-sim'")} >= {
            "product.add", "location.set", "serials.add", "batch.create", "batch.start", "batch.close"}
    from serialine.host import audit, db
    conn = db.connect(str(out / "serialine.db"))
    try:
        assert audit.verify(conn)[0]
    finally:
        conn.close()


def test_an_unwritable_out_is_refused_in_one_line(tmp_path):
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "serialine.host.cli", "sim", "--units", "20", "--quiet", "--out", "/proc/x"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("serialine sim: --out /proc/x: cannot write there")


def _user_batch(db, batch="QA-1", *, serials=400, start=True):
    """A batch as a QA manager makes one: the real `serialine init` and `serialine batch` commands."""
    from serialine.host import cli as top
    from serialine.host.sim.batch import GTIN

    def ok(*argv):
        assert top.main([*argv, "--db", str(db), "--user", "qa-anna"]) == 0, argv
    ok("init")
    ok("batch", "product", GTIN, "Aspirin 100 mg", "--market", "EU_FMD", "--prefix-len", "7")
    ok("batch", "serials", GTIN, "--generate", str(serials))
    ok("batch", "create", batch, GTIN, "L7", "2031-01-31", "--planned", "30", "--case-size", "10",
       "--pallet-size", "10")
    if start:
        ok("batch", "start", batch)
    return batch


def test_sim_batch_runs_the_batch_the_user_created(tmp_path):
    """`serialine sim --batch B --db L`: the batch made with `serialine batch` runs through `serialine
    agent run` (its log is in OUT), nothing else is created in the ledger, the run closes it."""
    db, out = tmp_path / "plant.db", tmp_path / "out"
    batch = _user_batch(db)
    rc = cli.main(["--units", "30", "--batch", batch, "--db", str(db), "--out", str(out), "--quiet"])
    r = json.loads((out / "report-nominal.json").read_text())
    assert rc == 0, {k: v for k, v in r["invariants"].items() if not v}
    assert r["batch"] == batch and r["units_detected"] == 30
    assert not (out / "serialine.db").exists()
    with sqlite3.connect(db) as c:
        assert [b for (b,) in c.execute("SELECT batch_id FROM batch")] == [batch]
        assert c.execute("SELECT state FROM batch").fetchone()[0] == "closed"
        assert c.execute("SELECT count(*) FROM unit WHERE outcome IS NOT NULL").fetchone()[0] == 30
    log = (out / "serialine.agent.log").read_text()
    assert f"batch {batch}: running it" in log and "line started (start_on_boot)" in log
    assert "line file" in (out / "line-sim.toml").read_text() and "start_on_boot = true" in (out / "line-sim.toml").read_text()


def test_sim_batch_refuses_a_batch_it_cannot_run_in_one_line(tmp_path):
    import subprocess
    import sys

    db = tmp_path / "plant.db"
    _user_batch(db, "NEW", start=False)

    def sim(*argv):
        return subprocess.run([sys.executable, "-m", "serialine.host.cli", "sim", "--units", "30", "--quiet",
                               "--out", str(tmp_path / "out"), *argv], capture_output=True, text=True, timeout=60)
    with sqlite3.connect(db) as c:
        before = c.execute("SELECT count(*) FROM audit").fetchone()[0]
    not_started, unknown, short = sim("--batch", "NEW", "--db", str(db)), sim("--batch", "NOPE", "--db", str(db)), \
        sim("--batch", "NEW", "--db", str(db), "--units", "300")
    nowhere = sim("--batch", "NEW", "--db", str(tmp_path / "none.db"))
    for p in (not_started, unknown, short, nowhere):
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "--batch NEW is created, not running (serialine batch start NEW)" in not_started.stderr
    assert "--batch NOPE: no such batch" in unknown.stderr
    assert "none.db: no such ledger" in nowhere.stderr
    from serialine.host import cli as top
    assert top.main(["batch", "start", "NEW", "--db", str(db), "--user", "qa-anna"]) == 0
    short = sim("--batch", "NEW", "--db", str(db), "--units", "300")
    assert short.returncode == 2 and "has 400 serials available, a run of 300 packs needs up to 800" in short.stderr
    with sqlite3.connect(db) as c:  # refused: nothing changed but our own start
        assert c.execute("SELECT count(*) FROM audit").fetchone()[0] == before + 1
    assert not (tmp_path / "out").exists()


def test_the_agent_service_says_a_refusal_in_one_line(tmp_path):
    """The simulator's agent is `serialine agent run`: its refusal (a batch closed under the run's
    feet, here: one that does not exist in the ledger the line file names) is the service's own
    one line, which the simulator passes on."""
    import pytest

    from serialine.host.sim import parts
    from serialine.host.sim import scenario as sc
    from serialine.host.sim.errors import RunError

    import os
    import socket

    _user_batch(tmp_path / "l.db", "B1")
    master, slave = os.openpty()
    devices = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]  # coder and camera listening
    host = parts.HostAgent(sc.load("nominal"), tmp_path, tmp_path / "l.db", "NOPE", os.ttyname(slave),
                           *(d.getsockname() for d in devices))
    host.start()
    try:
        assert host.proc.wait(60) == 1
        with pytest.raises(RunError) as exc:
            host.wait_ready(device=None, timeout=1)
    finally:
        host.close()
        os.close(master)
        os.close(slave)
        for d in devices:
            d.close()
    text = str(exc.value)
    assert text.startswith("the host agent exited with status 1:") and "Traceback" not in text
    assert text.splitlines()[-1].startswith("serialine-agent: ERROR no line runs on it"), text


@pytest.mark.alone
def test_sim_in_real_time_holds_the_invariants(tmp_path, monkeypatch):
    """The wall clock drives the line (600 packs/min, far below what the bench sustains); --out is
    relative, as in the README's quick start."""
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--units", "30", "--realtime", "--out", "out", "--quiet"])
    r = json.loads((tmp_path / "out" / "report-nominal.json").read_text())
    assert r["mode"] == "realtime" and r["units_detected"] == 30
    if rc == 3:  # the machine could not carry real time: the run says so and judges nothing
        import pytest

        assert r["invalid"] and not r["ok"]
        pytest.skip(f"run invalid: {r['invalid']}")
    assert rc == 0, {k: v for k, v in r["invariants"].items() if not v}


def test_sim_refuses_a_bad_scenario_and_runs_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('units = 10\n[line]\ncoder_at_mm = "near"\n')
    assert cli.main(["--scenario", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "coder_at_mm" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _procs_using(path) -> list[str]:
    """Processes whose command line names `path` (the agent's --db, the board's --cfg)."""
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmd and int(pid) != os.getpid():
            found.append(cmd)
    return found


def test_a_busy_out_is_refused_and_ctrl_c_stops_the_line_and_aborts_the_batch(tmp_path):
    """A real `serialine sim` in a subprocess: a second run into its --out is refused in one line
    (never two agents on one ledger); SIGINT then ends it cleanly: exit 130, one line, no
    traceback, the batch aborted, no agent or board left running, the --out free again."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "serialine.host.cli", "sim", "--units", "600", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        db = out / "serialine.db"
        end = time.monotonic() + 90
        while time.monotonic() < end:  # running: the agent has stored units
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
                    if c.execute("SELECT count(*) FROM unit WHERE outcome IS NOT NULL").fetchone()[0] >= 20:
                        break
            except sqlite3.Error:
                pass
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            raise AssertionError("the run never got going")
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and "in use by another run" in second.stderr, second.stderr
        assert f"pid {proc.pid}" in second.stderr
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert "interrupted at pack" in stderr and "line stopped" in stderr and "aborted" in stderr, stderr
    with sqlite3.connect(out / "serialine.db") as c:
        (state,) = c.execute("SELECT state FROM batch").fetchone()
        assert state == "aborted"
        assert c.execute("SELECT count(*) FROM unit WHERE outcome IS NULL").fetchone()[0] == 0
    assert not _procs_using(out)
    again = cli.main(["--units", "20", "--out", str(out), "--quiet"])  # the lock went with the run
    assert again == 0
