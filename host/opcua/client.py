"""OPEN-SCS client: fill a GTIN's pool from an upstream OPEN-SCS pool manager (the site, the L4's
gateway), all or nothing, idempotent with the same request token.

Pages: the request token T names the whole fill; page i is asked for with token "T#i", so a repeat
with the same T gets the same serials back from the upstream (it hands nothing out twice) and
finds them already imported here. A failure after some pages returns those pages upstream
(SNReturnUnallocated) and imports nothing."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from .openscs import Ret
from .server import NAMESPACE, OPENSCS_NS, POOL_MANAGER, sn_collection_class

CLIENT_URI = "urn:serialine:opcua:client"
PAGE = 1000
TIMEOUT_S = 30.0  # a request's answer; asyncua's liveness probe gets as long (see PoolClient.__aenter__)


class ClientError(ValueError):
    pass


async def ensure_client_certificate(pki: Path) -> tuple[Path, Path]:
    cert, key = pki / "client-cert.der", pki / "client-key.pem"
    if not (cert.exists() and key.exists()):
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID
        pki.mkdir(parents=True, exist_ok=True, mode=0o700)
        await setup_self_signed_certificate(key, cert, CLIENT_URI, "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH],
                                            {"countryName": "XX", "organizationName": "Serialine",
                                             "commonName": "serialine opcua client"})
        key.chmod(0o600)
    return cert, key


def credentials(spec: str | None) -> tuple[str, str]:
    """"env:NAME" (NAME holds "user:password") or "file:/path" (one line "user:password"); never
    on the command line itself."""
    if not spec:
        spec = "env:SERIALINE_OPCUA_USER"
    kind, _, where = spec.partition(":")
    if kind == "env":
        text = os.environ.get(where, "")
        if not text:
            raise ClientError(f"OPC UA credentials: environment variable {where} is not set (user:password)")
    elif kind == "file":
        try:
            text = Path(where).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClientError(f"OPC UA credentials: {where}: {exc.strerror}") from None
    else:
        raise ClientError(f"OPC UA credentials {spec!r}: env:NAME or file:/path")
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise ClientError("OPC UA credentials: expected user:password")
    return user, password


class PoolClient:
    """A session with an upstream pool manager (async context manager)."""

    def __init__(self, endpoint: str, user: str, password: str, pki: str | Path):
        url = urlparse(endpoint)
        if url.scheme != "opc.tcp" or not url.hostname or url.port is None:
            raise ClientError(f"endpoint {endpoint!r}: expected opc.tcp://HOST:PORT")
        self.endpoint, self.user, self.password, self.pki = endpoint, user, password, Path(pki)
        self.client: Client | None = None
        self.pm = None
        self.scs = 0

    async def __aenter__(self):
        cert, key = await ensure_client_certificate(self.pki)
        # asyncua probes ServerState every watchdog_intervall and waits at most that long (default 1 s),
        # then drops the session: a server is alive while it answers within the request timeout
        c = Client(self.endpoint, timeout=TIMEOUT_S, watchdog_intervall=TIMEOUT_S)
        c.application_uri = CLIENT_URI
        c.set_user(self.user)
        c.set_password(self.password)
        try:  # without a server certificate given, set_security asks the server for it
            await c.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key),
                                 mode=ua.MessageSecurityMode.SignAndEncrypt)
            await c.connect()
        except (OSError, asyncio.TimeoutError) as exc:
            raise ClientError(f"no OPC UA server answering at {self.endpoint}: {exc}") from None
        except ua.UaStatusCodeError as exc:
            raise ClientError(f"{self.endpoint} refused the session: {exc}") from None
        self.client = c
        try:
            await c.load_data_type_definitions()
            self.scs = await c.get_namespace_index(OPENSCS_NS)
            idx = await c.get_namespace_index(NAMESPACE)
            self.pm = await c.nodes.objects.get_child(f"{idx}:{POOL_MANAGER}")
        except BaseException:
            await c.disconnect()
            raise
        return self

    async def __aexit__(self, *exc):
        if self.client is not None:
            await self.client.disconnect()

    def _criteria(self, gtin: str, lot: str | None):
        kv = [ua.OPENSCSKeyValueDataType(Key="GTIN", Value=gtin)]
        if lot:
            kv.append(ua.OPENSCSKeyValueDataType(Key="LOT", Value=lot))
        return ua.Variant(kv, ua.VariantType.ExtensionObject)

    async def request(self, gtin: str, count: int, token: str, *, lot: str | None = None, fmt: str = "SERIALONLY"):
        """One SNRequestUnallocated (or, with a lot, SNRequestAllocated) → (Ret, serials, token)."""
        name = "SNRequestAllocated" if lot else "SNRequestUnallocated"
        status, coll, got = await self.pm.call_method(
            f"{self.scs}:{name}", ua.Variant("", ua.VariantType.String), ua.Variant(count, ua.VariantType.UInt32),
            ua.Variant(fmt, ua.VariantType.String), self._criteria(gtin, lot), ua.Variant(token, ua.VariantType.String))
        return Ret(status), list(coll.SerialNumbers or []), got, coll.Description

    async def settle(self, name: str, gtin: str, serial_numbers: list[str], *, lot: str | None = None,
                     fmt: str = "SERIALONLY") -> Ret:
        coll = sn_collection_class(self.scs)(ID="", Description="", State=0, AssociatedPoolID=gtin,
                                              SerialNumbers=list(serial_numbers))
        status = await self.pm.call_method(f"{self.scs}:{name}", ua.Variant(coll, ua.VariantType.ExtensionObject),
                                           self._criteria(gtin, lot), ua.Variant(fmt, ua.VariantType.String))
        return Ret(status)


@dataclass(frozen=True)
class Fill:
    token: str
    count: int
    already: bool  # the same token was imported here before: nothing new


def source_of(endpoint: str, token: str) -> str:
    return f"opcua {endpoint} token {token}"


async def _fetch(endpoint, creds, pki, gtin, count, token, page) -> list[str]:
    got: list[str] = []
    async with PoolClient(endpoint, *creds, pki) as pc:
        try:
            for i, start in enumerate(range(0, count, page)):
                n = min(page, count - start)
                status, serial_numbers, _, why = await pc.request(gtin, n, f"{token}#{i}")
                if status is not Ret.NoError:
                    raise ClientError(f"{endpoint}: SNRequestUnallocated page {i + 1}: {status.name}"
                                      + (f" ({why})" if why else ""))
                if len(serial_numbers) != n:
                    raise ClientError(f"{endpoint}: page {i + 1} gave {len(serial_numbers)} serials, {n} asked for")
                got += serial_numbers
        except BaseException as exc:
            if not await _give_back(pc, gtin, got, page) and isinstance(exc, ClientError):
                raise ClientError(f"{exc}; {len(got)} serial(s) stay handed out upstream: repeat with "
                                  f"--request-token {token}") from None
            raise
    return got


async def _give_back(pc: PoolClient, gtin: str, got: list[str], page: int) -> bool:
    """Return what a failed fill fetched; False if the upstream keeps some (the same token gets them again)."""
    for start in range(0, len(got), page):
        try:
            if await pc.settle("SNReturnUnallocated", gtin, got[start:start + page]) is not Ret.NoError:
                return False
        except Exception:
            return False
    return True


def fill(conn, gtin: str, count: int, endpoint: str, *, token: str | None = None, user: str,
         credentials_spec: str | None = None, pki: str | Path, page: int = PAGE, progress=None) -> Fill:
    """Fill GTIN's pool with `count` serials from the upstream pool manager: all imported (one
    import, host/serials.py) or none (what was fetched is returned upstream)."""
    from .. import serials
    if count <= 0:
        raise ClientError("count must be positive")
    token = token or uuid.uuid4().hex
    source = source_of(endpoint, token)
    (done,) = conn.execute("SELECT count(*) FROM serial_import WHERE gtin=? AND source=? AND state='published'",
                           (gtin, source)).fetchone()
    if done:
        return Fill(token, 0, True)
    creds = credentials(credentials_spec)
    try:
        got = asyncio.run(_fetch(endpoint, creds, pki, gtin, count, token, page))
    except ua.UaError as exc:  # e.g. BadUserAccessDenied: the user's role may not request
        raise ClientError(f"{endpoint}: {type(exc).__name__}: {exc}; nothing imported") from None
    try:
        serials.import_serials(conn, gtin, got, source, user=user, progress=progress)
    except BaseException:
        async def back():
            async with PoolClient(endpoint, *creds, pki) as pc:
                await _give_back(pc, gtin, got, page)
        try:
            asyncio.run(back())
        except Exception:
            pass
        raise
    return Fill(token, len(got), False)


@dataclass(frozen=True)
class Returned:
    returned: int  # taken back upstream now
    due: int  # still marked to return (the upstream refused or did not answer)
    line: str  # one line for the operator ("" when the batch had none from upstream)


def _mark_due(conn, batch_id: str, user: str) -> None:
    """Serials the batch close gave back to this pool that came from an upstream pool manager:
    marked due upstream (out of this pool from now on), in one transaction with its audit record."""
    from .. import audit
    from ..db import STATE_CODE, transaction
    with transaction(conn):
        rows = conn.execute(
            # a change to 'available' is always a return (allocated -> available, db.TRANSITIONS)
            "SELECT s.gtin, s.serial, s.source FROM serial s WHERE s.serial_id IN (SELECT h.serial_id FROM serial_history h"
            " JOIN batch_ref r ON r.ref = h.batch_ref WHERE r.batch_id=? AND h.state=?)"
            " AND s.state='available' AND s.source LIKE 'opcua %' AND NOT EXISTS (SELECT 1 FROM serial_upstream_return r"
            " WHERE r.gtin=s.gtin AND r.serial=s.serial)", (batch_id, STATE_CODE["available"])).fetchall()
        if not rows:
            return
        now = time.time()
        conn.executemany("INSERT INTO serial_upstream_return (gtin, serial, source, batch_id, at) VALUES (?,?,?,?,?)",
                         [(g, s, src, batch_id, now) for g, s, src in rows])
        audit.append(conn, user, "serials.upstream_due", {"batch_id": batch_id, "count": len(rows),
                                                          "sources": sorted({src for *_, src in rows})})


def return_unused(conn, batch_id: str, *, user: str, credentials_spec: str | None, pki: str | Path,
                  page: int = PAGE) -> Returned:
    """At batch close (and again with `serialine batch return-serials B`): the batch's unused serials
    that came from upstream go back with SNReturnUnallocated to the pool manager they came from, a
    page at a time, each page recorded (audit `opcua.returned_upstream`) when the upstream took it.
    What fails stays marked due (out of this pool) and is said in one line."""
    from .. import audit
    from ..db import transaction
    _mark_due(conn, batch_id, user)
    due = conn.execute("SELECT gtin, serial, source FROM serial_upstream_return WHERE batch_id=? AND state='due'"
                       " ORDER BY source, gtin, serial", (batch_id,)).fetchall()
    if not due:
        return Returned(0, 0, "")
    groups: dict[tuple[str, str], list[str]] = {}
    for gtin, serial, source in due:
        groups.setdefault((source.split(" ")[1], gtin), []).append(serial)
    done, failed = 0, []

    async def give(endpoint, gtin, serial_numbers, creds):
        nonlocal done
        async with PoolClient(endpoint, *creds, pki) as pc:
            for start in range(0, len(serial_numbers), page):
                part = serial_numbers[start:start + page]
                status = await pc.settle("SNReturnUnallocated", gtin, part)
                if status is not Ret.NoError:
                    raise ClientError(f"SNReturnUnallocated: {status.name}")
                with transaction(conn):
                    conn.executemany("UPDATE serial_upstream_return SET state='returned' WHERE gtin=? AND serial=?",
                                     [(gtin, s) for s in part])
                    audit.append(conn, user, "opcua.returned_upstream", {"batch_id": batch_id, "endpoint": endpoint,
                                                                       "gtin": gtin, "count": len(part)})
                done += len(part)

    for (endpoint, gtin), serial_numbers in groups.items():
        try:
            asyncio.run(give(endpoint, gtin, serial_numbers, credentials(credentials_spec)))
        except (ClientError, ua.UaError, OSError, asyncio.TimeoutError) as exc:
            failed.append(f"{endpoint}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    left = len(due) - done
    if not left:
        return Returned(done, 0, f"{done} unused serial(s) of batch {batch_id} returned to "
                                 f"{', '.join(sorted({e for e, _ in groups}))}")
    return Returned(done, left, f"{left} unused serial(s) of batch {batch_id} stay marked to return upstream "
                                f"({'; '.join(failed)}); retry: serialine batch return-serials {batch_id}")
