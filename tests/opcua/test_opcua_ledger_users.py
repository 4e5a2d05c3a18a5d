"""OPC UA sessions of the ledger's users (host/users.py): an independent asyncua client logs in with a
ledger user's name and password; users.PERMISSIONS decides what it may call (PackML: the control
command's action; OPEN-SCS: masterdata.change, like `batch serials`); a wrong password counts toward
the ledger's lockout and is audited; a disabled user is refused."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from asyncua import ua

from opcuakit import GTIN, free_port, make_ledger, run, session
from serialine.host import db as hdb, users
from serialine.host.opcua.openscs import Ret
from serialine.host.opcua.server import Background

PW = {"ada": "admin-secret-1", "otto": "operator-pw-1", "erin": "engineer-pw-1", "dora": "disabled-pw-1",
      "quinn": "quality-pw-1"}


def add_users(conn):
    users.add(conn, "ada", "admin", PW["ada"], by="ada", reason="first admin", full_name="Ada Admin")
    for name, role in (("otto", "operator"), ("erin", "engineer"), ("dora", "operator"), ("quinn", "qa")):
        users.add(conn, name, role, PW[name], by="ada", reason="new staff", full_name=name.title())
    users.disable(conn, "dora", by="ada", reason="left the site")
    users.set_setting(conn, "login.max_failures", 2, by="ada", reason="tests: lock out fast")


@pytest.fixture
def ledger_site(tmp_path):
    """A site ledger with users and serials, served without a users file."""
    conn = make_ledger(tmp_path / "site.db", 3000)
    add_users(conn)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    bg = Background(conn, endpoint, None, tmp_path / "site.db.opcua-pki", max_requestable=1000).start()
    bg.conn, bg.endpoint, bg.pki = conn, endpoint, tmp_path / "client-pki"
    yield bg
    bg.stop()
    conn.close()


def audit_rows(conn, action):
    return [(u, json.loads(d)) for u, d in conn.execute(
        "SELECT user, detail FROM audit WHERE action=? ORDER BY seq", (action,))]


def test_ledger_users_log_in_and_the_permission_table_decides(ledger_site):
    async def go():
        async with session(ledger_site, "erin", PW["erin"]) as pc:  # engineer: masterdata.change
            got = await pc.request(GTIN, 10, "tok-e")
        async with session(ledger_site, "otto", PW["otto"]) as pc:  # operator: may not
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await pc.request(GTIN, 10, "tok-o")
        return got
    status, sns, _, _ = run(go())
    assert status is Ret.NoError and len(sns) == 10
    rows = audit_rows(ledger_site.conn, "opcua.SNRequestUnallocated")
    assert [(u, d["return"]) for u, d in rows] == [("erin", "NoError"), ("otto", "InsufficientPrivilegeToExecute")]
    assert "masterdata.change" in rows[1][1]["why"]
    logins = [(u, d["for"]) for u, d in audit_rows(ledger_site.conn, "user.login")]
    assert ("erin", "opcua") in logins and ("otto", "opcua") in logins


def test_wrong_password_counts_toward_the_lockout_and_is_audited(ledger_site):
    async def login(name, password):
        async with session(ledger_site, name, password):
            pass
    with pytest.raises(Exception, match="refused|Bad"):
        run(login("otto", "not-the-password"))
    assert users.get(ledger_site.conn, "otto").failures == 1
    with pytest.raises(Exception, match="refused|Bad"):
        run(login("otto", "still-not-it"))
    assert users.get(ledger_site.conn, "otto").locked_until is not None  # 2 of 2: locked out
    with pytest.raises(Exception, match="refused|Bad"):
        run(login("otto", PW["otto"]))  # the right password, but locked out
    why = [d["why"] for u, d in audit_rows(ledger_site.conn, "user.login_failed") if u == "otto"]
    assert why == ["wrong password", "wrong password", "locked out"]
    assert [d["name"] for _, d in audit_rows(ledger_site.conn, "user.locked")] == ["otto"]


def test_a_disabled_user_is_refused(ledger_site):
    async def login():
        async with session(ledger_site, "dora", PW["dora"]):
            pass
    with pytest.raises(Exception, match="refused|Bad"):
        run(login())
    assert [d["why"] for u, d in audit_rows(ledger_site.conn, "user.login_failed") if u == "dora"] == ["disabled"]


def test_no_users_file_and_a_ledger_without_users_is_refused_in_one_line(tmp_path):
    conn = make_ledger(tmp_path / "l.db")
    with pytest.raises(ValueError, match="no OPC UA users: the ledger has none"):
        Background(conn, f"opc.tcp://127.0.0.1:{free_port()}", None, tmp_path / "pki").start()
    conn.close()


def test_a_ledger_operator_may_start_the_line_through_packml(tmp_path):
    """The agent's control interface proves the OPC UA user again per command (its password)."""
    import test_packml as pm  # noqa: PLC0415  (its rig: real firmware, TCP coder and camera)
    svc = pm.svc
    db = tmp_path / "serialine.db"
    batch = svc.make_batch(db)
    conn = hdb.connect(str(db))
    add_users(conn)
    conn.close()
    rig = svc.Rig(tmp_path, {})
    cfg = svc.line_file(tmp_path / "line.toml", rig, db)
    rig.f = svc.fields_of(cfg)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    cfg.write_text(cfg.read_text() + f'\n[opcua]\nendpoint = "{endpoint}"\n')
    agent, ep = svc.Agent(cfg, batch), pm.Endpoint(endpoint, tmp_path / "client-pki")
    try:
        agent.wait_status(lambda s: s["ready"], timeout=60)
        agent.wait_log(r"opcua: serving .*the ledger's users", timeout=30)

        async def go():
            async with session(ep, "quinn", PW["quinn"]) as qa:  # qa: line.stop yes, line.start no
                nodes = await pm.line_nodes(qa)
                pk, execute = nodes[0], nodes[4]
                await pm.until(nodes, ("Cleared", "Running", "Execute"))
                await execute.call_method(f"{pk}:Hold")
                assert await pm.until(nodes, ("Cleared", "Running", "Held")) == ("Cleared", "Running", "Held")
                with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                    await execute.call_method(f"{pk}:Unhold")
            async with session(ep, "otto", PW["otto"]) as op:
                nodes = await pm.line_nodes(op)
                pk, execute = nodes[0], nodes[4]
                await execute.call_method(f"{pk}:Unhold")
                if await pm.until(nodes, ("Cleared", "Running", "Execute"), 5) != ("Cleared", "Running", "Execute"):
                    await execute.call_method(f"{pk}:Start")
                assert await pm.until(nodes, ("Cleared", "Running", "Execute")) == ("Cleared", "Running", "Execute")
        asyncio.run(go())
        assert agent.control.status()["device"]["state"] == "RUNNING"
        assert agent.stop() == 0, agent.log
        rows = sqlite3.connect(db).execute("SELECT user, action FROM audit").fetchall()
        assert ("quinn", "line.stop") in rows and ("otto", "line.clear") in rows
        assert ("quinn", "opcua.Unhold") in rows  # the refusal, audited
        assert "Traceback" not in agent.log
    finally:
        agent.kill()
        rig.close()
