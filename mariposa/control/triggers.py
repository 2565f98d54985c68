"""A project's public triggers (mariposa/triggers/): list them (URLs masked), reveal the tokens
not shown yet (once), rotate one. The POST on a trigger's URL is not here: it is the listener's
(triggers/app.py), which calls the services' and runs' operations as ``trigger:NAME``.

A token leaves the daemon only in the answer of ``reveal`` or ``rotate``, wrapped ``Revealed``
(the redaction point scrubs it from everything else once it has been seen: ``remember``).
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.control.redact import Revealed, remember
from mariposa.store import triggers as trigger_store
from mariposa.store.triggers import Fresh, TriggerRow
from mariposa.triggers import tokens

if TYPE_CHECKING:
    from mariposa.context import Context
    from mariposa.model import ProjectSpec


async def fresh_tokens(ctx: Context, spec: ProjectSpec) -> Fresh:
    """A fresh token for every trigger of a version about to be made, hashed and encrypted; the
    store keeps those of triggers new in it (store/triggers.py ``sync``). No triggers: nothing,
    and no key file is made."""
    out = {}
    for key in tokens.triggers_of(spec):
        token = tokens.new_token()
        out[key] = (tokens.token_hash(token), await ctx.vault.seal(token.encode()))
    return out


def _json(row: TriggerRow, base: str | None, token: str | None = None, revealed: bool | None = None) -> dict:
    """A trigger as listings show it: its URL (and path) masked, or in full with ``token``."""
    full = tokens.url(base, token) if token else None
    return {"name": row.name, "service": row.service, "action": row.action, "scale": row.scale,
            "path": Revealed(tokens.path(token)) if token else tokens.path(None),
            "url": Revealed(full) if full else tokens.url(base, None),
            "revealed": row.pending is None if revealed is None else revealed,
            "created": row.created, "rotated": row.rotated}


class Triggers(Area):
    @operation("trigger.list", target="project")
    async def list(self, caller: Caller, project: str) -> builtins.list[dict]:
        """Every trigger with its URL masked, and whether its token was shown already."""
        p = await self._project(project)
        return [_json(r, self.ctx.trigger_base) for r in await self.ctx.store.call(trigger_store.listing, p.id)]

    @operation("trigger.reveal", target="project")
    async def reveal(self, caller: Caller, project: str) -> builtins.list[dict]:
        """The listing, with the URL in full for each trigger whose token was not shown yet; each
        is shown this once (after that, only ``rotate`` shows a token: a new one)."""
        p = await self._project(project)
        rows = await self.ctx.store.call(trigger_store.listing, p.id)
        opened = {r.name: (await self.ctx.vault.unseal(r.pending)).decode() for r in rows if r.pending}
        cleared = await self.ctx.store.call(
            trigger_store.revealed, p.id, {r.name: r.pending for r in rows if r.pending})
        out = []
        for row in rows:
            token = opened.get(row.name) if row.name in cleared else None
            if token:
                remember(token)
            out.append(_json(row, self.ctx.trigger_base, token, revealed=True))
        return out

    @operation("trigger.rotate", target="project")
    async def rotate(self, caller: Caller, project: str, name: str) -> dict:
        """A new token for trigger ``name``: the old URL stops working when this returns; the
        new one is in the answer, and nowhere else."""
        p = await self._project(project)
        token = tokens.new_token()
        row = await self.ctx.store.call(trigger_store.rotate, p.id, str(name), tokens.token_hash(token),
                                        caller.author)
        remember(token)
        return _json(row, self.ctx.trigger_base, token, revealed=True)
