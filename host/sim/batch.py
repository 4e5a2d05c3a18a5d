"""The batch around a simulated run, through the host's own APIs: product and batch created if
needed, serials generated into the pool, batch started; afterwards closed with reconciliation and
its EPCIS events forwarded to the directory sink under --out (the embedded default)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

GTIN = "09506000134352"  # GS1's example GTIN (valid check digit), company prefix 9506000
COMPANY_PREFIX_LEN = 7
CASE_SIZE, PALLET_SIZE = 10, 10
SIM_SITE, SIM_READ_POINT = "urn:epc:id:sgln:9506000.00000.0", "urn:epc:id:sgln:9506000.00000.1"  # EPCIS where


def batch_id_for(scenario, db: sqlite3.Connection) -> str:
    """A new batch id per run: SIM-<scenario>-<seed>-<n>."""
    stem = f"SIM-{scenario.name}-{scenario.seed}"
    n = db.execute("SELECT COUNT(*) FROM batch WHERE batch_id LIKE ?", (stem + "-%",)).fetchone()[0]
    return f"{stem}-{n + 1}"


def setup(db_path: Path, scenario) -> str:
    from serialine.host import db as hostdb
    from serialine.host import masterdata, serials

    conn = hostdb.connect(str(db_path))
    try:
        if conn.execute("SELECT 1 FROM product WHERE gtin = ?", (GTIN,)).fetchone() is None:
            masterdata.add_product(conn, GTIN, "Serialine simulated pack", "EU_FMD", COMPANY_PREFIX_LEN)
        if masterdata.get_location(conn, SIM_SITE) is None:
            masterdata.set_location(conn, masterdata.Location(SIM_SITE, "Serialine simulated plant", tz="UTC"))
        batch_id = batch_id_for(scenario, conn)
        (runs,) = conn.execute("SELECT count(*) FROM batch").fetchone()  # a lot is used once per GTIN
        masterdata.create_batch(conn, batch_id, GTIN, lot=f"L{scenario.seed % 100000:05d}-{runs + 1}",
                                expiry=dt.date.today() + dt.timedelta(days=730),
                                planned=scenario.units, case_size=CASE_SIZE, pallet_size=PALLET_SIZE,
                                site=SIM_SITE, read_point=SIM_READ_POINT)
        # rejects and the coder's fill-ahead use serials too; a pool sized for the run stays above
        # the low-water mark, so its alarm means what it says
        need = scenario.units * 2 + 200 + serials.LOW_WATER
        have = serials.available(conn, GTIN)
        if have < need:
            serials.generate(conn, GTIN, need - have)
        masterdata.start_batch(conn, batch_id)
        return batch_id
    finally:
        conn.close()


def resolve_binned(db_path: Path, batch_id: str, in_bin: set[tuple[str, int, int]]) -> int:
    """The operator empties the reject bin: every unit whose outcome the host never heard and
    whose pack is in the bin is resolved as destroyed (with user and reason). A pack that left the
    line stays unresolved: only a person who finds it can say where it is. → units resolved."""
    from serialine.host import db as hostdb
    from serialine.host import resolve

    conn = hostdb.connect(str(db_path))
    try:
        keys = conn.execute("SELECT device_id, boot_id, unit_seq FROM unit WHERE batch_id = ? AND outcome = 'UNKNOWN'",
                            (batch_id,)).fetchall()
        n = 0
        for key in map(tuple, keys):
            if key in in_bin:
                resolve.resolve(conn, batch_id, "%s:%d:%d" % key, destroyed=True, user="serialine-sim operator",
                                reason="pack found in the reject bin")
                n += 1
        return n
    finally:
        conn.close()


def close(db_path: Path, batch_id: str, epcis_dir: Path) -> tuple[bool, list[str]]:
    """Close with reconciliation; forward the batch's EPCIS events. (ok, problems)."""
    from serialine.host import db as hostdb
    from serialine.host.epcis.forwarder import Forwarder
    from serialine.host.epcis.sinks.directory import DirectorySink
    from serialine.host.reconcile import ReconcileError, close_batch

    conn = hostdb.connect(str(db_path))
    try:
        try:
            report = close_batch(conn, batch_id, user="serialine-sim")
            ok, problems = not report.problems, list(report.problems)
        except ReconcileError as exc:
            ok, problems = False, list(exc.report.problems)
        except ValueError as exc:
            ok, problems = False, [str(exc)]
        Forwarder(conn, DirectorySink(epcis_dir)).run_once()
        return ok, problems
    finally:
        conn.close()
