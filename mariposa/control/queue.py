"""The task queue as the operator sees it: list, read, and stop a task (``queue stop``)."""

from __future__ import annotations

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.store import tasks as task_store


class Queue(Area):
    @operation("queue.list", target="project")
    async def list(self, caller: Caller, project: str | None = None, states: tuple[str, ...] | None = None,
                   limit: int = 200) -> list[dict]:
        project_id = await self._project_id(project)
        return [t.to_json() for t in await self.ctx.store.call(task_store.listing, project_id, states or None, limit)]

    @operation("queue.get", target="task")
    async def get(self, caller: Caller, task: str) -> dict:
        return (await self.ctx.store.call(task_store.get, task)).to_json()

    @operation("queue.stop", target="task")
    async def stop(self, caller: Caller, task: str, project: str | None = None) -> dict:
        """End the task now and freeze what it was doing, so the reconciler does not undo it."""
        assert self.executor is not None, "the queue area needs the executor"
        stopped = await self.executor.stop(task, await self._project_id(project), caller.author)
        return stopped.to_json()
