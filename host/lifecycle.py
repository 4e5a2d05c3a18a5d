"""Ending a batch that cannot finish (abort) and reopening a finished one for rework.

    created ─start─▶ running ─close─▶ closed ─reopen─▶ reopened ─close─▶ closed
       └───────────────┴──abort──▶ aborted ─reopen─▶ reopened

Each is one transaction with its audit record (user and reason), or nothing. A line never runs
on a reopened batch (the agent wants `running`); only rework and close do."""

from __future__ import annotations

import glob
import sqlite3

from . import audit, db, lockfile, reporting
from .aggregation import Aggregator
from .db import transaction
from .masterdata import get_batch

ABORTED_REASON = "BATCH_ABORTED"  # unit.reason of a unit the abort rejected


class LifecycleError(ValueError):
    pass


def _who(user: str, reason: str, what: str) -> None:
    if not (user or "").strip() or not (reason or "").strip():
        raise LifecycleError(f"{what} needs a user and a reason")


def live_agents(conn: sqlite3.Connection, batch_id: str) -> list[str]:
    """Agents serving this batch right now: their lock beside the ledger is held (host/agent.py)."""
    path = db.file_of(conn)
    held = (lockfile.holder(lock) for lock in glob.glob(glob.escape(path) + ".*.agent.lock")) if path else ()
    return [h for h in held if h is not None and h.endswith(f"batch {batch_id}")]


def abort(conn: sqlite3.Connection, batch_id: str, user: str, reason: str) -> dict:
    """End a created or running batch for good. Units without an outcome are rejected; a serial
    printed, or queued to a coder (it may exist on a pack), is written off as rejected, never
    reissued; a serial only allocated goes back to the pool. Packs already commissioned stay
    commissioned and their open case/pallet is closed as partial. → counts (also in the audit)."""
    _who(user, reason, "abort")
    with transaction(conn):
        b = get_batch(conn, batch_id)
        if b.state not in ("created", "running"):
            raise LifecycleError(f"batch {batch_id} is {b.state}: only a created or running batch can be aborted")
        agents = live_agents(conn, batch_id)
        if agents:
            raise LifecycleError(f"batch {batch_id} is being run by an agent ({agents[0]}): stop the line and "
                                 "its agent first, then abort")
        (unknown,) = conn.execute("SELECT count(*) FROM unit_row WHERE batch_id=? AND outcome='UNKNOWN'",
                                  (batch_id,)).fetchone()
        if unknown:
            raise LifecycleError(f"batch {batch_id} has {unknown} unit(s) whose outcome is unknown (the pack may be "
                                 "on the market): resolve each with serialine batch resolve before aborting")
        units = conn.execute("UPDATE unit_row SET outcome='REJECTED_UNCONFIRMED', reason=? WHERE batch_id=? AND outcome IS NULL",
                             (ABORTED_REASON, batch_id)).rowcount
        # the return trigger lets allocations go back only while a batch is closing
        conn.execute("UPDATE batch SET state='closing' WHERE batch_id=?", (batch_id,))
        printed = conn.execute("UPDATE serial SET state='rejected' WHERE batch_id=? AND state='printed'",
                               (batch_id,)).rowcount
        dropped, queued, returned = release_allocations(conn, batch_id)
        partial = Aggregator(conn, b, reporting.context_for(b)).close_partial() if b.state == "running" else []
        conn.execute("UPDATE batch SET state='aborted', closed_at=strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE batch_id=?",
                     (batch_id,))
        counts = {"units_rejected": units, "serials_rejected_printed": printed, "serials_rejected_queued": queued,
                  "serials_returned": returned, "coder_jobs_dropped": dropped, "closed_partial": partial}
        audit.append(conn, user, "batch.abort", {"batch_id": batch_id, "reason": reason, "from": b.state, **counts})
    return counts


def reopen(conn: sqlite3.Connection, batch_id: str, user: str, reason: str) -> None:
    """A closed (or aborted) batch becomes `reopened`: rework may change it, and it must be closed
    (reconciled) again. No line runs on it."""
    _who(user, reason, "reopen")
    with transaction(conn):
        b = get_batch(conn, batch_id)
        if b.state not in ("closed", "aborted"):
            raise LifecycleError(f"batch {batch_id} is {b.state}: only a closed or aborted batch can be reopened")
        conn.execute("UPDATE batch SET state='reopened', closed_at=NULL WHERE batch_id=?", (batch_id,))
        audit.append(conn, user, "batch.reopen", {"batch_id": batch_id, "reason": reason, "from": b.state})


def release_allocations(conn: sqlite3.Connection, batch_id: str) -> tuple[int, int, int]:
    """End of a batch (close or abort; state 'closing'): queued coder jobs dropped; a serial that
    reached a coder may exist on some pack, so it is written off as rejected, never reissued; one
    only allocated goes back to the pool. → (jobs dropped, serials rejected, serials returned)."""
    dropped = conn.execute("UPDATE coder_job_row SET state='dropped' WHERE batch_id=? AND state='queued'",
                           (batch_id,)).rowcount
    voided = conn.execute("UPDATE serial SET state='rejected' WHERE batch_id=? AND state='allocated' AND EXISTS"
                          " (SELECT 1 FROM coder_job_row j WHERE j.serial_id=serial.serial_id)",
                          (batch_id,)).rowcount
    returned = conn.execute("UPDATE serial SET state='available', batch_id=NULL WHERE batch_id=? AND state='allocated'",
                            (batch_id,)).rowcount
    return dropped, voided, returned


REWORKABLE = ("running", "reopened")


def check_reworkable(conn: sqlite3.Connection, batch_id: str):
    """The batch, if rework may change it; else why not (a closed batch's reconciliation is final)."""
    b = get_batch(conn, batch_id)
    if b.state not in REWORKABLE:
        hint = (f"; reopen it first: serialine batch reopen {batch_id} --reason ... --user ..."
                if b.state in ("closed", "aborted") else "")
        raise LifecycleError(f"batch {batch_id} is {b.state}: rework needs a running or reopened batch{hint}")
    return b
