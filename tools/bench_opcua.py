"""`serialine bench opcua`: serial numbers per second served by the OPEN-SCS pool manager over
SNRequestAllocated in pages (default 1,000), Basic256Sha256 SignAndEncrypt on loopback, a real
ledger (each page: the ledger's allocation to the lot's running batch, the grant rows and the
audit record in one transaction). Prints a table, then one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from serialine.host import db, masterdata, serials
from serialine.host.opcua import users
from serialine.host.opcua.client import PoolClient
from serialine.host.opcua.openscs import Ret
from serialine.host.opcua.server import Background

GTIN = "09506000134352"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(total: int, page: int) -> dict:
    d = Path(tempfile.mkdtemp(prefix="serialine-bench-opcua-"))
    conn = db.connect(str(d / "ledger.db"))
    masterdata.add_product(conn, GTIN, "bench", "EU_FMD", 7)
    serials.generate(conn, GTIN, total)
    masterdata.create_batch(conn, "B1", GTIN, "L1", "2030-01-31", total, 10, 10)
    masterdata.start_batch(conn, "B1")
    users.add(d / "users", "bench", "operator", "bench-password")
    endpoint = f"opc.tcp://127.0.0.1:{_free_port()}"
    times: list[float] = []

    async def go():
        async with PoolClient(endpoint, "bench", "bench-password", d / "client-pki") as pc:
            t0 = time.perf_counter()
            for i in range(total // page):
                t = time.perf_counter()
                status, got, _, why = await pc.request(GTIN, page, f"bench#{i}", lot="L1")
                times.append(time.perf_counter() - t)
                if status is not Ret.NoError or len(got) != page:
                    raise RuntimeError(f"page {i}: {status.name} {why}")
            return time.perf_counter() - t0
    with Background(conn, endpoint, str(d / "users"), d / "pki", max_requestable=max(page, 1000)):
        wall = asyncio.run(go())
    (allocated,) = conn.execute("SELECT count(*) FROM serial WHERE gtin=? AND state='allocated'", (GTIN,)).fetchone()
    conn.close()
    served = len(times) * page
    assert allocated == served, (allocated, served)
    times.sort()
    return {"bench": "opcua", "page": page, "pages": len(times), "serials": served, "seconds": round(wall, 3),
            "serials_per_s": round(served / wall), "page_ms_p50": round(1000 * statistics.median(times), 1),
            "page_ms_p95": round(1000 * times[int(0.95 * (len(times) - 1))], 1),
            "security": "Basic256Sha256 SignAndEncrypt", "cpus": os.cpu_count()}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine bench opcua", description=__doc__)
    ap.add_argument("--serials", type=int, default=20_000, help="how many serials in all (default 20,000)")
    ap.add_argument("--page", type=int, default=1000, help="serials per SNRequestAllocated call (default 1,000)")
    a = ap.parse_args(argv)
    if a.page <= 0 or a.serials < a.page:
        ap.error("--serials must be at least --page, both positive")
    r = run(a.serials, a.page)
    rows = [("serials served", f"{r['serials']:,}"), ("pages", f"{r['pages']} x {r['page']:,}"),
            ("wall time", f"{r['seconds']:.2f} s"), ("serials per second", f"{r['serials_per_s']:,}"),
            ("page latency p50 / p95", f"{r['page_ms_p50']} / {r['page_ms_p95']} ms"), ("security", r["security"])]
    width = max(len(k) for k, _ in rows)
    print("OPEN-SCS SNRequestAllocated over OPC UA (loopback)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(json.dumps(r))
    return 0
