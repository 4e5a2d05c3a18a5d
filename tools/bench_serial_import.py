"""A 1M-line serial import through `serialine batch serials --import`, with a writer beside it
that commits every 20 ms as a line's agent does: wall time, the import's longest write
transaction, and the longest the writer waited for its BEGIN IMMEDIATE ... COMMIT.

    python tools/bench_serial_import.py [LINES] [--generate]

--generate: the same beside `batch serials --generate LINES` instead (chunks paced to hold the
lock about serials.HOLD_S). Either way the lock stays free after each chunk for serials._pause.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

from serialine.host import cli, db, masterdata, serials

GTIN = "09506000134352"


def main(lines: int = 1_000_000, generate: bool = False) -> dict:
    d = tempfile.mkdtemp()
    path = os.path.join(d, "ledger.db")
    conn = db.connect(path)
    masterdata.add_product(conn, GTIN, "bench", "EU_FMD", 7)
    pool = os.path.join(d, "pool.txt")
    if not generate:
        with open(pool, "w") as f:
            f.write("".join(s + "\n" for s in serials.random_serials("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", 12, lines)))
    holds: list[float] = []
    real = serials.transaction

    class Timed(real):
        def __enter__(self):
            self.t = time.monotonic()
            return super().__enter__()

        def __exit__(self, *exc):
            out = super().__exit__(*exc)
            holds.append(time.monotonic() - self.t)
            return out

    serials.transaction = Timed
    stop, waits = threading.Event(), []

    def agent():
        a = db.connect(path)
        while not stop.is_set():
            t = time.monotonic()
            with db.transaction(a):
                a.execute("INSERT INTO alarm_log (at, source, alarm) VALUES (0, 'bench', 'tick')")
            waits.append(time.monotonic() - t)
            time.sleep(0.02)

    th = threading.Thread(target=agent)
    th.start()
    t = time.monotonic()
    how = ["--generate", str(lines)] if generate else ["--import", pool]
    rc = cli.main(["batch", "serials", GTIN, *how, "--db", path, "--user", "bench"])
    wall = time.monotonic() - t
    stop.set()
    th.join()
    return {"rc": rc, "lines": lines, "wall_s": round(wall, 1), "chunk": serials.CHUNK,
            "write_transactions": len(holds), "longest_write_s": round(max(holds), 3),
            "writer_commits": len(waits), "writer_longest_wait_s": round(max(waits), 3)}


if __name__ == "__main__":
    numbers = [a for a in sys.argv[1:] if a.isdigit()]
    print(main(int(numbers[0]) if numbers else 1_000_000, "--generate" in sys.argv[1:]))
