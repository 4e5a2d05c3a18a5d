"""Upstream credentials: from the environment, or from a file the operator names (then only from
it). The file holds the same NAME=VALUE pairs as the environment, must belong to the user and be
readable by nobody else (chmod 600). Errors name the file, line and variable, never a value."""

from __future__ import annotations

import os
import stat

NAMES = ("SERIALINE_HTTP_TOKEN", "SERIALINE_HTTP_USER", "SERIALINE_HTTP_PASSWORD",
         "SERIALINE_MQTT_USER", "SERIALINE_MQTT_PASSWORD")


def load(path: str | os.PathLike | None = None, environ=None, names=None) -> dict[str, str]:
    """{NAME: value} of the credentials that are set (empty values count as unset). `names` (from
    the environment only): just these, and each must be set, or ValueError naming the variable."""
    if path is None:
        environ = os.environ if environ is None else environ
        if names is not None:
            for name in names:
                if name not in NAMES:
                    raise ValueError(f"{name} is not a credential name ({', '.join(NAMES)})")
                if not environ.get(name):
                    raise ValueError(f"environment variable {name} is {'empty' if name in environ else 'not set'}")
            return {name: environ[name] for name in names}
        return {name: environ[name] for name in NAMES if environ.get(name)}
    return read_file(path)


def read_file(path: str | os.PathLike) -> dict[str, str]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ValueError(f"credentials file {path}: {exc.strerror}") from None
    with os.fdopen(fd, encoding="utf-8") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"credentials file {path}: not a regular file")
        if st.st_uid != os.geteuid():
            raise ValueError(f"credentials file {path}: not owned by the user running serialine")
        if st.st_mode & 0o077:
            raise ValueError(f"credentials file {path} is accessible to others "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}")
        try:
            text = fh.read()
        except UnicodeDecodeError:
            raise ValueError(f"credentials file {path}: not UTF-8 text") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or name not in NAMES:  # the line itself is not shown: it may be a secret
            raise ValueError(f"credentials file {path} line {number}: expected NAME=VALUE with NAME one "
                             f"of {', '.join(NAMES)} ({'unknown name' if sep else 'no ='})")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if value:
            out[name] = value
    return out
