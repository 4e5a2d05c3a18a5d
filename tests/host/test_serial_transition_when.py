"""serial_transition stops at its WHEN for a legal change out of the pool's states (a print, an
outcome); it refuses exactly what the rules refused when the WHEN held every rule: every pair of
states, with and without an import, a grant, a return upstream, a closing or unstarted batch."""

import sqlite3

from serialine.host import db, masterdata

from hostkit import GTIN

# the trigger as it was before the WHEN stopped early: every rule in the WHEN and in the body
_EVERY_RULE = ("CREATE TRIGGER serial_transition BEFORE UPDATE OF state ON serial WHEN "
               + " OR ".join(f"({c})" for c, _ in db._SERIAL_RULES) + " BEGIN "
               + " ".join(f"SELECT RAISE(ABORT, '{m}') WHERE {c};" for c, m in db._SERIAL_RULES) + " END")

# (name, what the serial is, the batch's state, the import the UPDATE also sets import_id to)
_CASES = [("plain", "plain", "running", None), ("published import", "published", "running", None),
          ("staging import", "staging", "running", None), ("published set", "plain", "running", "published"),
          ("staging set", "published", "running", "staging"),
          ("granted", "granted", "running", None), ("due upstream", "upstream", "running", None),
          ("batch closing", "plain", "closing", None), ("batch created", "plain", "created", None)]


def _ledger(path):
    """A serial for each case and each state it starts from (named case/state), all still available."""
    c = db.connect(str(path))
    masterdata.add_product(c, GTIN, "Aspirin 100 mg", "EU_FMD", 7)
    masterdata.create_batch(c, "B1", GTIN, "L1", "2030-01-31", 10, 2, 2)
    masterdata.start_batch(c, "B1")
    masterdata.create_batch(c, "B2", GTIN, "L2", "2030-01-31", 10, 2, 2)  # never started
    imports = {}
    for name in ("published", "staging"):
        (imports[name],) = c.execute("INSERT INTO serial_import (gtin, source, started_at, heartbeat)"
                                     " VALUES (?, 'f', 0, 0) RETURNING import_id", (GTIN,)).fetchone()
    for case, kind, _, _ in _CASES:
        for old in db.SERIAL_STATES:
            serial = f"{case}/{old}"
            c.execute("INSERT INTO serial (gtin, serial, source, import_id) VALUES (?, ?, 'f', ?)",
                      (GTIN, serial, imports.get(kind)))
            if kind == "granted":
                c.execute("INSERT INTO serial_grant (token, gtin, serial, user, at) VALUES ('t', ?, ?, 'ann', 0)",
                          (GTIN, serial))
            if kind == "upstream":
                c.execute("INSERT INTO serial_upstream_return (gtin, serial, source, batch_id, at)"
                          " VALUES (?, ?, 'up', 'B1', 0)", (GTIN, serial))
    c.execute("UPDATE serial_import SET state='published' WHERE import_id=?", (imports["published"],))
    return c, imports


def _outcomes(c, trigger: str, imports: dict) -> list[tuple]:
    """Each change of each case from each state: refused (its message) or the row it left."""
    out = []
    c.execute("BEGIN")
    c.execute("DROP TRIGGER serial_transition")  # each serial into its state by hand
    c.execute("UPDATE serial SET state = substr(serial, instr(serial, '/') + 1), batch_id = 'B1'"
              " WHERE serial LIKE '%/%' AND serial NOT LIKE '%/available'")
    c.execute(trigger)
    for case, _, batch_state, set_import in _CASES:
        c.execute("UPDATE batch SET state=? WHERE batch_id='B1'", (batch_state,))
        target = "B2" if batch_state == "created" else "B1"
        for old in db.SERIAL_STATES:
            serial = f"{case}/{old}"
            for new in db.SERIAL_STATES:
                c.execute("SAVEPOINT one")
                try:
                    c.execute("UPDATE serial SET state=?, batch_id=?" + (", import_id=?" if set_import else "")
                              + " WHERE serial=?", (new, target, *((imports[set_import],) if set_import else ()), serial))
                    got = c.execute("SELECT state, batch_id, import_id FROM serial WHERE serial=?", (serial,)).fetchone()
                except sqlite3.IntegrityError as exc:
                    got = str(exc)
                out.append((case, old, new, got))
                c.execute("ROLLBACK TO one")
                c.execute("RELEASE one")
    c.execute("ROLLBACK")
    return out


def test_the_early_when_refuses_exactly_what_every_rule_refused(tmp_path):
    c, imports = _ledger(tmp_path / "l.db")
    now = _outcomes(c, db.SERIAL_TRANSITION.replace(" IF NOT EXISTS", ""), imports)
    before = _outcomes(c, _EVERY_RULE, imports)
    assert now == before
    said = {got for *_, got in now if isinstance(got, str)}
    assert said == {m for _, m in db._SERIAL_RULES}  # every rule refused something here
    assert sum(not isinstance(got, str) for *_, got in now) >= 8 * 12  # and every legal change was taken
    c.close()


def test_a_print_and_an_outcome_stop_at_the_when(tmp_path):
    c, _ = _ledger(tmp_path / "l.db")
    # the WHEN alone, on the rows a unit's print and outcome make: false (the body never runs)
    when = db.SERIAL_TRANSITION.split("WHEN ", 1)[1].split("\n        BEGIN", 1)[0]
    for old, new in (("allocated", "printed"), ("printed", "commissioned"), ("printed", "rejected")):
        sql = when.replace("OLD.state", f"'{old}'").replace("NEW.state", f"'{new}'")
        sql = sql.replace("NEW.import_id", "NULL").replace("OLD.import_id", "NULL")
        assert c.execute(f"SELECT {sql}").fetchone() == (0,)
    c.close()
