"""The OPC UA server: the official NodeSets (host/opcua/nodesets/, loaded with asyncua's XML import),
an OPEN-SCS pool manager on the ledger, the base server profile's security (Basic256Sha256
SignAndEncrypt only, an application certificate made on first start, user name/password users
with roles, anonymous off unless asked for)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from asyncua import Server, ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server import binary_server_asyncio
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import struct_from_binary

from .. import resources
from .. import users as ledger_users
from ..users import Role
from . import openscs, users
from .openscs import POOL_ACTION, Ret

log = logging.getLogger("serialine.opcua")

NAMESPACE = "urn:serialine:opcua"  # our instances; the types keep their companion namespaces
OPENSCS_NS = "http://opcfoundation.org/UA/OPENSCS-SER/"
PACKML_NS = "http://opcfoundation.org/UA/PackML/"
APP_URI = "urn:serialine:opcua:server"
NODESETS = ("Opc.Ua.OPENSCS.NodeSet2.xml", "Opc.Ua.PackML.NodeSet2.xml")
POOL_MANAGER = "PoolManager"  # browse name of the instance under Objects (our namespace)
POOL_MANAGER_TYPE = 15032  # OPENSCSPoolManagerObjectType (i= in the OPEN-SCS namespace)
SN_COLLECTION = 15008  # OPENSCSSNCollectionDataType
# THE permission table is users.PERMISSIONS: each method that changes anything names its action there
# (PackML: the control command's; OPEN-SCS: openscs.POOL_ACTION).
FILE_ROLES = {"viewer": None, "operator": Role.OPERATOR, "engineer": Role.ENGINEER}  # users-file role → ledger role

_caller: contextvars.ContextVar[User | None] = contextvars.ContextVar("opcua_caller", default=None)
# (user name, password, Session | None) of the ActivateSession being served: logged in off the loop
_login: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("opcua_login", default=None)
_ACTIVATE = ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)


class OpcuaError(ValueError):
    pass


def nodeset(name: str) -> Path:
    return resources.opcua_nodesets_dir() / name


class _Roles(SimpleRoleRuleset):
    """asyncua's ruleset, and the caller of each request kept for the method callbacks (they run in
    the same task as this check, so a context variable carries it)."""

    _WRITE = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)

    def check_validity(self, user, action_type_id, body):
        _caller.set(user)
        if action_type_id == self._WRITE:  # nothing here is written by clients: changes are method calls (audited)
            return False
        return super().check_validity(user, action_type_id, body)


@dataclass
class Session(User):
    """asyncua's User and who it is: `account` the ledger user (or the users file's, as a ledger role;
    None = a viewer), `ledger` whether the ledger's users table proved it (then each call re-reads it),
    `secret` its password, for the control interface, which proves the user again per command."""
    who: str = ""
    role_name: str = "viewer"
    account: ledger_users.User | None = None
    ledger: bool = False
    secret: str | None = field(default=None, repr=False)


def _ledger_has_users(conn) -> bool:
    try:
        return ledger_users.present(conn)
    except sqlite3.OperationalError:  # a ledger from before users
        return False


class _Users:
    """asyncua user manager: the ledger's users when it has any (users.authenticate: lockout and audit
    come with it), else the users file (standalone `serialine opcua serve`, docs/opcua.md)."""

    def __init__(self, db_path: str | None, accounts: dict[str, users.Account], anonymous: bool):
        self.db_path, self.accounts, self.anonymous = db_path, accounts, anonymous

    def _ledger_login(self, username: str, password: str) -> Session | None:
        from ..ledgerfile import open_ledger
        conn = open_ledger(self.db_path, schema=False)  # its own connection: the server's is used in threads
        try:
            if not _ledger_has_users(conn):
                return None
            try:
                acc = ledger_users.authenticate(conn, username, password, purpose="opcua")
            except ledger_users.AuthError as exc:
                log.warning("opcua: login refused: %s", exc)
                return Session(role=UserRole.Anonymous)  # refused (not None: the file is not asked then)
            return Session(role=UserRole.User, name=acc.name, who=acc.name, role_name=acc.role.value,
                           account=acc, ledger=True, secret=password)
        finally:
            conn.close()

    def get_user(self, iserver, username=None, password=None, certificate=None):
        """asyncua's call, synchronous on its event loop: the login done in a thread just before
        (_Processor) for this very request, else done here."""
        ready = _login.get()
        if ready is not None and username is not None and ready[:2] == (username, password):
            return ready[2]
        return self.login(username, password)

    def login(self, username=None, password=None) -> Session | None:
        """A session's user, or None (refused): scrypt, the ledger's lockout and its audit; blocking."""
        if username is None:
            if self.anonymous:
                return Session(role=UserRole.User, name="anonymous", who="opcua:anonymous")
            log.warning("opcua: anonymous session refused")
            return None
        if self.db_path:
            try:
                got = self._ledger_login(username, password or "")
            except (sqlite3.Error, ValueError) as exc:
                log.warning("opcua: login of %r refused: the ledger cannot be read (%s)", username, exc)
                return None
            if got is not None:
                return got if got.ledger else None
        acc = self.accounts.get(username)
        if acc is None or not users.check_password(password or "", acc.hashed):
            log.warning("opcua: login refused for user %r", username)
            return None
        role = FILE_ROLES[acc.role]
        account = ledger_users.User(acc.name, acc.name, role, True) if role is not None else None
        return Session(role=UserRole.User, name=acc.name, who=f"opcua:{acc.name}", role_name=acc.role, account=account)


class _Processor(UaProcessor):
    """asyncua's request processor, but an ActivateSession's user name login (scrypt, ~50 ms of CPU,
    the ledger's lockout and audit commit) runs in a worker thread, so other sessions are served
    meanwhile; asyncua's own activation then takes its result (_Users.get_user). The client's
    signature is proved first, as asyncua does, so a forged activation counts no failed login."""

    async def _process_message(self, typeid, requesthdr, seqhdr, body):
        manager = self.iserver.user_manager
        if typeid != _ACTIVATE or not isinstance(manager, _Users) or self.session is None:
            return await super()._process_message(typeid, requesthdr, seqhdr, body)
        params = struct_from_binary(ua.ActivateSessionParameters, body.copy())
        token = params.UserIdentityToken
        ready = None
        if isinstance(token, ua.UserNameIdentityToken):
            try:
                name, password = self.iserver.decrypt_user_token(self.session, token)
            except Exception:  # asyncua's own path below refuses it, as ever
                name = None
            if name is not None:
                policy = self._connection.security_policy
                data = self.session.nonce if policy.host_certificate is None else policy.host_certificate + self.session.nonce
                policy.asymmetric_cryptography.verify(data, params.ClientSignature.Signature)
                ready = _login.set((name, password, await asyncio.to_thread(manager.login, name, password)))
        try:
            return await super()._process_message(typeid, requesthdr, seqhdr, body)
        finally:
            if ready is not None:
                _login.reset(ready)  # never taken by a later activation on this connection


binary_server_asyncio.UaProcessor = _Processor  # asyncua makes one per connection by this name


def _session() -> Session:
    u = _caller.get()
    return u if isinstance(u, Session) else Session(who="opcua:unknown")


def caller() -> tuple[str, str]:
    """(user as audited, role) of the request being served."""
    s = _session()
    return s.who, s.role_name


def secret() -> str | None:
    """The password of the request's ledger user (the control interface proves it again per command)."""
    return _session().secret


def gate(conn, lock: asyncio.Lock):
    """→ async refusal(action, method) -> None | one line why not: users.may on users.PERMISSIONS,
    a ledger user as the ledger says now (disabled or role changed since the login: counts)."""
    async def refusal(action: str, method: str) -> str | None:
        s = _session()
        account = s.account
        if s.ledger:
            async with lock:
                account = await asyncio.to_thread(ledger_users.get, conn, s.name)
        if ledger_users.may(account, action):
            return None
        role = account.role.value if account is not None and account.enabled else s.role_name
        if account is not None and not account.enabled:
            return f"{s.who} is disabled: may not call {method}"
        who = " or ".join(sorted(r.value for r in ledger_users.PERMISSIONS[action]))
        return f"role {role} may not call {method} ({action}: {who})"
    return refusal


async def ensure_certificate(pki: Path, host: str) -> tuple[Path, Path]:
    """The server's application certificate and key in PKI, made self-signed on first start;
    replace both files with a CA-signed pair (same names) to have clients trust it by CA."""
    cert, key = pki / "server-cert.der", pki / "server-key.pem"
    if not (cert.exists() and key.exists()):
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID
        pki.mkdir(parents=True, exist_ok=True, mode=0o700)
        await setup_self_signed_certificate(
            key, cert, APP_URI, host, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"countryName": "XX", "organizationName": "Serialine", "commonName": f"serialine opcua {host}"})
        key.chmod(0o600)
        log.info("opcua: made the application certificate %s (replace it and %s with your own)", cert, key.name)
    return cert, key


async def _trust(server: Server, folder: Path) -> None:
    """PKI/trusted/ holding certificates (DER or PEM): only clients presenting one of them get a secure
    channel (checked: trusted, within its validity, application URI, client use). No such folder:
    any client certificate is taken and the user name/password decides."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    from asyncua.crypto.truststore import TrustStore
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions as Opt
    store = TrustStore([folder], [])
    await store.load()
    server.set_certificate_validator(CertificateValidator(
        Opt.TRUSTED | Opt.TIME_RANGE | Opt.URI | Opt.PEER_CLIENT, store))
    log.info("opcua: only clients whose certificate is in %s", folder)


@dataclass
class Served:
    server: Server
    pools: openscs.PoolManager
    endpoint: str
    idx: int
    packml: object = None
    managers: object = None

    async def stop(self) -> None:
        for part in (self.packml, self.managers):
            if part is not None and part.task is not None:
                part.task.cancel()
        await self.server.stop()


def sn_collection_class(scs: int):
    """The class of OPENSCSSNCollectionDataType (i=15008) by its node id: asyncua's XML import binds
    the name `ua.OPENSCSSNCollectionDataType` to its abstract supertype (i=15005) already."""
    return ua.extension_objects_by_datatype[ua.NodeId(SN_COLLECTION, scs)]


def _out(answer: openscs.Answer, with_collection: bool, state: openscs.State, collection_id: str, scs: int):
    out = [ua.Variant(int(answer.status), ua.VariantType.Int32)]
    if with_collection:
        coll = sn_collection_class(scs)(ID=collection_id, Description=answer.why, State=int(state),
                                              AssociatedPoolID=answer.gtin, SerialNumbers=list(answer.serials))
        out += [ua.Variant(coll, ua.VariantType.ExtensionObject), ua.Variant(answer.token, ua.VariantType.String)]
    return out


def _pairs(value) -> list[tuple[str, str]]:
    return [(getattr(kv, "Key", None), getattr(kv, "Value", None)) for kv in (value or [])]


def _val(v):
    return v.Value if isinstance(v, ua.Variant) else v


async def start(conn, endpoint: str, users_file: str | None, pki: str | Path, *, anonymous: bool = False,
                max_requestable: int = openscs.MAX_SN_REQUESTABLE, control: str | None = None) -> Served:
    """Build and start the server on `endpoint` (opc.tcp://HOST:PORT[/path]); with `control` (the
    agent's control interface address) also the line's PackML object; → Served."""
    url = urlparse(endpoint)
    if url.scheme != "opc.tcp" or not url.hostname or url.port is None:
        raise OpcuaError(f"endpoint {endpoint!r}: expected opc.tcp://HOST:PORT")
    accounts = users.load(users_file) if users_file else {}
    db_path = _db_path(conn)
    in_ledger = _ledger_has_users(conn)
    if not accounts and not anonymous and not in_ledger:
        raise OpcuaError("no OPC UA users: the ledger has none (serialine users add) and no users file is given"
                         " (serialine opcua user add FILE NAME --role R)")
    if accounts and in_ledger:
        log.warning("opcua: the ledger has users: they log in; the users file %s is not used", users_file)
    server = Server(user_manager=_Users(db_path, accounts, anonymous))
    await server.init()
    server.set_endpoint(endpoint)
    server.set_server_name("Serialine")
    await server.set_application_uri(APP_URI)
    cert, key = await ensure_certificate(Path(pki), url.hostname or socket.gethostname())
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    await _trust(server, Path(pki) / "trusted")
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], permission_ruleset=_Roles())
    server.set_identity_tokens([ua.UserNameIdentityToken] + ([ua.AnonymousIdentityToken] if anonymous else []))
    for name in NODESETS:
        await server.import_xml(str(nodeset(name)))
    scs = await server.get_namespace_index(OPENSCS_NS)
    await _complete_sn_collection(server, scs)
    await server.load_data_type_definitions()
    idx = await server.register_namespace(NAMESPACE)
    pools = openscs.PoolManager(conn, max_requestable)
    # string node ids (children: "PoolManager.SNRequestAllocated"...): stable for PLC and MES programs
    pm = await server.nodes.objects.add_object(ua.NodeId(POOL_MANAGER, idx), ua.QualifiedName(POOL_MANAGER, idx),
                                               objecttype=ua.NodeId(POOL_MANAGER_TYPE, scs))
    lock = asyncio.Lock()  # one ledger connection: one call at a time
    await _bind_pool_manager(server, pm, pools, scs, lock, gate(conn, lock))
    from .events import Managers
    refusal = gate(conn, lock)
    managers = Managers(server, idx, scs, conn, lock, caller, refusal, pools.refuse)
    await managers.build()
    packml = None
    if control is not None:
        from .packml import PackML

        async def refused(user: str, action: str, why: str) -> None:  # a refused command, audited
            async with lock:
                await asyncio.to_thread(pools.refuse, user, action, Ret.InsufficientPrivilegeToExecute
                                        if why.startswith("role ") else Ret.Undefined, why)
        async def ledger(fn):  # a read of the ledger for PackML (per-reason counts, challenge, batches)
            async with lock:
                return await asyncio.to_thread(fn, conn)
        packml = PackML(server, idx, control, caller, refusal, refused, ledger, secret)
        await packml.build()
    quiet = logging.getLogger("asyncua.server.server")  # it logs a traceback of its own before raising
    quiet.disabled = True
    try:
        await server.start()
    except OSError as exc:
        raise OpcuaError(f"cannot listen on {endpoint}: {exc.strerror or exc}") from None
    finally:
        quiet.disabled = False
    managers.start()
    if packml is not None:
        packml.start()
    log.info("opcua: serving %s (Basic256Sha256 SignAndEncrypt, %s%s)", endpoint,
             "the ledger's users" if in_ledger else f"{len(accounts)} user(s) of {users_file}",
             ", anonymous viewers" if anonymous else "")
    return Served(server, pools, endpoint, idx, packml, managers)


def _db_path(conn) -> str | None:
    for _, name, path in conn.execute("PRAGMA database_list"):
        if name == "main":
            return path or None
    return None


async def _complete_sn_collection(server: Server, scs: int) -> None:
    """The NodeSet's OPENSCSSNCollectionDataType (i=15008) has no DataTypeDefinition: it is its
    supertype OPENSCSCollectionDataType (i=15005) without a field more. Give it the supertype's
    fields, so a client can decode what the methods return (asyncua reads the definition)."""
    sub, base = server.get_node(ua.NodeId(SN_COLLECTION, scs)), server.get_node(ua.NodeId(15005, scs))
    if (await sub.read_attribute(ua.AttributeIds.DataTypeDefinition)).Value.Value is not None:
        return
    fields = (await base.read_attribute(ua.AttributeIds.DataTypeDefinition)).Value.Value.Fields
    sdef = ua.StructureDefinition(DefaultEncodingId=ua.NodeId(15191, scs), BaseDataType=base.nodeid,
                                  StructureType=ua.StructureType.Structure, Fields=fields)
    await sub.write_attribute(ua.AttributeIds.DataTypeDefinition, ua.DataValue(ua.Variant(sdef)))


async def _set_prop(parent, scs: int, name: str, value, vtype) -> None:
    node = await parent.get_child(f"{scs}:{name}")
    await node.write_value(ua.Variant(value, vtype))


async def _bind_pool_manager(server: Server, pm, pools: openscs.PoolManager, scs: int, lock: asyncio.Lock,
                             refusal) -> None:
    for name, value, vtype in (("MaxSNRequestable", pools.max_requestable, ua.VariantType.UInt32),
                               ("MaxSNReturnable", openscs.MAX_SN_RETURNABLE, ua.VariantType.UInt32),
                               ("SNFormat", list(openscs.FORMATS), ua.VariantType.String)):
        try:
            await _set_prop(pm, scs, name, value, vtype)
        except ua.UaError:  # optional in the type, not instantiated
            prop = await pm.add_property(ua.QualifiedName(name, scs), value, vtype)
            del prop

    def guarded(action: str, fn, outputs: bool):
        async def call(parent, *args):
            user, _ = caller()
            if why := await refusal(POOL_ACTION, action):
                async with lock:
                    await asyncio.to_thread(pools.refuse, user, action, Ret.InsufficientPrivilegeToExecute, why)
                return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
            async with lock:
                answer, state, cid = await asyncio.to_thread(fn, user, *[_val(a) for a in args])
            if answer.status is not Ret.NoError:
                log.info("opcua: %s by %s: %s (%s)", action, user, answer.status.name, answer.why)
            return _out(answer, outputs, state, cid, scs)
        return call

    def request(allocated: bool):
        def fn(user, cid, count, fmt, pairs, token):
            a = pools.request(user, int(count or 0), fmt or "", _pairs(pairs), token or "", allocated, cid or "")
            return a, openscs.State.Allocated if allocated else openscs.State.Unallocated, cid or ""
        return fn

    def settle(how: str, allocated: bool | None):
        def fn(user, coll, pairs, fmt):
            texts = list(getattr(coll, "SerialNumbers", None) or [])
            return pools.settle(user, how, texts, fmt or "", _pairs(pairs), allocated), openscs.State.Unassigned, ""
        return fn

    def to_allocated(user, coll, pairs, fmt):
        texts = list(getattr(coll, "SerialNumbers", None) or [])
        return pools.to_allocated(user, texts, fmt or "", _pairs(pairs)), openscs.State.Allocated, ""

    def not_served(name: str):
        code, why = openscs.NOT_SERVED[name]

        def fn(user, *args):
            return pools.refuse(user, f"opcua.{name}", Ret(code), why), openscs.State.Unassigned, ""
        return fn

    binds = {
        "SNRequestUnassigned": (not_served("SNRequestUnassigned"), True),
        "SNtoAllocated": (to_allocated, False),
        "SNtoUnallocated": (not_served("SNtoUnallocated"), False),
        "SNRequestUnallocated": (request(False), True),
        "SNRequestAllocated": (request(True), True),
        "SNReturnUnallocated": (settle("returned", False), False),
        "SNReturnAllocated": (settle("returned", True), False),
        "SNtoEncoded": (settle("used", None), False),
    }
    for name, (fn, outputs) in binds.items():
        method = await pm.get_child(f"{scs}:{name}")
        server.link_method(method, guarded(f"opcua.{name}", fn, outputs))


class Background:
    """The server on its own event loop in a thread, for a caller that is not asyncio (the agent
    service, `serialine opcua serve`, tests). start() returns once it listens, or raises its error."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.loop = asyncio.new_event_loop()
        self.served: Served | None = None
        self._thread = None

    def start(self) -> "Background":
        import threading
        ready = threading.Event()
        failed: list[BaseException] = []

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.served = self.loop.run_until_complete(start(*self.args, **self.kwargs))
            except BaseException as exc:  # handed to start()'s caller
                failed.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.served.stop())
        self._thread = threading.Thread(target=run, name="opcua", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            self._thread.join()
            self.loop.close()  # else closed by the garbage collector at exit, after its selector: a traceback
            raise failed[0]
        return self

    def call(self, coro, timeout: float = 10.0):
        """Run a coroutine on the server's loop (e.g. a PackML update) and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
