"""packed_row: a pack's case by its serial_id (host/db.py). Its rules hold for a direct write; the
view packed takes reads and writes in the old columns (gtin, serial, container_id); a ledger made
with the old packed table is migrated, its seals still verify, rework on its closed batch is audited."""

import json
import sqlite3

import pytest

from serialine.host import audit, cli_batch, db, ledgerfile, reporting, rework
from serialine.host.aggregation import Aggregator
from serialine.host.db import transaction
from serialine.host.epcis import outbox
from serialine.host.ledger import Ledger

import oldledger
from hostkit import GTIN, Line

# what a seal of packed named before packed_row
OLD_COLS = ["gtin", "serial", "container_id"]
OF_BATCH = "container_id IN (SELECT container_id FROM container WHERE batch_id = ?)"


def _commissioned(conn, n=1):
    ids = [i for (i,) in conn.execute("SELECT serial_id FROM serial WHERE state='available' LIMIT ?", (n,))]
    for state in ("allocated", "printed", "commissioned"):
        conn.executemany("UPDATE serial SET state=?, batch_id='B1' WHERE serial_id=?", [(state, i) for i in ids])
    return ids


def _case(conn, state="open", sscc=None):
    return conn.execute("INSERT INTO container (batch_id, level, state, sscc) VALUES ('B1', 'case', ?, ?)",
                        (state, sscc)).lastrowid


def test_a_direct_write_to_packed_row_obeys_every_rule_of_packed(conn):
    (a,) = _commissioned(conn)
    (b,) = conn.execute("SELECT serial_id FROM serial WHERE state='available' LIMIT 1").fetchone()
    case = _case(conn)
    with pytest.raises(sqlite3.IntegrityError, match="only a commissioned pack can be packed"):
        conn.execute("INSERT INTO packed_row VALUES (?, ?)", (b, case))
    with pytest.raises(sqlite3.IntegrityError, match="packs go only into an open case"):
        conn.execute("INSERT INTO packed_row VALUES (?, ?)", (a, _case(conn, "closed", "095060000000000015")))
    conn.execute("INSERT INTO packed_row VALUES (?, ?)", (a, case))
    with pytest.raises(sqlite3.IntegrityError) as exc:  # in one case at most
        conn.execute("INSERT INTO packed_row VALUES (?, ?)", (a, _case(conn)))
    assert ledgerfile.sentence(exc.value).startswith("this pack is already in a case")
    with pytest.raises(sqlite3.IntegrityError, match="a pack changes case only by leaving one and going into another"):
        conn.execute("UPDATE packed_row SET container_id = ? WHERE serial_id = ?", (_case(conn), a))
    conn.execute("UPDATE container SET state='closed', sscc='095060000000000022' WHERE container_id=?", (case,))
    shipment = conn.execute("INSERT INTO shipment (at, user, destination, po, desadv) VALUES ('t', 'qa', 'd', 'p', 'x')"
                            ).lastrowid
    conn.execute("INSERT INTO shipped VALUES ('095060000000000022', ?)", (shipment,))
    with pytest.raises(sqlite3.IntegrityError, match="this pack has been shipped: it left the site"):
        conn.execute("DELETE FROM packed_row WHERE serial_id = ?", (a,))
    assert conn.execute("SELECT serial_id, container_id FROM packed_row").fetchall() == [(a, case)]


def test_the_view_packed_reads_and_writes_the_old_columns(conn):
    a, b = _commissioned(conn, 2)
    (sa,), (sb,) = (conn.execute("SELECT serial FROM serial WHERE serial_id=?", (i,)).fetchone() for i in (a, b))
    case = _case(conn)
    conn.execute("INSERT INTO packed (gtin, serial, container_id) VALUES (?, ?, ?)", (GTIN, sa, case))
    conn.execute("INSERT INTO packed VALUES (?, ?, ?)", (GTIN, sb, case))
    assert conn.execute("SELECT serial_id, container_id FROM packed_row ORDER BY serial_id").fetchall() == [(a, case), (b, case)]
    assert conn.execute("SELECT * FROM packed ORDER BY serial").fetchall() == sorted([(GTIN, sa, case), (GTIN, sb, case)])
    with pytest.raises(sqlite3.IntegrityError, match="only a commissioned pack can be packed"):  # no such serial
        conn.execute("INSERT INTO packed VALUES (?, 'NOSUCHSERIAL', ?)", (GTIN, case))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO packed VALUES (?, ?, ?)", (GTIN, sa, _case(conn)))
    conn.execute("DELETE FROM packed WHERE serial = ?", (sa,))
    assert conn.execute("SELECT serial_id FROM packed_row").fetchall() == [(b,)]
    conn.execute("DELETE FROM packed WHERE container_id = ?", (case,))
    assert conn.execute("SELECT count(*) FROM packed_row").fetchone() == (0,)
    assert [r[1:3] for r in conn.execute("PRAGMA table_info(packed)")] == [
        ("gtin", "TEXT"), ("serial", "TEXT"), ("container_id", "INTEGER")]  # the old columns, as the seals read them


def test_packs_by_serial_id_fill_cases_as_packs_by_serial_do(ledger):
    conn, b = ledger.conn, ledger.batch  # cases of 3, pallets of 2
    with transaction(conn):
        ids = _commissioned(conn, 4)
        serial_of = dict(conn.execute(f"SELECT serial_id, serial FROM serial WHERE serial_id IN ({','.join('?' * 4)})", ids))
        agg = Aggregator(conn, b, reporting.context_for(b))
        agg.add_packs_by_id(ids[:2])
        agg.add_packs([serial_of[ids[2]]])  # the same case, by its serial: it fills it
        agg.add_packs_by_id(ids[3:])
        reporting.commissioned(conn, agg.ctx, b, [serial_of[i] for i in ids])  # releases the full case's packing
    cases = conn.execute("SELECT container_id, state, sscc FROM container WHERE level = 'case' ORDER BY 1").fetchall()
    assert [st for _, st, _ in cases] == ["closed", "open"]
    assert conn.execute("SELECT serial_id, container_id FROM packed_row ORDER BY serial_id").fetchall() == [
        (i, cases[0][0] if i in ids[:3] else cases[1][0]) for i in sorted(ids)]
    assert agg.children(cases[0][0]) == [reporting.sgtin(b, serial_of[i]) for i in sorted(ids[:3])]
    (children,) = [e["childEPCs"] for e in outbox.batch_events(conn, "B1") if e.get("bizStep") == "packing"]
    assert children == agg.children(cases[0][0])  # the case's packing event names its packs




def _to_old_form(conn):
    """The ledger as the release before serial_id stored it (oldledger: serial, packed); → packed's rows."""
    oldledger.before_serial_id(conn)
    return conn.execute("SELECT * FROM packed ORDER BY gtin, serial").fetchall()


def _old_close(conn, batch):
    """batch.close as the old release sealed packed: the batch's rows in (gtin, serial) order."""
    oldledger.close_states(conn, batch)
    rows = conn.execute(f"SELECT * FROM packed WHERE {OF_BATCH} ORDER BY gtin, serial", (batch,)).fetchall()
    oldledger.seal(conn, "batch.close", {"batch_id": batch, "seal": {"packed": oldledger.part(OLD_COLS, rows)}})
    return rows


def test_a_ledger_of_the_old_form_is_migrated_and_its_seals_still_verify(tmp_path, capsys):
    path = tmp_path / "old.db"
    conn = oldledger.ledger(path, ("B1", "B2", "B3"))
    oldledger.run(conn, "B1", 6, close_cases=True)  # 2 cases of 3, a pallet of 2
    oldledger.run(conn, "B2", 4, close_cases=True)  # a full case, a partial one
    oldledger.run(conn, "B3", 2)  # (its boot's events before B1's new close: see owners14.md, H3 -> H5)
    old_rows = _to_old_form(conn)
    assert len(old_rows) == 12
    assert len(_old_close(conn, "B1")) == 6 and len(_old_close(conn, "B2")) == 4
    conn.close()

    conn = db.connect(str(path))  # migrates
    assert conn.execute("SELECT * FROM packed ORDER BY gtin, serial").fetchall() == old_rows
    assert conn.execute("SELECT count(*) FROM packed_row").fetchone() == (12,)
    kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name LIKE 'packed%'"))
    assert kinds == {"packed_row": "table", "packed_by_container": "index", "packed": "view", "packed_insert": "trigger",
                     "packed_delete": "trigger", "packed_only_commissioned": "trigger", "packed_into_open_case": "trigger",
                     "packed_row_fixed": "trigger"}
    assert {t for (t,) in conn.execute("SELECT tbl_name FROM sqlite_master WHERE type='trigger' AND name IN"
                                       " ('packed_only_commissioned', 'packed_into_open_case', 'shipped_packs_fixed')")} == {"packed_row"}
    ok, _, message = audit.verify(conn)
    assert ok, message

    # rework on the old closed batch: reopened, a pack out and back in, closed again (a new seal), all audited
    case, pack = conn.execute("SELECT c.sscc, p.serial FROM packed p JOIN container c USING (container_id)"
                              " WHERE c.batch_id = 'B1' ORDER BY p.serial LIMIT 1").fetchone()
    assert cli_batch.main(["reopen", "B1", "--reason", "carton damaged", "--db", str(path), "--user", "qa"]) == 0
    assert rework.remove_pack(conn, GTIN, pack, "qa", "carton damaged") == case
    assert conn.execute("SELECT count(*) FROM packed WHERE serial = ?", (pack,)).fetchone() == (0,)
    rework.add_pack(conn, case, GTIN, pack, "qa", "inspected, fine")
    assert [(a, json.loads(d)["target"]) for _, _, _, a, d in audit.records(conn, action="rework.")] == [
        ("rework.remove", pack), ("rework.add", pack)]
    assert cli_batch.main(["close", "B1", "--db", str(path), "--user", "qa"]) == 0
    sealed = json.loads(audit.records(conn, batch="B1", action="batch.close")[-1][4])["seal"]
    assert "packed_row" in sealed and "packed" not in sealed and sealed["packed_row"]["rows"] == 6

    line = Line(Ledger(conn, "B3"), boot_id=3)  # the next batch packs into packed_row
    line.event_seq = 12
    for u in range(2, 4):
        line.unit(u)
    assert conn.execute("SELECT count(*) FROM packed_row p JOIN serial s USING (serial_id) WHERE s.batch_id = 'B3'"
                        ).fetchone() == (4,)
    oldledger.close_and_verify(conn, path, capsys, batch="B3")

    err = oldledger.verify_after_edit(path, capsys,  # an old batch's row edited: its old seal says so
                                      "DROP TRIGGER packed_row_fixed",
                                      "UPDATE packed_row SET container_id = (SELECT max(container_id) FROM container"
                                      " WHERE batch_id = 'B2' AND level = 'case') WHERE serial_id = (SELECT min(serial_id)"
                                      f" FROM packed_row WHERE {OF_BATCH.replace('?', chr(39) + 'B2' + chr(39))})")
    assert "batch B2: table packed differs from its seal" in err


def test_an_edit_of_packed_row_after_a_close_fails_verify(tmp_path, capsys):
    path = tmp_path / "new.db"
    conn = oldledger.ledger(path, ("B1", "B2"))
    oldledger.run(conn, "B1", 2, close_cases=True)
    conn.close()
    assert cli_batch.main(["close", "B1", "--db", str(path), "--user", "qa"]) == 0
    capsys.readouterr()
    assert cli_batch.audit_main(["verify", "--db", str(path)]) == 0
    err = oldledger.verify_after_edit(path, capsys, "DELETE FROM packed_row WHERE serial_id = (SELECT min(serial_id) FROM packed_row)")
    assert "batch B1: table packed_row differs from its seal" in err


def test_a_ledger_whose_rows_would_not_read_back_is_left_as_it_was(tmp_path):
    path = tmp_path / "old.db"
    conn = oldledger.ledger(path, ("B1", "B2"))
    oldledger.run(conn, "B1", 3, close_cases=True)
    old_rows = _to_old_form(conn)
    conn.execute("PRAGMA foreign_keys=OFF")  # a row behind the project's back: its serial is not in the ledger
    conn.execute("DROP TRIGGER packed_only_commissioned")
    conn.execute("DROP TRIGGER packed_into_open_case")
    conn.execute("INSERT INTO packed SELECT ?, 'NOSUCHSERIAL', container_id FROM container LIMIT 1", (GTIN,))
    rows = conn.execute("SELECT * FROM packed ORDER BY gtin, serial").fetchall()
    assert len(rows) == len(old_rows) + 1
    conn.close()
    with pytest.raises(sqlite3.IntegrityError, match="packed: 1 row.*would not read back as stored; this ledger is left as it was"):
        db.connect(str(path))
    c = sqlite3.connect(path)
    assert c.execute("SELECT * FROM packed ORDER BY gtin, serial").fetchall() == rows
    assert c.execute("SELECT type FROM sqlite_master WHERE name IN ('packed', 'packed_row', 'packed_v0')").fetchall() == [("table",)]
    c.close()
