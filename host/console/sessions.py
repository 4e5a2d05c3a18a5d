"""The console's sessions: a random token in an HttpOnly, SameSite=Strict cookie naming a session
kept only in this process (a restart logs everyone out; nothing about a session is in the cookie).
Each session has its own CSRF token, which every POST must carry. A session ends after
`session.timeout_minutes` (host/users.py SETTINGS) without a person's request; the operator
screen's own polling does not keep it alive."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

COOKIE = "serialine_console"
MAX_SESSIONS = 1000  # the oldest idle ones go first; a line PC has a handful of people


@dataclass
class Session:
    token: str
    csrf: str
    user: str | None = None  # None: not logged in (the login form's own CSRF token)
    seen: float = field(default_factory=time.monotonic)
    message: str = ""  # why the last session ended, shown once on the login page


class Sessions:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._by_token: dict[str, Session] = {}

    def new(self, user: str | None = None, message: str = "") -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), user, message=message)
        with self._lock:
            if len(self._by_token) >= MAX_SESSIONS:  # not-logged-in ones first: a flood of login pages evicts nobody
                oldest = min(self._by_token.values(), key=lambda x: (x.user is not None, x.seen))
                del self._by_token[oldest.token]
            self._by_token[s.token] = s
        return s

    def get(self, token: str | None, *, touch: bool = True) -> tuple[Session | None, str | None]:
        """(the live session, None) or (None, the user whose session just timed out, if any)."""
        if not token:
            return None, None
        now = time.monotonic()
        with self._lock:
            s = self._by_token.get(token)
            if s is None:
                return None, None
            if s.user is not None and now - s.seen > self.timeout_s:
                del self._by_token[token]
                return None, s.user
            if touch:
                s.seen = now
            return s, None

    def end(self, token: str | None) -> Session | None:
        with self._lock:
            return self._by_token.pop(token or "", None)

    def sweep(self) -> list[str]:
        """Users whose sessions timed out since the last sweep (so each timeout is audited once)."""
        now = time.monotonic()
        gone = []
        with self._lock:
            for token, s in list(self._by_token.items()):
                if s.user is not None and now - s.seen > self.timeout_s:
                    del self._by_token[token]
                    gone.append(s.user)
        return gone


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
