"""Users in the ledger (21 CFR Part 11 §11.300): added by an admin, passwords only as scrypt hashes,
wrong passwords refused and locked out after the site's limit, disabled users refused, every login
and failure audited; a ledger with users makes every changing command prove its --user; a ledger
without keeps the free-text --user; a reason shorter than 4 characters is refused, nothing changed."""

import json
import sqlite3

import pytest

from serialine.host import audit, db, users
from serialine.host.db import snapshot

from hostkit import GTIN
from userskit import PASSWORDS, add_people, cli, closed_batch


def actions(conn, since=0):
    return [(u, a, json.loads(d)) for u, a, d in conn.execute(
        "SELECT user, action, detail FROM audit WHERE seq > ? ORDER BY seq", (since,))]


def head_seq(conn):
    return int(audit.head(conn).split(":")[0])


def test_users_added_by_cli_first_an_admin_then_only_by_a_proved_admin(tmp_path):
    path = closed_batch(tmp_path / "l.db")
    r = cli("users", "add", "olga", "--role", "operator", "--full-name", "Olga Ops", "--password-stdin",
            "--reason", "first user", db_path=path, stdin="floor-secret-1\n")
    assert r.returncode == 1 and r.stderr == "error: the first user of a ledger must be an admin (--role admin): someone must manage users\n"
    r = cli("users", "add", "root", "--role", "admin", "--full-name", "Rita  Root", "--password-stdin", "--user", "it",
            "--reason", "first admin", db_path=path, stdin="admin-secret-1\n", check=True)
    assert "the ledger's first admin" in r.stdout
    # the next one: the acting admin's password first (stdin line 1), then the new user's
    r = cli("users", "add", "ann", "--role", "qa", "--full-name", "Ann Smith", "--password-stdin", "--user", "root",
            "--reason", "new QA", db_path=path, stdin="admin-secret-1\nsmith-secret-1\n", check=True)
    r = cli("users", "add", "bob", "--role", "qa", "--full-name", "Bob Jones", "--password-stdin", "--user", "ann",
            "--reason", "a QA adds a QA", db_path=path, stdin="smith-secret-1\njones-secret-1\n")
    assert r.returncode == 1 and "ann (qa) may not do users.admin: it takes the role admin" in r.stderr
    r = cli("users", "add", "bob", "--role", "qa", "--full-name", "Bob Jones", "--user", "root", "--reason", "new QA",
            db_path=path, password="admin-secret-1")
    assert r.returncode == 1 and "--password-stdin" in r.stderr  # no terminal, no new password: refused
    lines = cli("users", "list", db_path=path, check=True).stdout.splitlines()
    assert lines == ["ann\tqa\tAnn Smith\tenabled", "root\tadmin\tRita Root\tenabled"]
    conn = db.connect(path)
    got = [(u, a, {k: v for k, v in d.items() if k != "credential_sha256"}) for u, a, d in actions(conn)]
    assert ("it", "user.add", {"name": "root", "full_name": "Rita Root", "role": "admin", "first": True,
                               "reason": "first admin"}) in got
    assert ("ann", "user.refused", {"name": "ann", "role": "qa", "action": "users.admin"}) in got
    # one salt per user: the same password hashes differently, parameters stored with it
    h1, h2 = users.hash_password("same-password-x"), users.hash_password("same-password-x")
    assert h1 != h2 and h1.startswith(f"scrypt${users.SCRYPT_N}${users.SCRYPT_R}${users.SCRYPT_P}$")
    assert users.check_password("same-password-x", h1) and not users.check_password("same-password-y", h1)


def test_wrong_password_refused_and_every_attempt_audited(tmp_path):
    conn = db.connect(closed_batch(tmp_path / "l.db"))
    add_people(conn, "ann")
    mark = head_seq(conn)
    with pytest.raises(users.AuthError, match=r"^wrong password for ann \(1 of 5 before a lockout\)$"):
        users.authenticate(conn, "ann", "not-her-password")
    with pytest.raises(users.AuthError, match=r"^unknown user 'nobody'$"):
        users.authenticate(conn, "nobody", "whatever-it-is")
    assert users.authenticate(conn, "ann", PASSWORDS["ann"]).full_name == "Ann Smith"
    assert users.get(conn, "ann").failures == 0  # a good login starts the count again
    assert [(u, a, d.get("why")) for u, a, d in actions(conn, mark)] == [
        ("ann", "user.login_failed", "wrong password"), ("(unknown)", "user.login_failed", "unknown user"),
        ("ann", "user.login", None)]
    with db.transaction(conn), pytest.raises(RuntimeError, match="outside a transaction"):
        users.authenticate(conn, "ann", PASSWORDS["ann"])


def test_locked_out_after_the_site_limit_audited_and_lifted_by_an_admin(tmp_path):
    path = closed_batch(tmp_path / "l.db")
    conn = db.connect(path)
    add_people(conn, "ann")
    r = cli("users", "setting", "login.max_failures", "3", "--user", "root", "--reason", "site SOP 12",
            db_path=path, password=PASSWORDS["root"], check=True)
    assert "login.max_failures = 3" in r.stdout
    for n in (1, 2):
        r = cli("batch", "review", "B1", "--user", "ann", db_path=path, stdin="guess\n")
        assert r.returncode == 1 and r.stderr == f"error: wrong password for ann ({n} of 3 before a lockout)\n"
    r = cli("batch", "review", "B1", "--user", "ann", db_path=path, stdin="guess\n")
    assert r.returncode == 1 and "wrong password for ann: locked out until" in r.stderr and "after 3 failures" in r.stderr
    r = cli("batch", "review", "B1", "--user", "ann", db_path=path, stdin=PASSWORDS["ann"] + "\n")
    assert r.returncode == 1 and "ann is locked out until" in r.stderr  # the right password does not help now
    assert conn.execute("SELECT count(*) FROM signature").fetchone() == (0,)
    got = [(a, d.get("why")) for u, a, d in actions(conn) if u == "ann"]
    assert got[-5:] == [("user.login_failed", "wrong password")] * 3 + [("user.locked", None),
                                                                        ("user.login_failed", "locked out")]
    cli("users", "reset-password", "ann", "--password-stdin", "--user", "root", "--reason", "locked out, ID checked",
        db_path=path, stdin=PASSWORDS["root"] + "\nsmith-secret-2\n", check=True)
    assert users.authenticate(conn, "ann", "smith-secret-2").name == "ann"
    assert audit.verify(conn)[0]


def test_a_disabled_user_is_refused_and_never_deleted(tmp_path):
    path = closed_batch(tmp_path / "l.db")
    conn = db.connect(path)
    add_people(conn, "ann", "bob")
    for reason in ([], ["--reason", "gone"[:3]]):  # no reason, or too short: refused before any password
        r = cli("users", "disable", "ann", "--user", "root", *reason, db_path=path, stdin="")
        assert r.returncode == 1 and r.stderr.startswith("error: a reason is required: 4 to 500")
    assert users.get(conn, "ann").enabled
    cli("users", "disable", "ann", "--user", "root", "--reason", "left the company", db_path=path,
        password=PASSWORDS["root"], check=True)
    with pytest.raises(users.AuthError, match="^ann is disabled$"):
        users.authenticate(conn, "ann", PASSWORDS["ann"])
    r = cli("batch", "review", "B1", "--user", "ann", db_path=path, password=PASSWORDS["ann"])
    assert r.returncode == 1 and r.stderr == "error: ann is disabled\n"
    with pytest.raises(users.UserError, match="last enabled admin"):
        users.disable(conn, "root", by="bob", reason="bob tries")  # bob is no admin, and root is the last one
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        conn.execute("DELETE FROM users WHERE name='ann'")
    assert "ann\tqa\tAnn Smith\tdisabled" in cli("users", "list", db_path=path).stdout


def test_the_one_permission_table(tmp_path):
    conn = db.connect(closed_batch(tmp_path / "l.db"))
    add_people(conn, "olga", "ann", "eve")
    olga, ann, eve, root = (users.get(conn, n) for n in ("olga", "ann", "eve", "root"))
    assert users.may(olga, "line.start") and users.may(olga, "line.stop") and not users.may(olga, "batch.release")
    assert users.may(ann, "batch.review") and users.may(ann, "batch.release") and not users.may(ann, "line.start")
    assert users.may(eve, "batch.create") and not users.may(eve, "batch.release")
    assert users.may(root, "users.admin") and not users.may(root, "batch.start")  # an admin manages people, not batches
    assert all(users.may(u, "line.stop") for u in (olga, ann, eve, root))  # stopping a line: anyone
    with pytest.raises(KeyError):
        users.may(olga, "line.launch")


def test_a_ledger_with_users_makes_changing_commands_prove_the_user(tmp_path):
    path = closed_batch(tmp_path / "l.db")
    conn = db.connect(path)
    add_people(conn, "eve", "olga")
    before = snapshot(conn)
    r = cli("batch", "serials", GTIN, "--generate", "5", "--user", "eve", db_path=path)  # no password on stdin
    assert r.returncode == 1 and "no password on stdin" in r.stderr and "Traceback" not in r.stderr
    r = cli("batch", "serials", GTIN, "--generate", "5", "--user", "mallory", db_path=path, password="x")
    assert r.returncode == 1 and r.stderr == "error: unknown user 'mallory'\n"
    r = cli("batch", "serials", GTIN, "--generate", "5", "--user", "olga", db_path=path, password=PASSWORDS["olga"])
    assert r.returncode == 1 and "olga (operator) may not do masterdata.change" in r.stderr
    r = cli("rework", "disaggregate", "095060000000000015", "--reason", "case damaged", "--user", "olga",
            db_path=path, password=PASSWORDS["olga"])
    assert r.returncode == 1 and "olga (operator) may not do rework" in r.stderr
    after = snapshot(conn)
    assert {k: v for k, v in after.items() if k not in ("audit", "users")} == \
           {k: v for k, v in before.items() if k not in ("audit", "users")}  # only login records were added
    r = cli("batch", "serials", GTIN, "--generate", "5", "--user", "eve", db_path=path, password=PASSWORDS["eve"])
    assert r.returncode == 0, r.stderr
    assert actions(conn)[-1][:2] == ("eve", "serials.add")


def test_a_ledger_without_users_keeps_the_free_text_user(tmp_path):
    path = closed_batch(tmp_path / "l.db")
    r = cli("batch", "serials", GTIN, "--generate", "5", "--user", "anyone", db_path=path)
    assert r.returncode == 0 and "users" not in r.stderr  # said only on a terminal
    conn = db.connect(path)
    assert actions(conn)[-1][:2] == ("anyone", "serials.add")
    r = cli("batch", "review", "B1", "--user", "anyone", db_path=path, stdin="x\n")
    assert r.returncode == 1 and "signatures need users in the ledger" in r.stderr


def test_a_reason_shorter_than_4_characters_is_refused_and_nothing_changes(tmp_path):
    path = closed_batch(tmp_path / "l.db")
    conn = db.connect(path)
    before = snapshot(conn)
    for reason in ("x", "  ab ", "abc"):
        r = cli("batch", "reopen", "B1", "--reason", reason, "--user", "qa", db_path=path)
        assert r.returncode == 1 and r.stderr.startswith("error: a reason is required: 4 to 500 printable characters")
        with pytest.raises(ValueError, match="a reason is required"):
            with db.transaction(conn):
                audit.append(conn, "qa", "rework.remove", {"target": "X", "reason": reason})
    assert snapshot(conn) == before
    r = cli("batch", "reopen", "B1", "--reason", "recount", "--user", "qa", db_path=path, check=True)


def test_passwords_never_reach_the_ledger_its_trail_or_the_output(tmp_path):
    path = closed_batch(tmp_path / "l.db")
    outputs = []
    outputs.append(cli("users", "add", "root", "--role", "admin", "--full-name", "Rita Root", "--password-stdin",
                       "--reason", "first admin", db_path=path, stdin=PASSWORDS["root"] + "\n", check=True))
    outputs.append(cli("users", "add", "ann", "--role", "qa", "--full-name", "Ann Smith", "--password-stdin", "--user",
                       "root", "--reason", "new QA", db_path=path, stdin=f"{PASSWORDS['root']}\n{PASSWORDS['ann']}\n",
                       check=True))
    outputs.append(cli("batch", "review", "B1", "--user", "ann", db_path=path, stdin="wrong-guess-123\n"))
    outputs.append(cli("batch", "review", "B1", "--user", "ann", "--reason", "record checked", db_path=path,
                       stdin=PASSWORDS["ann"] + "\n", check=True))
    outputs.append(cli("audit", "list", db_path=path, check=True))
    secrets = [PASSWORDS["root"], PASSWORDS["ann"], "wrong-guess-123"]
    conn = db.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert any(p.name == "l.db.anchors" for p in files)
    for p in files:  # the ledger, its WAL, its anchors trail
        data = p.read_bytes()
        for s in secrets:
            assert s.encode() not in data, (p, s)
    for r in outputs:
        for s in secrets:
            assert s not in r.stdout and s not in r.stderr


def test_on_a_terminal_passwords_are_prompted_the_new_one_twice(tmp_path):
    from userskit import on_tty
    path = closed_batch(tmp_path / "l.db")
    rc, shown = on_tty("batch", "serials", GTIN, "--generate", "5", "--user", "anyone", db_path=path)
    assert rc == 0 and shown.count("note: this ledger has no users yet") == 1
    rc, shown = on_tty("users", "add", "root", "--role", "admin", "--full-name", "Rita Root", "--reason", "first admin",
                       db_path=path, answers=[PASSWORDS["root"], "something-else-1"])
    assert rc == 1 and "the two passwords differ; nothing changed" in shown
    rc, shown = on_tty("users", "add", "root", "--role", "admin", "--full-name", "Rita Root", "--reason", "first admin",
                       db_path=path, answers=[PASSWORDS["root"], PASSWORDS["root"]])
    assert rc == 0 and "new password for root:" in shown and "again:" in shown, shown
    assert PASSWORDS["root"] not in shown  # not echoed
    rc, shown = on_tty("users", "add", "ann", "--role", "qa", "--full-name", "Ann Smith", "--user", "root",
                       "--reason", "new QA", db_path=path, answers=[PASSWORDS["root"], PASSWORDS["ann"], PASSWORDS["ann"]])
    assert rc == 0 and "password for root:" in shown and "added user ann (Ann Smith, qa)" in shown, shown
    rc, shown = on_tty("batch", "review", "B1", "--user", "ann", db_path=path, answers=[PASSWORDS["ann"]])
    assert rc == 0 and "password for ann (signs batch B1 'reviewed'):" in shown and "Reviewed by Ann Smith" in shown


from hypothesis import given, settings, strategies as st  # noqa: E402


@given(st.text(max_size=600))
@settings(max_examples=300, deadline=None)
def test_the_reason_rule_for_any_text(text):
    words = " ".join(text.split())
    ok = 4 <= len(words) <= 500 and words.isprintable()
    try:
        assert audit.check_reason(text) == words and ok
    except ValueError as exc:
        assert not ok and str(exc).startswith("a reason is required") and "\n" not in str(exc)


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_a_malformed_stored_hash_is_a_refusal_never_a_crash(stored):
    assert users.check_password("any-password-1", stored) is False
    for forged in ("scrypt$3$8$1$AAAA$AAAA", "scrypt$1099511627776$8$1$AAAA$AAAA", "scrypt$16384$8$1$AAAA$",
                   "scrypt$0$0$0$$", "argon2$16384$8$1$AAAA$AAAA"):
        assert users.check_password("any-password-1", forged) is False
