"""The event log: the audit trail of every change and every notable thing the daemon did."""

from __future__ import annotations

from collections.abc import AsyncIterator

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.store import events as event_store

FOLLOW_POLL = 0.25  # seconds between looks at the log while following it


def _matches(event: dict, types: tuple[str, ...]) -> bool:
    """``types`` match a type or its prefix (``service`` takes ``service.scale``); none: all."""
    return not types or any(event["type"] == t or event["type"].startswith(t + ".") for t in types)


class Events(Area):
    async def _read(
        self, project_id: str | None, service: str | None, types: tuple[str, ...], after: int
    ) -> list[dict]:
        rows = await self.ctx.store.call(event_store.listing, project_id, service, after)
        return [e for e in rows if not types or any(e["type"] == t or e["type"].startswith(t + ".") for t in types)]

    @operation("events.list", target="project", each="project_id")
    async def list(self, caller: Caller, project: str | None = None, service: str | None = None,
                   types: tuple[str, ...] = (), since: int = 0) -> list[dict]:
        """Events after id ``since``; ``types`` match a type or its prefix (``service`` takes ``service.scale``)."""
        return await self._read(await self._project_id(project), service, types, since)

    @operation("events.follow", target="project", each="project_id")
    async def follow(self, caller: Caller, project: str | None = None, service: str | None = None,
                     types: tuple[str, ...] = (), since: int = 0) -> AsyncIterator[dict]:
        """The matching events after ``since``, then every new one as it is written, until the
        caller goes away (its cancellation ends the stream)."""
        project_id = await self._project_id(project)
        return self._follow(project_id, service, types, since)

    async def _follow(self, project_id: str | None, service: str | None, types: tuple[str, ...],
                      since: int) -> AsyncIterator[dict]:
        rows, after = await self.ctx.store.call(event_store.listing_and_cursor, project_id, service, since)
        while True:
            for e in rows:
                if _matches(e, types):
                    yield e
            await self.ctx.clock.sleep(FOLLOW_POLL)
            rows, after = await self.ctx.store.call(event_store.page_after, project_id, service, after)
