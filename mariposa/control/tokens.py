"""API tokens: ``token create|list|revoke`` (the remote listener's credentials, access/tokens.py).

One's own tokens are any user's to look after (``token.*-own``, open actions); somebody else's
need ``user:admin`` (``token.create``, ``token.list``, ``token.revoke``). The public method
decides which it is, then calls the one ``@operation`` that authorizes and audits it.

The token is returned once, by ``create``, as a ``Revealed`` value (the one thing the redaction
point lets through); it is stored as the sha256 of its secret and never logged.
"""

from __future__ import annotations

import builtins
import re

import structlog

from mariposa.access import tokens as book
from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.control.redact import Revealed
from mariposa.errors import BadRequest, NotFound
from mariposa.store import tokens as token_store

log = structlog.get_logger()
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw]?)")
MAX_NAME = 100


def parse_expires(value: object) -> float | None:
    """Seconds from now: ``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` or a number of seconds;
    None (``never``, or nothing given) for a token that does not expire."""
    if value is None or value == "" or value == "never":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        seconds = float(int(m[1]) * _UNITS[m[2] or "s"])
    else:
        raise BadRequest(f"'expires' must be a duration like 30d, 12h or 90m (or 'never'), not {value!r}")
    if seconds <= 0:
        raise BadRequest("'expires' must be above 0")
    return seconds


class Tokens(Area):
    def _own(self, caller: Caller, user: str | None) -> bool:
        return user is None or user == self.policy.user_of(caller)

    async def create(self, caller: Caller, user: str | None = None, expires: object = None,
                     name: str | None = None) -> dict:
        if self._own(caller, user):
            return await self._create_own(caller, user, expires, name)
        return await self._create(caller, user, expires, name)

    @operation("token.create-own", kind="host")
    async def _create_own(self, caller: Caller, user: str | None, expires: object, name: str | None) -> dict:
        return await self._make(caller, user or self.policy.user_of(caller), expires, name)

    @operation("token.create", kind="host")
    async def _create(self, caller: Caller, user: str | None, expires: object, name: str | None) -> dict:
        return await self._make(caller, user, expires, name)

    async def _make(self, caller: Caller, user: str | None, expires: object, name: str | None) -> dict:
        seconds = parse_expires(expires)
        if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
            raise BadRequest(f"'name' must be a string of at most {MAX_NAME} characters")
        if not user or not await self.ctx.store.call(token_store.user_exists, user):
            raise NotFound(f"no user '{user}': a token is a user's (mariposa user add NAME --uid UID makes one)")
        token_id, token, hashed = book.new_token()
        now = self.ctx.clock.now()
        row = {"id": token_id, "user": user, "name": name, "hash": hashed, "created": now,
               "expires": None if seconds is None else now + seconds, "revoked": None, "last_used": None,
               "author": caller.author}
        await self.ctx.store.call(token_store.insert, row)
        self.ctx.tokens.add(row)
        log.info("token created", token=token_id, user=user, author=caller.author)
        return {**book.public(row), "token": Revealed(token)}

    async def list(self, caller: Caller, user: str | None = None) -> list[dict]:
        if user is None and self.policy.is_root(caller):
            return await self._list(caller, None)  # root: every token
        if self._own(caller, user):
            return await self._list_own(caller, user or self.policy.user_of(caller))
        return await self._list(caller, user)

    @operation("token.list-own", kind="host")
    async def _list_own(self, caller: Caller, user: str | None) -> builtins.list[dict]:
        return self._rows(user)

    @operation("token.list", kind="host")
    async def _list(self, caller: Caller, user: str | None) -> builtins.list[dict]:
        return self._rows(user)

    def _rows(self, user: str | None) -> builtins.list[dict]:
        rows = sorted(self.ctx.tokens.rows.values(), key=lambda r: r["created"])
        pending = self.ctx.tokens.used
        return [{**book.public(r), "last_used": pending.get(r["id"], r.get("last_used"))}
                for r in rows if user is None or r["user"] == user]

    async def revoke(self, caller: Caller, token_id: str) -> dict:
        row = self.ctx.tokens.rows.get(token_id)
        if row is not None and self._own(caller, row["user"]):
            return await self._revoke_own(caller, token_id)
        return await self._revoke(caller, token_id)  # someone else's, or no such token: an admin's question

    @operation("token.revoke-own", kind="host")
    async def _revoke_own(self, caller: Caller, token_id: str) -> dict:
        return await self._end(caller, token_id)

    @operation("token.revoke", kind="host")
    async def _revoke(self, caller: Caller, token_id: str) -> dict:
        return await self._end(caller, token_id)

    async def _end(self, caller: Caller, token_id: str) -> dict:
        row = self.ctx.tokens.rows.get(token_id)
        if row is None:
            raise NotFound(f"no token '{token_id}' (mariposa token list shows them)")
        now = self.ctx.clock.now()
        if await self.ctx.store.call(token_store.revoke, token_id, now):
            self.ctx.tokens.revoked(token_id, now)
            log.info("token revoked", token=token_id, user=row["user"], author=caller.author)
        return book.public(self.ctx.tokens.rows[token_id])
