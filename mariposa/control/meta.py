"""Project meta (rfd36 meta/): list, get, set, rm, increment and import, each one store
transaction audited with the caller. A change that alters what a service's instances are made
with (environment, command, entrypoint, tags) then makes a new version of the project that rolls
out like an update (``control/meta_rollout.py``)."""

from __future__ import annotations

import builtins

import trio

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.errors import BadRequest, Conflict, translate
from mariposa.manifest import ManifestError
from mariposa.store import meta as meta_store
from mariposa.store.rows import ProjectRow

MAX_STEP = 2**53  # an increment's N: JSON numbers past it lose digits


def _cas(cas: object) -> str | None:
    if cas is None or cas == "":
        return None
    if not isinstance(cas, str) or len(cas) > 64:
        raise BadRequest("'cas' must be the CAS id shown by 'meta list'")
    return cas


class Meta(Area):
    async def _changed(self, caller: Caller, project: ProjectRow, keys: builtins.list[str]) -> builtins.list[dict]:
        """Roll the change out to the services whose instances it changes (none when no
        service's fixed fields use the keys); the tasks queued are returned. Live mdata follows
        at once, without a task or a restart (mdata/keeper.py)."""
        from mariposa.control.meta_rollout import roll_out

        if keys:
            self.ctx.mdata.mark(project.id)
        return await roll_out(self.ctx, project, frozenset(keys), caller.author)

    @operation("meta.list", target="project")
    async def list(self, caller: Caller, project: str) -> builtins.list[dict]:
        p = await self._project(project)
        return await self.ctx.store.call(meta_store.listing, p.id)

    @operation("meta.get", target="project")
    async def get(self, caller: Caller, project: str, key: str) -> dict:
        p = await self._project(project)
        return await self.ctx.store.call(meta_store.get, p, meta_store.check_key(key))

    @operation("meta.set", target="project")
    async def set(self, caller: Caller, project: str, key: str, value: object, cas: object = None) -> dict:
        p = await self._project(project)
        key = meta_store.check_key(key)
        text = meta_store.check_value(key, value)
        row = await self.ctx.store.call(meta_store.set_value, p, key, text, _cas(cas), caller.author)
        return {**row, "tasks": await self._changed(caller, p, [key])}

    @operation("meta.remove", target="project")
    async def remove(self, caller: Caller, project: str, key: str, cas: object = None) -> dict:
        p = await self._project(project)
        key = meta_store.check_key(key)
        from mariposa.control.meta_rollout import current_use

        users = (await current_use(self.ctx, p)).get(key)
        if users:
            raise Conflict(f"meta {key} is used by {', '.join(sorted(users))} in project '{p.name}''s current "
                           "version: update the project without it first (nothing was removed)")
        result = await self.ctx.store.call(meta_store.remove, p, key, _cas(cas), caller.author)
        return {**result, "tasks": await self._changed(caller, p, [key])}

    @operation("meta.increment", target="project")
    async def increment(self, caller: Caller, project: str, key: str, by: object = 1) -> dict:
        """Atomic: the read and the write are one store transaction."""
        p = await self._project(project)
        key = meta_store.check_key(key)
        if isinstance(by, bool) or not isinstance(by, int) or abs(by) > MAX_STEP:
            raise BadRequest(f"'by' must be a whole number, not {by!r}")
        row = await self.ctx.store.call(meta_store.increment, p, key, by, caller.author)
        return {**row, "tasks": await self._changed(caller, p, [key])}

    @operation("meta.import", target="project")
    async def import_(self, caller: Caller, project: str, manifest: object, filename: str = "<meta>",
                      force: object = False) -> dict:
        """A meta manifest (a YAML map), in one transaction: keys already set are kept and
        listed in ``kept`` unless ``force``."""
        p = await self._project(project)
        if not isinstance(manifest, str):
            raise BadRequest("'manifest' (the meta manifest's text) is required")
        if not isinstance(force, bool):
            raise BadRequest("'force' must be true or false")
        from mariposa.meta_manifest import parse_meta

        try:
            data = await trio.to_thread.run_sync(parse_meta, manifest, filename)
        except ManifestError as exc:
            raise translate(exc) from None
        result = await self.ctx.store.call(meta_store.import_values, p, data, force, caller.author)
        return {**result, "tasks": await self._changed(caller, p, result["imported"])}
