"""Trigger tokens: 32 random bytes (``secrets.token_urlsafe(32)``: 43 characters), stored only as
their sha256 (store/triggers.py). A presented token is hashed, the hash looked up, and the found
hash compared with ``hmac.compare_digest``; a token with no row is compared with a dummy hash the
same way, so a wrong token costs the work a right one does (the same lookup, the same compare)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from mariposa.model import ProjectSpec
from mariposa.store.triggers import TriggerRow

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32): 32 bytes, base64 without padding
PATH_PREFIX = "/v1/triggers/"
HIDDEN = "<hidden>"
_DUMMY = hashlib.sha256(b"no trigger has this token").hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def matches(presented_hash: str, row: TriggerRow | None) -> bool:
    """Whether the row found for a presented token's hash is that token's, in constant time;
    with no row, the same compare against a dummy (so it takes the same time) and False."""
    same = hmac.compare_digest(presented_hash.encode(), (row.token_hash if row else _DUMMY).encode())
    return same and row is not None


def path(token: str | None) -> str:
    return PATH_PREFIX + (token or HIDDEN)


def url(base: str | None, token: str | None) -> str | None:
    """The URL of a token on the listener at ``base`` (``http://HOST:PORT``); None without one."""
    return base + path(token) if base else None


def triggers_of(spec: ProjectSpec) -> list[tuple[str, str]]:
    return [(svc.name, t.name) for svc in spec.services for t in svc.triggers]
