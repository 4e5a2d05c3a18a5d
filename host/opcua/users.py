"""OPC UA users: a users file of `name role scrypt$N$r$p$salt$hash` lines (hashlib.scrypt), never a
password in clear, in TOML or in a log. Roles: viewer (browse, read), operator (also calls that
change the line or the pools), engineer (everything)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

ROLES = ("viewer", "operator", "engineer")
_N, _R, _P = 2 ** 14, 8, 1  # scrypt cost: ~16 MiB, tens of ms per login
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class UsersError(ValueError):
    pass


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    hashed: str


def hash_password(password: str, *, salt: bytes | None = None, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = salt or os.urandom(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${dk.hex()}"


def check_password(hashed: str, password: str) -> bool:
    try:
        kind, n, r, p, salt, dk = hashed.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 * 1024 * 1024, dklen=len(dk) // 2)
    except (ValueError, TypeError):
        return False
    return kind == "scrypt" and hmac.compare_digest(got.hex(), dk)


def load(path: str | Path) -> dict[str, Account]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsersError(f"{path}: no such users file") from None
    out: dict[str, Account] = {}
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or not _NAME.fullmatch(parts[0]) or parts[1] not in ROLES or not parts[2].startswith("scrypt$"):
            raise UsersError(f"{path}: line {no}: expected 'NAME ROLE scrypt$...' with ROLE one of {', '.join(ROLES)}")
        if parts[0] in out:
            raise UsersError(f"{path}: line {no}: user {parts[0]!r} twice")
        out[parts[0]] = Account(*parts)
    return out


def add(path: str | Path, name: str, role: str, password: str) -> None:
    """Add or replace one user (the file is written whole, readable by its owner only)."""
    if not _NAME.fullmatch(name) or role not in ROLES:
        raise UsersError(f"user {name!r} role {role!r}: name of letters/digits/_.@-, role one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise UsersError("password: at least 8 characters")
    path = Path(path)
    users = load(path) if path.exists() else {}
    users[name] = Account(name, role, hash_password(password))
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# serialine OPC UA users: NAME ROLE scrypt-hash (serialine opcua user add)\n")
        f.writelines(f"{a.name} {a.role} {a.hashed}\n" for a in users.values())
    os.replace(tmp, path)
