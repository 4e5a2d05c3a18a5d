"""Electronic signatures (Part 11 §11.50, §11.70, §11.200): the password again at signing (a wrong one
refused and audited, no signature), the record's content hash in the audit chain, so changing the
signed batch record — or the signature itself — makes `serialine audit verify` fail; a reopen voids
the signatures before it (the batch must be signed again)."""

import sqlite3

import pytest

from serialine.host import audit, db, lifecycle, release, signatures, users

from userskit import PASSWORDS, add_people, cli, closed_batch


@pytest.fixture
def signed(tmp_path):
    path = closed_batch(tmp_path / "l.db", market="US_DSCSA")
    conn = db.connect(path)
    add_people(conn, "ann", "bob")
    release.review(conn, "B1", "ann", PASSWORDS["ann"], reason="record checked")
    yield path, conn
    conn.close()


def verify(path):
    r = cli("audit", "verify", db_path=path)
    return r.returncode, (r.stdout + r.stderr).strip()


def behind_the_back(path, *sql):
    raw = sqlite3.connect(path)
    for s in sql:
        raw.execute(s)
    raw.commit()
    raw.close()


def test_signing_takes_the_password_again(signed):
    path, conn = signed
    with pytest.raises(users.AuthError, match="wrong password for bob"):
        release.release(conn, "B1", "bob", "not-bobs-password")
    assert [m for (m,) in conn.execute("SELECT meaning FROM signature")] == ["reviewed"]
    (last,) = conn.execute("SELECT action FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    assert last == "user.login_failed"
    with pytest.raises(signatures.SignatureError, match="meaning 'liked'"):
        signatures.sign(conn, "bob", PASSWORDS["bob"], "liked", "batch", "B1")
    with pytest.raises(ValueError, match="a reason is required"):
        signatures.sign(conn, "bob", PASSWORDS["bob"], "approved", "batch", "B1", reason="ok")


def test_a_changed_batch_record_after_signing_fails_audit_verify(signed):
    path, conn = signed
    assert verify(path)[0] == 0
    # rework rows are in the batch record but sealed by nothing else: only the signature sees this
    behind_the_back(path, "INSERT INTO rework (at, user, action, target, reason) SELECT '2026-12-01', 'mallory',"
                          " 'remove', serial, 'forged after review' FROM serial WHERE batch_id='B1'"
                          " AND state='commissioned' LIMIT 1")
    rc, text = verify(path)
    assert rc == 1 and text == "batch B1: its record changed after Ann Smith (ann) signed it 'reviewed' in record " + \
        str(signatures.of(conn, "batch", "B1")[0].audit_seq)
    with pytest.raises(release.ReleaseError, match="its record changed since ann reviewed it"):
        release.release(conn, "B1", "bob", PASSWORDS["bob"])


def test_a_changed_signature_fails_audit_verify(signed):
    path, conn = signed
    behind_the_back(path, "DROP TRIGGER signature_no_update", "UPDATE signature SET full_name='Bob Jones'")
    rc, text = verify(path)
    assert rc == 1 and text.startswith("signature 1: differs from its audit record")
    behind_the_back(path, "DROP TRIGGER signature_no_delete", "DELETE FROM signature")
    rc, text = verify(path)
    assert rc == 1 and text.endswith("(signature): its signature row is missing")


def test_a_reopen_voids_the_signatures_before_it(signed):
    path, conn = signed
    lifecycle.reopen(conn, "B1", "ann", "recount the cases")
    assert signatures.of(conn, "batch", "B1") == [] and len(signatures.of(conn, "batch", "B1", current=False)) == 1
    assert release.status(conn, "B1")["stage"] == "reopened: not closed"
    assert audit.verify(conn)[0]  # the record may change now: it is signed again after the next close


def test_a_role_raised_or_a_password_hash_swapped_behind_the_back_fails_audit_verify(signed):
    """Forging a signature by editing the file: give yourself QA, or put a hash you know the password of."""
    path, conn = signed
    add_people(conn, "olga")
    assert verify(path)[0] == 0
    behind_the_back(path, "UPDATE users SET role='qa' WHERE name='olga'")
    rc, text = verify(path)
    assert rc == 1 and text.startswith("user olga: role is 'qa', its audit trail says 'operator' (record ")
    behind_the_back(path, "UPDATE users SET role='operator' WHERE name='olga'")
    assert verify(path)[0] == 0
    known = users.hash_password("mallory-knows-1")
    behind_the_back(path, f"UPDATE users SET password='{known}' WHERE name='bob'")
    rc, text = verify(path)
    assert rc == 1 and text.startswith("user bob: the password hash is not the one its audit trail set")
    # the trail keeps only a digest of the salted hash, never the password or the hash itself
    (detail,) = conn.execute("SELECT detail FROM audit WHERE action='user.add' AND detail LIKE '%\"bob\"%'").fetchone()
    stored = conn.execute("SELECT password FROM users WHERE name='ann'").fetchone()[0]
    assert "scrypt$" not in detail and stored not in " ".join(r[0] for r in conn.execute("SELECT detail FROM audit"))
