"""Who is signed in to the dashboard: one-time sign-in codes and cookie sessions, in memory.

Why in memory: a session is a browser's convenience, not state to carry through a restart. A
restarted daemon asks for a new sign-in (``mariposa ui`` prints a fresh link), and no file holds
a credential that a copied state directory could replay. Codes and session ids are kept only as
SHA-256 digests, so even the daemon's memory holds nothing a browser could present.

A code is good once, for ``SIGNIN_TTL`` seconds (``nomad ui -authenticate``'s shape). A session
ends after ``idle`` seconds without a request (``ui_idle_timeout`` in mariposa.toml), when its
user signs out, or when its user is removed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

import attrs

SIGNIN_TTL = 300.0
DEFAULT_IDLE = 1800.0
MAX_SESSIONS = 10_000  # past it the longest idle goes: a flood of sign-ins cannot grow memory without end
MAX_CODES = 1_000


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


@attrs.define
class Session:
    user: str
    csrf: str  # sent back in every form and htmx request; compared in constant time
    token: str | None  # the token it signed in with, if any (revoking the token ends the session)
    created: float
    seen: float

    def csrf_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(self.csrf.encode(), offered.encode("utf-8", "replace"))


class Sessions:
    def __init__(self, now: Callable[[], float], idle: float = DEFAULT_IDLE) -> None:
        self.now, self.idle = now, idle
        self._codes: dict[str, tuple[str, float]] = {}  # digest -> (user, expires)
        self._sessions: dict[str, Session] = {}  # digest of the cookie -> session

    def issue_code(self, user: str) -> str:
        """A one-time sign-in code for ``user``, good for ``SIGNIN_TTL`` seconds."""
        now = self.now()
        self._codes = {d: c for d, c in self._codes.items() if c[1] > now}
        while len(self._codes) >= MAX_CODES:
            self._codes.pop(next(iter(self._codes)))
        code = secrets.token_urlsafe(32)
        self._codes[_digest(code)] = (user, now + SIGNIN_TTL)
        return code

    def redeem(self, code: str) -> str | None:
        """The user the code was issued for, once; None for an unknown, used or expired code."""
        entry = self._codes.pop(_digest(code), None)
        if entry is None or entry[1] <= self.now():
            return None
        return entry[0]

    def open(self, user: str, token: str | None = None) -> tuple[str, Session]:
        """A new session: (the cookie's value, the session)."""
        now = self.now()
        if len(self._sessions) >= MAX_SESSIONS:
            self._expire(now)
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda d: self._sessions[d].seen)
                del self._sessions[oldest]
        cookie = secrets.token_urlsafe(32)
        session = Session(user=user, csrf=secrets.token_urlsafe(24), token=token, created=now, seen=now)
        self._sessions[_digest(cookie)] = session
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        """The live session the cookie names, its idle clock restarted; None when there is none."""
        if not cookie:
            return None
        key = _digest(cookie)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self.now()
        if now - session.seen > self.idle:
            del self._sessions[key]
            return None
        session.seen = now
        return session

    def close(self, cookie: str | None) -> None:
        if cookie:
            self._sessions.pop(_digest(cookie), None)

    def end_where(self, ended: Callable[[Session], bool]) -> int:
        """End every session ``ended`` says (a removed user's, a revoked token's); how many."""
        gone = [k for k, s in self._sessions.items() if ended(s)]
        for k in gone:
            del self._sessions[k]
        return len(gone)

    def _expire(self, now: float) -> None:
        self._sessions = {k: s for k, s in self._sessions.items() if now - s.seen <= self.idle}

    def __len__(self) -> int:
        return len(self._sessions)
