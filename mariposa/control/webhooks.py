"""A project's webhook deliveries (mariposa/webhooks/): list them, queue one again.

A redelivery keeps the delivery's id and body: the id is what a receiver drops repeats by, so a
receiver that did process it drops it again, and one that lost it processes it. (To announce an
event afresh, under a new id, is not a redelivery.) The secret that signs a delivery is named
in the listing, never shown.
"""

from __future__ import annotations

import builtins

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.store import webhooks as webhook_store

MAX_LIMIT = 10_000


class Webhooks(Area):
    @operation("webhook.deliveries", target="project")
    async def deliveries(self, caller: Caller, project: str, failed: bool = False,
                         limit: int = 100) -> builtins.list[dict]:
        """The project's newest deliveries, newest first; ``failed``: only those given up or dropped."""
        p = await self._project(project)
        states = ("failed", "dropped") if failed else ()
        limit = max(1, min(int(limit), MAX_LIMIT))
        rows = await self.ctx.store.call(webhook_store.listing, p.id, states, limit)
        return [r.to_json() for r in rows]

    @operation("webhook.redeliver", target="project")
    async def redeliver(self, caller: Caller, project: str, delivery: str) -> dict:
        """Queue delivery ``delivery`` (an id or unique prefix) again: same id, due now."""
        p = await self._project(project)
        row = await self.ctx.store.call(webhook_store.redeliver, p.id, str(delivery), caller.author)
        if self.ctx.webhooks is not None:
            self.ctx.webhooks.wake(row.url)
        return row.to_json()
