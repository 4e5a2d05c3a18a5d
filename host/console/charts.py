"""The trends, drawn server-side by matplotlib as SVG (no script in the page draws anything)."""

from __future__ import annotations

import datetime as _dt
import io
import sqlite3
from collections import Counter, defaultdict

from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.dates import DateFormatter, date2num
from matplotlib.figure import Figure

from serialine.protocol.schema import Outcome

from .. import devevents

GRADES = ("A", "B", "C", "D", "F")


def _svg(fig: Figure) -> bytes:
    FigureCanvasSVG(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    return buf.getvalue()


def _empty(fig: Figure, text: str) -> bytes:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#555")
    return _svg(fig)


def reject_times(conn: sqlite3.Connection, batch_id: str) -> list[tuple[float, str]]:
    """(time the outcome was stored, reason) of every rejected unit of the batch."""
    reasons = {(d, b, u): (r or "unknown") for d, b, u, r in conn.execute(
        "SELECT device_id, boot_id, unit_seq, reason FROM unit WHERE batch_id=? AND outcome IN"
        " ('REJECTED_CONFIRMED', 'REJECTED_UNCONFIRMED', 'PURGED')", (batch_id,))}
    if not reasons:
        return []
    out = []
    for d, b, u, at in conn.execute(
            f"SELECT r.device_id, r.boot_id, e.unit_seq, {devevents.received_sql()} FROM device_event e JOIN device_boot_ref r"
            f" ON r.ref = e.boot_ref WHERE e.msg = {devevents.MSG['UNIT_OUTCOME']}"
            " AND (r.device_id, r.boot_id) IN (SELECT device_id, boot_id FROM unit WHERE batch_id=?)", (batch_id,)):
        r = reasons.get((d, b, u))
        if r is not None:
            out.append((devevents.seconds(at), r))
    return sorted(out)


def rejects(conn: sqlite3.Connection, batch_id: str) -> bytes:
    fig = Figure(figsize=(7.5, 3.2))
    rows = reject_times(conn, batch_id)
    if not rows:
        return _empty(fig, f"batch {batch_id}: no rejects")
    t0, t1 = rows[0][0], rows[-1][0]
    span = max(t1 - t0, 1.0)
    width = max(1.0, span / 30)  # about 30 bins, at least a second each
    bins: dict[str, Counter] = defaultdict(Counter)
    for at, reason in rows:
        bins[reason][int((at - t0) // width)] += 1
    n = int(span // width) + 1
    ax = fig.add_subplot()
    xs = [float(date2num(_dt.datetime.fromtimestamp(t0 + i * width, _dt.timezone.utc))) for i in range(n)]
    bottom = [0] * n
    for reason in sorted(bins):
        ys = [bins[reason].get(i, 0) for i in range(n)]
        ax.bar(xs, ys, width=width / 86400 * 0.9, bottom=bottom, label=reason, align="edge")
        bottom = [a + b for a, b in zip(bottom, ys)]
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))
    ax.set_ylabel(f"rejects per {width:.0f} s")
    ax.set_title(f"Rejects by reason, batch {batch_id} (UTC)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _svg(fig)


def grades(conn: sqlite3.Connection, batch_id: str) -> bytes:
    fig = Figure(figsize=(5, 3.2))
    counts = Counter(dict(conn.execute(  # counted by SQLite, not a row per unit into Python
        "SELECT grade, count(*) FROM unit_row WHERE batch_id=? AND grade IS NOT NULL GROUP BY grade", (batch_id,))))
    if not counts:
        return _empty(fig, f"batch {batch_id}: no graded reads")
    keys = [g for g in GRADES if g in counts] + sorted(k for k in counts if k not in GRADES)
    ax = fig.add_subplot()
    ax.bar(keys, [counts[k] for k in keys], color="#3b6ea5")
    ax.set_ylabel("reads")
    ax.set_title(f"Print grade distribution, batch {batch_id}")
    return _svg(fig)


def latency(samples: list[tuple[float, float, float, float]]) -> bytes:
    """samples: (wall time, p50 ms, p99 ms, budget ms) as the console polled the agent."""
    fig = Figure(figsize=(7.5, 3.2))
    if not samples:
        return _empty(fig, "no verdict latency yet: the console samples the running agent")
    xs = [float(date2num(_dt.datetime.fromtimestamp(s[0], _dt.timezone.utc))) for s in samples]
    ax = fig.add_subplot()
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))
    ax.plot(xs, [s[1] for s in samples], label="p50")
    ax.plot(xs, [s[2] for s in samples], label="p99")
    budget = samples[-1][3]
    if budget:
        ax.axhline(budget, color="#b00", linestyle="--", label=f"budget {budget:.1f} ms")
    top = max(s[2] for s in samples)
    if budget and top > 0 and budget / top > 20:  # both on one chart: a few ms against hundreds
        ax.set_yscale("log")
    ax.set_ylabel("verdict latency, ms")
    ax.set_title("Verdict latency vs the decision budget (UTC)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _svg(fig)


def gate_errors(conn: sqlite3.Connection, batch_id: str) -> list[int]:
    """The gate's position error (counts) of every unit of the batch the gate fired for."""
    error, outcome = (devevents.sql_field("UNIT_OUTCOME", f) for f in ("gate_error", "outcome"))
    return [int(e) for (e,) in conn.execute(
        f"SELECT {error} FROM device_event WHERE msg = {devevents.MSG['UNIT_OUTCOME']}"
        " AND boot_ref IN (SELECT r.ref FROM device_boot_ref r JOIN unit u ON u.device_id = r.device_id"
        " AND u.boot_id = r.boot_id WHERE u.batch_id = ?)"
        f" AND {outcome} <> {int(Outcome.PASSED)} AND {error} IS NOT NULL", (batch_id,))]


def gate(conn: sqlite3.Connection, batch_id: str, tolerance_counts: float | None) -> bytes:
    """Gate error of the rejects against the gate window (± [line] gate_window_mm, when the console
    was given the line file)."""
    fig = Figure(figsize=(5, 3.2))
    errors = gate_errors(conn, batch_id)
    if not errors:
        return _empty(fig, f"batch {batch_id}: the gate has not fired")
    ax = fig.add_subplot()
    lo, hi = min(errors), max(errors)
    if tolerance_counts:
        lo, hi = min(lo, -int(tolerance_counts)), max(hi, int(tolerance_counts))
    step = max(1, (hi - lo + 1) // 60)  # whole counts per bin, at most about 60 bins
    ax.hist(errors, bins=range(lo, hi + step + 1, step), color="#3b6ea5", align="left")
    if tolerance_counts:
        for x in (-tolerance_counts, tolerance_counts):
            ax.axvline(x, color="#b00", linestyle="--")
        ax.set_title(f"Gate error vs the window (±{tolerance_counts:g} counts), batch {batch_id}")
    else:
        ax.set_title(f"Gate error, batch {batch_id}")
    ax.set_xlabel("pack position minus gate position when the gate opened, counts")
    ax.set_ylabel("rejects")
    return _svg(fig)
