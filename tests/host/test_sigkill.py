"""kill -9 the agent in the middle of a batch, restart it: no serial issued twice, no stored
(acknowledged) event lost, none stored twice."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from serialine.host import db, masterdata, serials

from hostkit import GTIN

PROC = str(Path(__file__).with_name("issuer_proc.py"))


def test_sigkill_mid_batch_then_restart(tmp_path):
    path = str(tmp_path / "ledger.db")
    c = db.connect(path)
    masterdata.add_product(c, GTIN, "Aspirin", "EU_FMD", 7)
    serials.generate(c, GTIN, 3000)
    masterdata.create_batch(c, "B1", GTIN, "L1", "2030-01-31", 1000, 5, 4)
    masterdata.start_batch(c, "B1")
    c.close()

    p = subprocess.Popen([sys.executable, PROC, path, "1", "0", "100000"], stdout=subprocess.PIPE, text=True)
    acked = []
    for line in p.stdout:
        acked.append(int(line.split()[2]))
        if len(acked) == 60:
            os.kill(p.pid, signal.SIGKILL)
            break
    p.wait()
    assert p.returncode == -signal.SIGKILL
    last_unit = acked[-1] // 4 - 1
    # restart: the device resends every event it has not seen acknowledged — from a few units before
    # the last ack this test read up to past the last one the process stored before it died (its acks
    # may still sit in the pipe, so that can be well beyond what was read), then reboots (boot 2)
    c = db.connect(path)
    (top_seq,) = c.execute("SELECT max(event_seq) FROM device_event_v1 WHERE boot_id=1").fetchone()
    c.close()
    resend_to = max(last_unit, (top_seq - 1) // 4) + 3
    out = subprocess.run([sys.executable, PROC, path, "2", "0", "40", "1", str(last_unit - 3), str(resend_to)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("DONE")

    c = db.connect(path)
    # every acknowledged event is there, each once, and boot 1's stream has no gap
    seqs = [s for (s,) in c.execute("SELECT event_seq FROM device_event_v1 WHERE boot_id=1 ORDER BY event_seq")]
    assert set(acked) <= set(seqs)
    assert seqs == list(range(1, len(seqs) + 1))
    assert c.execute("SELECT count(*) FROM device_event_v1 WHERE boot_id=2").fetchone()[0] == 41 * 4
    # no serial issued twice: one allocation per serial, one unit per serial, one coder job per serial
    assert c.execute("SELECT count(*) FROM serial_history WHERE state=?"
                     " GROUP BY serial_id HAVING count(*) > 1", (db.STATE_CODE["allocated"],)).fetchall() == []
    assert c.execute("SELECT serial FROM unit WHERE serial IS NOT NULL GROUP BY serial HAVING count(*) > 1").fetchall() == []
    units = c.execute("SELECT count(*), count(serial), sum(outcome='PASSED') FROM unit").fetchone()
    assert units[0] == len(seqs) // 4 + 41 and units[1] == units[0] == units[2]
    # the ledger's serial states agree with the units: every passed unit's serial commissioned once
    assert c.execute("SELECT count(*) FROM serial WHERE state='commissioned'").fetchone()[0] == units[2]
