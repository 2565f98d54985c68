"""API tokens in the daemon's memory: what the remote listener checks on every request.

A token reads ``mrp_<id>_<secret>``: ``id`` is public (it names the token in ``token list`` and
``token revoke``), ``secret`` is ``secrets.token_urlsafe(32)`` and only its sha256 is stored
(store/tokens.py). The book holds every row (a handful per user), so checking a request's token
is a dict lookup and one ``hmac.compare_digest``, with no trip to the store: a revocation made
through the control layer changes the book at once, and the next request is refused.

A wrong token costs what a right one does: a token whose id is unknown is compared with a dummy
hash the same way. ``last_used`` is noted in memory and written in one transaction every
``FLUSH`` seconds (and at shutdown), never once a request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import structlog
import trio

from mariposa.errors import Unauthorized
from mariposa.store import tokens as token_store
from mariposa.store.db import Store

log = structlog.get_logger()
PREFIX = "mrp"
FRESH = 600.0  # a token made this recently counts as re-authenticating (project move asks it)
FLUSH = 30.0
_SHAPE = re.compile(r"mrp_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_DUMMY = hashlib.sha256(b"no token has this secret").hexdigest()


def new_token() -> tuple[str, str, str]:
    """(id, the token as shown once, the hash of its secret as stored)."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return token_id, f"{PREFIX}_{token_id}_{secret}", secret_hash(secret)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(value: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token; None otherwise."""
    m = _SHAPE.fullmatch(value)
    return (m[1], m[2]) if m else None


def public(row: dict) -> dict:
    """What may be shown of a token: everything but its hash."""
    return {k: row.get(k) for k in token_store.COLUMNS if k != "hash"}


class TokenBook:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self.rows: dict[str, dict] = {}
        self.used: dict[str, float] = {}

    async def load(self) -> None:
        if self.store is not None:
            rows = await self.store.call(token_store.all_rows)
            self.rows = {r["id"]: r for r in rows}

    def add(self, row: dict) -> None:
        self.rows[row["id"]] = dict(row)

    def forget_user(self, user: str) -> None:
        """A user removed (``user rm``: the store's rows go with it, ON DELETE CASCADE)."""
        for token_id in [i for i, r in self.rows.items() if r["user"] == user]:
            del self.rows[token_id]
            self.used.pop(token_id, None)

    def revoked(self, token_id: str, when: float) -> None:
        if token_id in self.rows:
            self.rows[token_id]["revoked"] = when

    def check(self, presented: str, now: float) -> dict:
        """The row of a valid token, noted as used at ``now``; ``Unauthorized`` otherwise. The
        message never repeats what was presented."""
        parsed = parse(presented)
        token_id, secret = parsed if parsed else ("", "")
        row = self.rows.get(token_id)
        same = hmac.compare_digest(secret_hash(secret).encode(), (row["hash"] if row else _DUMMY).encode())
        if not same or row is None or parsed is None:
            raise Unauthorized("unauthorized: the token is not valid (mariposa token create makes one)")
        if row.get("revoked") is not None:
            raise Unauthorized(f"unauthorized: token {token_id} was revoked")
        if row.get("expires") is not None and now >= row["expires"]:
            raise Unauthorized(f"unauthorized: token {token_id} has expired")
        self.used[token_id] = now
        return row

    def is_fresh(self, row: dict, now: float) -> bool:
        return now - row["created"] < FRESH

    async def flush(self) -> None:
        if self.store is None or not self.used:
            return
        used, self.used = self.used, {}
        try:
            await self.store.call(token_store.touch, used)
        except Exception as exc:  # the store is failing: keep them for the next try
            for token_id, when in used.items():
                self.used.setdefault(token_id, when)
            log.error("tokens: cannot record last use", error=str(exc))
        for token_id, when in used.items():
            if token_id in self.rows:
                self.rows[token_id]["last_used"] = when

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await self.load()
        task_status.started()
        try:
            while True:
                await trio.sleep(FLUSH)
                await self.flush()
        finally:
            with trio.CancelScope(shield=True):
                await self.flush()
