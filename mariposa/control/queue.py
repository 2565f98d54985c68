"""The task queue as the operator sees it: list, read, and stop a task (``queue stop``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import trio

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.errors import BadRequest
from mariposa.store import tasks as task_store

TERMINAL = ("completed", "failed", "terminated")
# Changes wake a follower at once; this is only the safety net for a change nobody announced.
FOLLOW_RESYNC = 1.0
MAX_FOLLOWED = 1000


class Queue(Area):
    @operation("queue.list", target="project", each="project_id")
    async def list(self, caller: Caller, project: str | None = None, states: tuple[str, ...] | None = None,
                   limit: int = 200) -> list[dict]:
        project_id = await self._project_id(project)
        return [t.to_json() for t in await self.ctx.store.call(task_store.listing, project_id, states or None, limit)]

    @operation("queue.get", target="task", kind="task")
    async def get(self, caller: Caller, task: str) -> dict:
        return (await self.ctx.store.call(task_store.get, task)).to_json()

    @operation("queue.follow", each="project_id")
    async def follow(self, caller: Caller, tasks: tuple[str, ...]) -> AsyncIterator[dict]:
        """Each task as it is now, then again every time it changes, until all have ended
        (``--wait``): the CLI learns of an end as it happens, instead of polling for it."""
        if not tasks:
            raise BadRequest("'ids' names the tasks to follow: task ids or unique prefixes, comma-separated")
        if len(tasks) > MAX_FOLLOWED:
            raise BadRequest(f"at most {MAX_FOLLOWED} tasks can be followed at once, not {len(tasks)}")
        ids = await self.ctx.store.call(lambda db: [task_store.get(db, ref).id for ref in tasks])
        return self._follow(ids)

    async def _follow(self, ids: Sequence[str]) -> AsyncIterator[dict]:
        sent: dict[str, dict] = {}
        while True:
            changed = self.ctx.task_changes.next()  # before reading: a change meanwhile still wakes us
            rows = await self.ctx.store.call(lambda db: [task_store.get(db, i) for i in ids])
            for row in rows:
                now = row.to_json()
                if sent.get(row.id) != now:
                    sent[row.id] = now
                    yield now
            if all(row.state in TERMINAL for row in rows):
                return
            with trio.move_on_after(FOLLOW_RESYNC):
                await changed.wait()

    @operation("queue.stop", target="task", kind="task")
    async def stop(self, caller: Caller, task: str, project: str | None = None) -> dict:
        """End the task now and freeze what it was doing, so the reconciler does not undo it."""
        assert self.executor is not None, "the queue area needs the executor"
        stopped = await self.executor.stop(task, await self._project_id(project), caller.author)
        return stopped.to_json()
