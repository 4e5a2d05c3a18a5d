"""`serialine users …` — people in the ledger (docs/part11.md).

    serialine users add NAME --role R --full-name "First Last" [--password-stdin] --user ADMIN --reason WHY
    serialine users list | disable NAME | enable NAME | reset-password NAME | role NAME ROLE | setting [NAME VALUE]

The acting admin (--user) proves it with a password: $SERIALINE_PASSWORD, a prompt on a terminal,
else the first line of stdin. The new password (add, reset-password): twice at a prompt on a
terminal, or with --password-stdin the next line of stdin. The first user of a ledger is an admin
and needs no proof (there is nobody to prove it to yet)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from . import audit, ledgerfile, users


def _new_password(a) -> str:
    if a.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise users.UserError("--password-stdin: no password on stdin")
        return line.rstrip("\r\n")
    if sys.stdin.isatty():
        return users.read_password(f"new password for {a.name}: ", confirm=True, env=False)
    raise users.UserError("give the new password on a terminal, or on stdin with --password-stdin")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="serialine users", description="users, roles and site settings of the ledger")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("add", help="add a user (the first one: an admin)")
    p.add_argument("name"); p.add_argument("--role", required=True, choices=[r.value for r in users.Role])
    p.add_argument("--full-name", required=True, help="printed name, shown on every signature")
    p.add_argument("--password-stdin", action="store_true", help="read the new password from stdin")
    sub.add_parser("list", help="the users and their state")
    for name, help_ in (("disable", "disable a user (never deleted)"), ("enable", "enable a user again (lifts a lockout)")):
        sub.add_parser(name, help=help_).add_argument("name")
    p = sub.add_parser("reset-password", help="give a user a new password (lifts a lockout)")
    p.add_argument("name"); p.add_argument("--password-stdin", action="store_true")
    p = sub.add_parser("role", help="change a user's role")
    p.add_argument("name"); p.add_argument("role", choices=[r.value for r in users.Role])
    p = sub.add_parser("setting", help="show the site settings, or change one (NAME VALUE)")
    p.add_argument("setting", nargs="?", choices=sorted(users.SETTINGS)); p.add_argument("value", nargs="?")
    for name, p in sub.choices.items():
        p.add_argument("--db", default=os.environ.get("SERIALINE_DB", "serialine.db"), help="ledger file")
        if name != "list":
            p.add_argument("--user", default=os.environ.get("SERIALINE_USER") or getpass.getuser(),
                           help="the admin doing this (proves it with a password)")
            p.add_argument("--reason", help="why (at least 4 characters; recorded)")
    args = ap.parse_args(argv)

    def go():
        conn = ledgerfile.open_ledger(args.db)
        try:
            return _run(conn, args)
        finally:
            conn.close()
    return ledgerfile.run("serialine users", go)


def _run(conn, a) -> int:
    if a.cmd == "list":
        rows = users.all_users(conn)
        if not rows:
            print("no users: this ledger takes --user as given (serialine users add NAME --role admin ...)")
        for u in rows:
            state = "enabled" if u.enabled else "disabled"
            if u.locked_until:
                state += f", locked until {users._until(u.locked_until)}"
            print(f"{u.name}\t{u.role.value}\t{u.full_name}\t{state}")
        return 0
    if a.cmd == "setting" and a.setting is None:
        for name, (default, low, high) in users.SETTINGS.items():
            print(f"{name}\t{users.setting(conn, name)}\t(default {default}, {low}..{high})")
        return 0
    if a.cmd == "setting" and a.value is None:
        raise users.UserError(f"setting {a.setting}: give a value")
    audit.check_reason(a.reason)  # before asking for any password
    first = a.cmd == "add" and not users.present(conn)
    if not first:
        users.act(conn, a.user, "config.change" if a.cmd == "setting" else "users.admin")
    if a.cmd == "add":
        u = users.add(conn, a.name, a.role, _new_password(a), by=a.user, reason=a.reason, full_name=a.full_name)
        print(f"added user {u.name} ({u.full_name}, {u.role.value})" + (": the ledger's first admin; from now on"
              " every changing command names an enabled user and proves it" if first else ""))
    elif a.cmd == "disable":
        users.disable(conn, a.name, by=a.user, reason=a.reason)
        print(f"user {a.name} disabled")
    elif a.cmd == "enable":
        users.enable(conn, a.name, by=a.user, reason=a.reason)
        print(f"user {a.name} enabled")
    elif a.cmd == "reset-password":
        users.reset_password(conn, a.name, _new_password(a), by=a.user, reason=a.reason)
        print(f"user {a.name}: new password set")
    elif a.cmd == "role":
        u = users.set_role(conn, a.name, a.role, by=a.user, reason=a.reason)
        print(f"user {u.name} is now {u.role.value}")
    elif a.cmd == "setting":
        print(f"{a.setting} = {users.set_setting(conn, a.setting, a.value, by=a.user, reason=a.reason)}")
    print(f"audit head {audit.anchor(conn, f'users {a.cmd} by {a.user}')}")
    return 0
