"""`serialine ship` on a ledger with users (issue 14): `--user` is proved like every changing command,
and only a released batch ships; a ledger without users ships a closed batch as before."""

from serialine.host import db, release

from userskit import PASSWORDS, add_people, cli, closed_batch

PARTNER = "urn:epc:id:sgln:0614141.00001.0"


def pallet(conn) -> str:
    (sscc,) = conn.execute("SELECT sscc FROM container WHERE batch_id='B1' AND level='pallet'").fetchone()
    return sscc


def ship(path, sscc, who, password=None):
    return cli("ship", "--sscc", sscc, "--to", PARTNER, "--po", "PO-4711", "--desadv", "DA-0815", "--user", who,
               db_path=path, password=password if password is not None else PASSWORDS.get(who, ""))


def shipments(conn) -> int:
    return conn.execute("SELECT count(*) FROM shipment").fetchone()[0]


def test_only_a_released_batch_ships_and_the_shipper_proves_it(tmp_path):
    path = closed_batch(tmp_path / "l.db", market="US_DSCSA", tz="Europe/Berlin")
    conn = db.connect(path)
    add_people(conn, "ann", "bob", "olga", "eve")
    sscc = pallet(conn)
    r = ship(path, sscc, "eve", "not-her-password")
    assert r.returncode == 1 and r.stderr.startswith("error: wrong password for eve"), r.stderr
    r = ship(path, sscc, "olga")
    assert r.returncode == 1 and r.stderr == "error: olga (operator) may not do ship: it takes the role engineer\n"
    r = ship(path, sscc, "eve")
    assert r.returncode == 1 and r.stderr == (
        "error: batch B1 is not released (closed: awaiting review): QA releases it before it ships"
        " (serialine batch release B1)\n")
    cli("batch", "review", "B1", "--user", "ann", db_path=path, stdin=PASSWORDS["ann"] + "\n", check=True)
    r = ship(path, sscc, "eve")
    assert r.returncode == 1 and "is not released (reviewed: awaiting release)" in r.stderr
    assert shipments(conn) == 0
    cli("batch", "release", "B1", "--user", "bob", db_path=path, stdin=PASSWORDS["bob"] + "\n", check=True)
    assert release.status(conn, "B1")["stage"] == "released"
    r = ship(path, sscc, "eve")
    assert r.returncode == 0, r.stderr
    assert shipments(conn) == 1
    assert conn.execute("SELECT user FROM audit WHERE action='ship'").fetchall() == [("eve",)]
    assert cli("audit", "verify", db_path=path).returncode == 0


def test_without_users_a_closed_batch_ships_as_before(tmp_path):
    path = closed_batch(tmp_path / "l.db", market="US_DSCSA", tz="Europe/Berlin")
    conn = db.connect(path)
    r = ship(path, pallet(conn), "anyone")
    assert r.returncode == 0, r.stderr
    assert shipments(conn) == 1
