"""An OPC UA login (scrypt, the ledger's lockout and its audit commit) runs off the server's event
loop: while one session's login waits for the ledger, another session's reads are served."""

from __future__ import annotations

import asyncio
import sqlite3

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from opcuakit import run, session
from serialine.host.opcua.client import CLIENT_URI, TIMEOUT_S, ensure_client_certificate
from test_opcua_ledger_users import PW, audit_rows, ledger_site  # noqa: F401  (the fixture)

READS = 10  # few: the waiting login gives up after the ledger's busy timeout (30 s)


async def _activation_sent(bg, user: str):
    """A client with its session created and its ActivateSession on the wire (not yet answered)."""
    cert, key = await ensure_client_certificate(bg.pki)
    c = Client(bg.endpoint, timeout=TIMEOUT_S, watchdog_intervall=TIMEOUT_S)
    c.application_uri = CLIENT_URI
    await c.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key), mode=ua.MessageSecurityMode.SignAndEncrypt)
    await c.connect_socket()
    await c.send_hello()
    await c.open_secure_channel()
    await c.create_session()
    login = asyncio.ensure_future(c.activate_session(username=user, password=PW[user]))
    for _ in range(3):  # the task runs up to its wait for the answer: the request is written
        await asyncio.sleep(0)
    return c, login


def test_a_login_waiting_for_the_ledger_does_not_hold_up_other_sessions(ledger_site):
    writer = sqlite3.connect(str(ledger_site.conn.execute("PRAGMA database_list").fetchone()[2]),
                             isolation_level=None, timeout=30)

    async def go():
        async with session(ledger_site, "erin", PW["erin"]) as a:
            writer.execute("BEGIN IMMEDIATE")  # the login's audit commit waits for this writer
            try:
                b, login = await _activation_sent(ledger_site, "otto")
                served = 0
                for _ in range(READS):
                    await asyncio.wait_for(a.pm.read_browse_name(), 20)
                    served += 1
                waiting = not login.done()
            finally:
                writer.execute("ROLLBACK")
            await login  # the ledger is free: the login completes, audited
            await b.disconnect()
            return served, waiting

    served, waiting = run(go())
    assert served == READS and waiting
    assert ("otto", "opcua") in [(u, d["for"]) for u, d in audit_rows(ledger_site.conn, "user.login")]
