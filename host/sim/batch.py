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
OPERATOR = "serialine-sim operator"  # the person whose decisions the simulator takes after a run
SIM_USER = "serialine-sim"  # who sets up and closes the simulator's batch
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
            masterdata.add_product(conn, GTIN, "Serialine simulated pack", "EU_FMD", COMPANY_PREFIX_LEN,
                                  user=SIM_USER)
        if masterdata.get_location(conn, SIM_SITE) is None:
            masterdata.set_location(conn, masterdata.Location(SIM_SITE, "Serialine simulated plant", tz="UTC"),
                                    user=SIM_USER)
        batch_id = batch_id_for(scenario, conn)
        (runs,) = conn.execute("SELECT count(*) FROM batch").fetchone()  # a lot is used once per GTIN
        masterdata.create_batch(conn, batch_id, GTIN, lot=f"L{scenario.seed % 100000:05d}-{runs + 1}",
                                expiry=dt.date.today() + dt.timedelta(days=730),
                                planned=scenario.units, case_size=CASE_SIZE, pallet_size=PALLET_SIZE,
                                site=SIM_SITE, read_point=SIM_READ_POINT, user=SIM_USER)
        # rejects and the coder's fill-ahead use serials too; a pool sized for the run stays above
        # the low-water mark, so its alarm means what it says
        need = serials_needed(scenario) + serials.LOW_WATER
        have = serials.available(conn, GTIN)
        if have < need:
            serials.generate(conn, GTIN, need - have, user=SIM_USER)
        masterdata.start_batch(conn, batch_id, user=SIM_USER)
        return batch_id
    finally:
        conn.close()


def serials_needed(scenario) -> int:
    """Serials a run may use: one per pack, rejects and the coder's fill-ahead besides."""
    return scenario.units * 2 + 200


def use(db_path: Path, batch_id: str, scenario) -> str:
    """`serialine sim --batch B`: a batch the user created and started (serialine batch ...), run as
    it is. Refused in one line (RunError, nothing changed) unless it is running and its product's
    serial pool covers the run."""
    from serialine.host import db as hostdb
    from serialine.host import serials

    from .errors import RunError

    if not Path(db_path).exists():
        raise RunError(f"--db {db_path}: no such ledger (serialine init makes one)")
    conn = hostdb.connect(str(db_path))
    try:
        row = conn.execute("SELECT state, gtin FROM batch WHERE batch_id = ?", (batch_id,)).fetchone()
        if row is None:
            raise RunError(f"--batch {batch_id}: no such batch in {db_path}")
        state, gtin = row
        if state != "running":
            how = f"serialine batch start {batch_id}" if state == "created" else "only a running batch is run"
            raise RunError(f"--batch {batch_id} is {state}, not running ({how})")
        have, need = serials.available(conn, gtin), serials_needed(scenario)
        if have < need:
            raise RunError(f"--batch {batch_id}: product {gtin} has {have} serials available, a run of"
                           f" {scenario.units} packs needs up to {need} (serialine batch serials {gtin}"
                           f" --generate {need - have})")
        return batch_id
    finally:
        conn.close()


def resolve_unknown(db_path: Path, batch_id: str, in_bin: set[tuple[str, int, int]],
                    left: set[tuple[str, int, int]]) -> dict[str, int]:
    """The operator, after the run (agent stopped), settles every unit whose outcome the host never
    heard, as a person would from where its pack physically is: in the reject bin → destroyed;
    left the line → found at the case packer (into the batch's open case). Each through
    `serialine batch resolve`'s code, with user and reason. → counts by kind (a refusal keeps the
    unit unresolved and is counted as `refused`)."""
    from serialine.host import db as hostdb
    from serialine.host import resolve

    conn = hostdb.connect(str(db_path))
    counts = {"destroyed": 0, "found_at_packer": 0, "refused": 0, "pack_not_found": 0}
    try:
        keys = conn.execute("SELECT device_id, boot_id, unit_seq FROM unit WHERE batch_id = ? AND outcome = 'UNKNOWN'"
                            " ORDER BY boot_id, unit_seq", (batch_id,)).fetchall()
        for key in map(tuple, keys):
            if key in in_bin:
                kind, how = "destroyed", {"destroyed": True, "reason": "pack found in the reject bin"}
            elif key in left:
                kind, how = "found_at_packer", {"found_at_packer": True, "reason": "pack found at the case packer"}
            else:
                counts["pack_not_found"] += 1
                continue
            try:
                resolve.resolve(conn, batch_id, "%s:%d:%d" % key, user=OPERATOR, **how)
                counts[kind] += 1
            except ValueError:
                counts["refused"] += 1
        return counts
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
            report = close_batch(conn, batch_id, user=SIM_USER)
            ok, problems = not report.problems, list(report.problems)
        except ReconcileError as exc:
            ok, problems = False, list(exc.report.problems)
        except ValueError as exc:
            ok, problems = False, [str(exc)]
        Forwarder(conn, DirectorySink(epcis_dir)).run_once()
        return ok, problems
    finally:
        conn.close()
