"""OPC UA users: a users file of `name role scrypt$N$r$p$salt$hash` lines, never a password in
clear, in TOML or in a log (the hash is the ledger users' one: host/users.py hash_password). Roles:
viewer (browse, read), operator (also calls that change the line or the pools), engineer (everything)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..users import check_password, hash_password  # noqa: F401  (check_password: for the server)

ROLES = ("viewer", "operator", "engineer")
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class UsersError(ValueError):
    pass


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    hashed: str


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
        if (len(parts) != 3 or not _NAME.fullmatch(parts[0]) or parts[1] not in ROLES
                or not parts[2].startswith("scrypt$")):
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
