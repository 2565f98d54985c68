"""Registry logins: the credentials the daemon pulls with (``registries.Credentials``).

A login is checked against the registry before it is kept (through the runtime: Docker's
``POST /auth``), so a typo is refused at once with the registry's words instead of surfacing at
the next pull. The password goes one way: in through ``login``, out only to the runtime when it
pulls; no answer, event, log line or error carries it.
"""

from __future__ import annotations

import builtins

import trio

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.drivers.base import RegistryAuth
from mariposa.errors import BadRequest, NotFound
from mariposa.registries import normalize_host
from mariposa.store import events as event_store

MAX_FIELD = 4096


def _host(host: object) -> str:
    if not isinstance(host, str) or not host:
        raise BadRequest("'host' (the registry's HOST or HOST:PORT) is required")
    try:
        return normalize_host(host)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _field(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{name}' is required")
    if len(value) > MAX_FIELD or "\0" in value:
        raise BadRequest(f"'{name}' must be at most {MAX_FIELD} characters, without NUL")
    return value


class Registry(Area):
    _lock: trio.Lock | None = None

    @property
    def lock(self) -> trio.Lock:
        """Changes of the logins take turns (a login and a logout of one host must not cross)."""
        if self._lock is None:
            self._lock = trio.Lock()
        return self._lock

    def _driver(self):
        """The runtime that checks logins: Docker's when there is one (it pulls images)."""
        drivers = self.ctx.drivers
        return drivers.get("docker") or next(iter(drivers.values()))

    @operation("registry.login", target="host", kind="host")
    async def login(self, caller: Caller, host: object, username: object, password: object) -> dict:
        server = _host(host)
        auth = RegistryAuth(server, _field(username, "username"), _field(password, "password"))
        await self._driver().login(auth)
        async with self.lock:
            await self.ctx.credentials.put(auth, caller.author)
        await self.ctx.store.call(lambda db: event_store.record(
            db, "registry.login", f"logged in to {server} as {auth.username}", author=caller.author))
        return {"host": server, "username": auth.username}

    @operation("registry.logout", target="host", kind="host")
    async def logout(self, caller: Caller, host: object) -> dict:
        server = _host(host)
        async with self.lock:
            found = await self.ctx.credentials.remove(server)
        if not found:
            raise NotFound(f"not logged in to {server}")
        await self.ctx.store.call(lambda db: event_store.record(
            db, "registry.logout", f"logged out of {server}", author=caller.author))
        return {"host": server}

    # builtins.list: in this class body, `list` names the method
    @operation("registry.list", kind="host")
    async def list(self, caller: Caller) -> builtins.list[dict]:
        """Hosts and usernames; never a password."""
        return self.ctx.credentials.listing()
