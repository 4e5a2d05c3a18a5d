"""How the console is served: HTTPS with a certificate (the cookie then Secure), refusals in one
line, and the session's idle timeout (the operator screen's polling does not keep it alive)."""

from __future__ import annotations

import datetime as dt
import subprocess
import time

from consolekit import SERIALINE, ConsoleProc, add_users, agent_line, login
from test_service import make_batch

from serialine.host.console.sessions import Sessions


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_https_with_a_certificate_marks_the_session_cookie_secure(tmp_path, browser):
    db = tmp_path / "serialine.db"
    make_batch(db)
    add_users(db)
    cert, key = _self_signed(tmp_path)
    c = ConsoleProc(db, extra=["--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        assert c.url.startswith("https://127.0.0.1:")
        ctx = browser.new_context(ignore_https_errors=True)  # self-signed: the test's own
        page = ctx.new_page()
        login(page, c.url, "quinn")
        page.wait_for_selector("#me")
        cookie = next(x for x in ctx.cookies() if x["name"] == "serialine_console")
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        ctx.close()
    finally:
        c.close()


def test_refusals_are_one_line(tmp_path):
    def run(*args):
        return subprocess.run([SERIALINE, "console", *args], capture_output=True, text=True, timeout=60)
    p = run("--db", str(tmp_path / "none.db"), "--port", "0")
    assert p.returncode == 1 and p.stderr.strip().count("\n") == 0 and "no ledger at" in p.stderr, p.stderr
    db = tmp_path / "serialine.db"
    make_batch(db)
    p = run("--db", str(db), "--bind", "example.org")
    assert p.returncode == 2 and "want an IP address" in p.stderr and "Traceback" not in p.stderr
    p = run("--db", str(db), "--port", "0", "--tls-cert", str(tmp_path / "missing.pem"))
    assert p.returncode == 1 and "needs both a certificate and its key" in p.stderr
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    p = run("--db", str(db), "--port", "0", "--tls-cert", str(tmp_path / "bad.pem"), "--tls-key", str(tmp_path / "bad.pem"))
    assert p.returncode == 1 and "console TLS certificate" in p.stderr and "Traceback" not in p.stderr


def test_a_session_ends_after_its_idle_time_and_polling_does_not_keep_it():
    s = Sessions(timeout_s=0.3)
    a = s.new("olga")
    ended = []
    for _ in range(6):  # the operator screen polls without touching it
        time.sleep(0.1)
        got, who = s.get(a.token, touch=False)
        ended += [who] if who else []
    assert ended == ["olga"]  # said once, for the audit record
    assert s.get(a.token) == (None, None)
    b = s.new("quinn")
    for _ in range(5):  # a person's requests do
        time.sleep(0.1)
        assert s.get(b.token)[0] is b
    anon = s.new()  # the login form's session never times out into an audit record
    time.sleep(0.35)
    assert s.sweep() == ["quinn"] and s.get(anon.token)[0] is anon


def test_a_flood_of_login_pages_evicts_no_logged_in_session():
    from serialine.host.console import sessions
    s = Sessions(timeout_s=60)
    olga = s.new("olga")
    for _ in range(sessions.MAX_SESSIONS + 50):
        s.new()
    assert s.get(olga.token)[0] is olga


def test_the_agent_serves_the_console_from_its_line_file(tmp_path, page):
    with agent_line(tmp_path, lambda text: text + '\n[console]\naddress = "127.0.0.1:0"\n') as (_, _, _, batch, agent):
        url = agent.wait_log(r"console on (http://\S+?)/?$")[1]
        login(page, url, "olga")
        page.wait_for_selector("#line-state")
        assert page.inner_text("#batch") == batch
        assert "agent-error" not in page.content()  # it reaches its own control interface
        assert agent.stop() == 0, agent.log
