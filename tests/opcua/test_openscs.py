"""OPEN-SCS pool manager over OPC UA on loopback: browse by standard browse names, request and
return serials (the ledger's pool follows), request tokens, return codes, roles, security."""

from __future__ import annotations

import json

import pytest
from asyncua import Client, ua

from serialine.host import serials
from serialine.host.opcua.openscs import Ret
from serialine.host.opcua.server import NAMESPACE, OPENSCS_NS, POOL_MANAGER

from opcuakit import GTIN, run, session

METHODS = ("SNRequestAllocated", "SNRequestUnallocated", "SNRequestUnassigned", "SNReturnAllocated",
           "SNReturnUnallocated", "SNtoAllocated", "SNtoEncoded", "SNtoUnallocated")


def states(conn, serial_numbers):
    return {s: st for s, st in conn.execute(
        "SELECT serial, state FROM serial WHERE gtin=? AND serial IN (SELECT value FROM json_each(?))",
        (GTIN, json.dumps(serial_numbers)))}


def audits(conn, action):
    return [(u, json.loads(d)) for u, d in conn.execute("SELECT user, detail FROM audit WHERE action=? ORDER BY seq",
                                                        (action,))]


def test_browse_pool_manager_by_standard_names(site):
    async def go():
        async with session(site, "vera") as pc:
            c = pc.client
            scs = await c.get_namespace_index(OPENSCS_NS)
            pm = await c.nodes.objects.get_child(f"{await c.get_namespace_index(NAMESPACE)}:{POOL_MANAGER}")
            typ = await pm.read_type_definition()
            assert (await c.get_node(typ).read_browse_name()).Name == "OPENSCSPoolManagerObjectType"
            names = {((b := await n.read_browse_name()).NamespaceIndex, b.Name) for n in await pm.get_children()}
            for m in METHODS + ("MaxSNRequestable", "SNFormat"):
                assert (scs, m) in names, m
            assert await (await pm.get_child(f"{scs}:MaxSNRequestable")).read_value() == 1000
            assert set(await (await pm.get_child(f"{scs}:SNFormat")).read_value()) == {"SERIALONLY", "LITERAL", "EPCURI"}
    run(go())


def test_request_unallocated_leaves_the_pool_and_repeat_is_idempotent(site):
    before = serials.available(site.conn, GTIN)

    async def go():
        async with session(site) as pc:
            first = await pc.request(GTIN, 1000, "tok-1")
            again = await pc.request(GTIN, 1000, "tok-1")
            other = await pc.request(GTIN, 5, "tok-2")
            return first, again, other
    (s1, sn1, t1, _), (s2, sn2, _, _), (s3, sn3, _, _) = run(go())
    assert s1 is Ret.NoError and len(sn1) == 1000 and t1 == "tok-1"
    assert s2 is Ret.NoError and sorted(sn2) == sorted(sn1)  # the same page again
    assert s3 is Ret.NoError and not set(sn3) & set(sn1)
    assert serials.available(site.conn, GTIN) == before - 1005  # out of this pool
    assert set(states(site.conn, sn1).values()) == {"available"}  # the ledger's state: not allocated here
    # the ledger's own allocation never picks a handed-out serial
    picked = serials.allocate(site.conn, "B1", GTIN, before - 1005)
    assert not set(picked) & (set(sn1) | set(sn3))
    user, detail = audits(site.conn, "opcua.SNRequestUnallocated")[0]
    assert user == "opcua:emil" and detail["handed_out"] == 1000 and detail["return"] == "NoError"
    assert audits(site.conn, "opcua.SNRequestUnallocated")[1][1]["repeat"] is True


def test_return_unallocated_puts_serials_back_all_or_nothing(site):
    before = serials.available(site.conn, GTIN)

    async def go():
        async with session(site) as pc:
            _, sn, _, _ = await pc.request(GTIN, 10, "t")
            bad = await pc.settle("SNReturnUnallocated", GTIN, sn[:5] + ["NOTOURS123"])
            mid = serials.available(site.conn, GTIN)
            ok = await pc.settle("SNReturnUnallocated", GTIN, sn[:5])
            twice = await pc.settle("SNReturnUnallocated", GTIN, sn[:5])
            repeat = await pc.request(GTIN, 10, "t")  # partly returned: the token is spent
            return bad, mid, ok, twice, repeat
    bad, mid, ok, twice, repeat = run(go())
    assert repeat[0] is Ret.InvalidRequestToken
    assert bad is Ret.InvalidSerialNumberCollection and mid == before - 10  # nothing returned
    assert ok is Ret.NoError and twice is Ret.InvalidSerialNumberCollection
    assert serials.available(site.conn, GTIN) == before - 5


def test_request_allocated_to_the_lot_and_formats(site):
    async def go():
        async with session(site) as pc:
            alloc = await pc.request(GTIN, 3, "a1", lot="L1", fmt="EPCURI")
            nolot = await pc.request(GTIN, 3, "a2", lot="NOPE")
            literal = await pc.request(GTIN, 2, "u1", fmt="LITERAL")
            badfmt = await pc.request(GTIN, 2, "u2", fmt="BARCODE")
            toomany = await pc.request(GTIN, 1001, "u3")
            uris = alloc[1]
            wrong = await pc.settle("SNReturnUnallocated", GTIN, uris[1:], fmt="EPCURI")
            assert wrong is Ret.InvalidSelectionCriteria
            enc = await pc.settle("SNtoEncoded", GTIN, uris[:1], lot="L1", fmt="EPCURI")
            ret = await pc.settle("SNReturnAllocated", GTIN, uris[1:], lot="L1", fmt="EPCURI")
            return alloc, nolot, literal, badfmt, toomany, enc, ret
    alloc, nolot, literal, badfmt, toomany, enc, ret = run(go())
    assert alloc[0] is Ret.NoError and all(u.startswith("urn:epc:id:sgtin:9506000.013435.") for u in alloc[1])
    assert nolot[0] is Ret.InvalidSelectionCriteria and "no batch" in nolot[3]
    assert literal[0] is Ret.NoError and all(s.startswith(f"(01){GTIN}(21)") for s in literal[1])
    assert badfmt[0] is Ret.InvalidSerialNumbersFormat and toomany[0] is Ret.InsufficientSerialNumbers
    assert enc is Ret.NoError and ret is Ret.NoError
    got = states(site.conn, [u.rsplit(".", 1)[1] for u in alloc[1]])
    assert sorted(got.values()) == ["allocated", "allocated", "printed"]  # the lot's batch B1 holds them


def test_viewer_cannot_call_and_is_audited(site):
    before = serials.available(site.conn, GTIN)

    async def go():
        async with session(site, "vera") as pc:
            with pytest.raises(ua.UaStatusCodeError) as exc:
                await pc.request(GTIN, 5, "v1")
            return exc.value
    err = run(go())
    assert isinstance(err, ua.uaerrors.BadUserAccessDenied)
    assert serials.available(site.conn, GTIN) == before
    user, detail = audits(site.conn, "opcua.SNRequestUnallocated")[-1]
    assert user == "opcua:vera" and detail["return"] == "InsufficientPrivilegeToExecute"


def test_nothing_is_writable_and_the_collection_is_the_standard_type(site):
    async def go():
        async with session(site, "emil") as pc:  # even an engineer: changes are method calls
            prop = await pc.pm.get_child(f"{pc.scs}:MaxSNRequestable")
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await prop.write_value(ua.Variant(5, ua.VariantType.UInt32))
            assert await prop.read_value() == 1000
            _, coll, _ = await pc.pm.call_method(
                f"{pc.scs}:SNRequestUnallocated", "", ua.Variant(1, ua.VariantType.UInt32), "SERIALONLY",
                pc._criteria(GTIN, None), "w1")
            return type(coll).data_type.Identifier
    assert run(go()) == 15008  # OPENSCSSNCollectionDataType, not its abstract supertype


def test_wrong_password_and_anonymous_refused(site):
    async def wrong():
        async with session(site, "olga", "not-the-password"):
            pass
    with pytest.raises(Exception, match="refused|Bad"):
        run(wrong())

    async def anonymous():
        c = Client(site.endpoint, timeout=10)
        from serialine.host.opcua.client import ensure_client_certificate, CLIENT_URI
        from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
        cert, key = await ensure_client_certificate(site.pki)
        c.application_uri = CLIENT_URI
        await c.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key), mode=ua.MessageSecurityMode.SignAndEncrypt)
        await c.connect()
        await c.disconnect()
    with pytest.raises(Exception):
        run(anonymous())

    async def plain():  # no security: no such endpoint
        c = Client(site.endpoint, timeout=10)
        c.set_user("olga")
        c.set_password("op-secret-1")
        await c.connect()
        await c.disconnect()
    with pytest.raises(Exception):
        run(plain())


def test_a_batch_holding_serials_handed_out_cannot_end_until_they_come_back(site):
    from serialine.host import db, lifecycle

    async def go(step):
        async with session(site) as pc:
            if step == "take":
                return await pc.request(GTIN, 4, "held", lot="L1")
            return await pc.settle("SNReturnAllocated", GTIN, step, lot="L1")
    status, taken, _, _ = run(go("take"))
    assert status is Ret.NoError
    before = db.snapshot(site.conn)
    with pytest.raises(Exception, match="handed out over OPEN-SCS"):
        lifecycle.abort(site.conn, "B1", "qa-anna", "line dismantled")
    assert db.snapshot(site.conn) == before  # nothing half-done
    assert run(go(taken)) is Ret.NoError
    counts = lifecycle.abort(site.conn, "B1", "qa-anna", "line dismantled")
    assert counts["serials_returned"] == 4 and set(states(site.conn, taken).values()) == {"available"}


def test_a_trusted_folder_admits_only_its_client_certificates(tmp_path, users_file):
    import shutil
    from opcuakit import free_port, make_ledger
    from serialine.host.opcua.client import ClientError, ensure_client_certificate
    from serialine.host.opcua.server import Background
    known, stranger = tmp_path / "known", tmp_path / "stranger"
    cert, _ = run(ensure_client_certificate(known))
    run(ensure_client_certificate(stranger))
    (tmp_path / "pki" / "trusted").mkdir(parents=True)
    shutil.copy(cert, tmp_path / "pki" / "trusted" / "line-3.der")
    conn = make_ledger(tmp_path / "site.db", 10, batch=False)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"

    class At:
        def __init__(self, pki):
            self.endpoint, self.pki = endpoint, pki

    async def request(pki):
        async with session(At(pki)) as pc:
            return (await pc.request(GTIN, 1, f"t-{pki.name}"))[0]
    with Background(conn, endpoint, str(users_file), tmp_path / "pki"):
        assert run(request(known)) is Ret.NoError
        with pytest.raises(ClientError, match="BadCertificateUntrusted"):
            run(request(stranger))
    conn.close()


def test_to_allocated_moves_handed_out_serials_to_the_lots_batch(site):
    async def go():
        async with session(site) as pc:
            _, sn, _, _ = await pc.request(GTIN, 10, "t-alloc")
            no_lot = await pc.settle("SNtoAllocated", GTIN, sn[:5])
            foreign = await pc.settle("SNtoAllocated", GTIN, sn[:4] + ["NOTOURS123"], lot="L1")
            mid = dict(states(site.conn, sn))
            ok = await pc.settle("SNtoAllocated", GTIN, sn[:5], lot="L1")
            twice = await pc.settle("SNtoAllocated", GTIN, sn[:5], lot="L1")
            back = await pc.settle("SNReturnAllocated", GTIN, sn[:2], lot="L1")
            encoded = await pc.settle("SNtoEncoded", GTIN, sn[2:5], lot="L1")
            return sn, no_lot, foreign, mid, ok, twice, back, encoded
    sn, no_lot, foreign, mid, ok, twice, back, encoded = run(go())
    assert no_lot is Ret.InvalidSelectionCriteria and foreign is Ret.InvalidSerialNumberCollection
    assert set(mid.values()) == {"available"}  # refused calls changed nothing
    assert ok is Ret.NoError and twice is Ret.InvalidSerialNumberCollection
    assert back is Ret.NoError and encoded is Ret.NoError
    got = states(site.conn, sn)
    assert [got[s] for s in sn[2:5]] == ["printed"] * 3 and {got[s] for s in sn[5:]} == {"available"}
    assert {b for (b,) in site.conn.execute(
        "SELECT batch_id FROM serial WHERE gtin=? AND serial IN (SELECT value FROM json_each(?))",
        (GTIN, json.dumps(sn[:5])))} == {"B1"}
    (user, detail), = [a for a in audits(site.conn, "opcua.SNtoAllocated") if a[1]["return"] == "NoError"]
    assert user == "opcua:emil" and detail["batch_id"] == "B1" and detail["lot"] == "L1"


def test_methods_without_the_ledgers_state_are_answered_with_a_code_and_audited(site):
    async def go():
        async with session(site) as pc:
            status, coll, _ = await pc.pm.call_method(
                f"{pc.scs}:SNRequestUnassigned", ua.Variant("", ua.VariantType.String), ua.Variant(5, ua.VariantType.UInt32),
                ua.Variant("SERIALONLY", ua.VariantType.String), pc._criteria(GTIN, None), ua.Variant("", ua.VariantType.String))
            _, sn, _, _ = await pc.request(GTIN, 3, "t-un", lot="L1")
            to_un = await pc.settle("SNtoUnallocated", GTIN, sn, lot="L1")
            return status, coll, sn, to_un
    status, coll, sn, to_un = run(go())
    assert Ret(status) is Ret.InsufficientSerialNumbers and not coll.SerialNumbers and "unassigned" in coll.Description
    assert to_un is Ret.InvalidSerialNumberCollection
    assert set(states(site.conn, sn).values()) == {"allocated"}
    assert audits(site.conn, "opcua.SNRequestUnassigned")[0][1]["return"] == "InsufficientSerialNumbers"
    assert "batch close" in audits(site.conn, "opcua.SNtoUnallocated")[0][1]["why"]
