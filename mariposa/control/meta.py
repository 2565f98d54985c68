"""Project meta (rfd36 meta/): list, get, set, rm, increment and import, each one store
transaction audited with the caller. A change that alters what a service's instances are made
with (environment, command, entrypoint, tags) then makes a new version of the project that rolls
out like an update (``control/meta_rollout.py``); one that changes a key an event service
watches (``on: {meta: [...]}``) queues its run in the same transaction (``runs/on_meta.py``)."""

from __future__ import annotations

import builtins

import trio

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.errors import BadRequest, Conflict, translate
from mariposa.manifest import ManifestError
from mariposa.runs import on_meta
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
    async def _write(self, caller: Caller, project: ProjectRow, fn) -> tuple[dict, builtins.list[str]]:
        """``fn`` (a meta store function of ``db``) with the event runs its change queues, in one
        store transaction; its result and the runs' ids."""
        watching = await on_meta.watchers(self.ctx, project)
        result, runs = await self.ctx.store.call(on_meta.with_runs(fn, project.id, watching, caller.author))
        if runs:
            self.ctx.wake_scheduler()
        return result, runs

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
        cas = _cas(cas)
        row, runs = await self._write(caller, p, lambda db: meta_store.set_value(db, p, key, text, cas, caller.author))
        return {**row, "tasks": await self._changed(caller, p, [key]), "runs": runs}

    @operation("meta.remove", target="project")
    async def remove(self, caller: Caller, project: str, key: str, cas: object = None) -> dict:
        p = await self._project(project)
        key = meta_store.check_key(key)
        from mariposa.control.meta_rollout import current_use

        users = (await current_use(self.ctx, p)).get(key)
        if users:
            raise Conflict(f"meta {key} is used by {', '.join(sorted(users))} in project '{p.name}''s current "
                           "version: update the project without it first (nothing was removed)")
        cas = _cas(cas)
        result, runs = await self._write(caller, p, lambda db: meta_store.remove(db, p, key, cas, caller.author))
        return {**result, "tasks": await self._changed(caller, p, [key]), "runs": runs}

    @operation("meta.increment", target="project")
    async def increment(self, caller: Caller, project: str, key: str, by: object = 1) -> dict:
        """Atomic: the read and the write are one store transaction."""
        p = await self._project(project)
        key = meta_store.check_key(key)
        if isinstance(by, bool) or not isinstance(by, int) or abs(by) > MAX_STEP:
            raise BadRequest(f"'by' must be a whole number, not {by!r}")
        row, runs = await self._write(caller, p, lambda db: meta_store.increment(db, p, key, by, caller.author))
        return {**row, "tasks": await self._changed(caller, p, [key]), "runs": runs}

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
        result, runs = await self._write(
            caller, p, lambda db: meta_store.import_values(db, p, data, force, caller.author))
        return {**result, "tasks": await self._changed(caller, p, result["imported"]), "runs": runs}
