"""Runs queued tasks, each in its own cancel scope inside the executor's nursery.

At most one task touches a service at a time (a project-wide task, such as delete, excludes all
of its project's service tasks). ``stop`` is the only way a task ends early: it cancels the scope,
records who asked and why, and freezes the service so the reconciler does not quietly undo it.
A newer task for the same target supersedes an active one the same way, without freezing.
Daemon shutdown cancels from outside: the task stays ``active`` in the store and is resumed
on the next start.
"""

from __future__ import annotations

import traceback

import attrs
import structlog
import trio

from mariposa.context import Context
from mariposa.converge.apply import TaskFailed, converge_service, delete_project
from mariposa.converge.backoff import Backoff
from mariposa.drivers.base import DriverError
from mariposa.errors import Conflict, StoreUnavailable
from mariposa.store import events as event_store
from mariposa.store import goal as goal_store
from mariposa.store import tasks as task_store
from mariposa.store.rows import TaskRow

log = structlog.get_logger()

# A task's outcome the store could not take (its disk full, its lock held elsewhere) is written
# again after 0.5 s, 1 s ... 5 s until it can: a task left `active` with no runner would keep its
# service from every later task until the daemon restarted.
FINISH_RETRY = Backoff(base=0.5, factor=2.0, cap=5.0)


@attrs.define
class Running:
    task: TaskRow
    scope: trio.CancelScope
    reason: str | None = None
    freeze: bool = False
    done: trio.Event = attrs.field(factory=trio.Event)


def _conflicts(a: TaskRow, b: TaskRow) -> bool:
    if a.project_id != b.project_id:
        return False
    return a.service is None or b.service is None or a.service == b.service


class Executor:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.running: dict[str, Running] = {}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        resumed = await self.ctx.store.call(task_store.resume_interrupted)
        for task in resumed:
            log.info("resuming task interrupted by a restart", task=task.id[:12], kind=task.kind, target=task.target)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    await self._dispatch(nursery)
                except StoreUnavailable as exc:  # the next round (at most 2 s away) tries again
                    log.warning("queue not read: store unavailable", error=exc.message)
                await self.ctx.queue_wakeup.wait(timeout=2.0)

    async def _dispatch(self, nursery: trio.Nursery) -> None:
        for task in await self.ctx.store.call(task_store.queued):
            blockers = [r for r in self.running.values() if _conflicts(r.task, task)]
            if blockers:
                for r in blockers:
                    same_target = r.task.service == task.service or task.kind == "delete"
                    if same_target and r.reason is None and r.task.created <= task.created:
                        r.reason = f"superseded by task {task.id[:12]}"
                        r.scope.cancel()
                continue
            running = Running(task, trio.CancelScope())
            await self.ctx.store.call(task_store.mark_active, task.id)
            self.running[task.id] = running
            nursery.start_soon(self._run, running)

    async def _run(self, running: Running) -> None:
        task = running.task
        structlog.contextvars.bind_contextvars(task=task.id[:12], project=task.project_name, service=task.service)
        state, message = "completed", None
        try:
            with running.scope:
                message = await self._handler(task)
            if running.scope.cancelled_caught:
                state, message = "terminated", running.reason
        except (TaskFailed, DriverError) as exc:
            state, message = "failed", str(exc)
        except StoreUnavailable as exc:
            state, message = "failed", exc.message
        except Exception as exc:  # a bug: fail the task, keep the daemon
            log.error("task crashed", error=repr(exc), traceback=traceback.format_exc())
            state, message = "failed", f"internal error: {exc!r}"
        finally:
            self.running.pop(task.id, None)
            self.ctx.wake_queue()
        await self._record_finish(task, state, message, running.freeze)
        running.done.set()
        self.ctx.task_changes.set()
        log.info("task finished", kind=task.kind, state=state, message=message)
        self.ctx.wake_reconciler()
        self.ctx.wake_health()

    async def _record_finish(self, task: TaskRow, state: str, message: str | None, freeze: bool) -> None:
        """Write the outcome, shielded from cancellation; while the store cannot take it, again
        after a back-off (a shutdown ends that wait: the next start resumes the task)."""
        attempt = 0
        while True:
            try:
                with trio.CancelScope(shield=True):
                    await self.ctx.store.call(self._finish, task, state, message, freeze)
                return
            except StoreUnavailable as exc:
                attempt += 1
                log.warning("task outcome not recorded yet: store unavailable", state=state, error=exc.message,
                            retry_in=FINISH_RETRY.delay(attempt))
            await trio.sleep(FINISH_RETRY.delay(attempt))

    @staticmethod
    def _finish(db, task: TaskRow, state: str, message: str | None, freeze: bool) -> None:
        task_store.finish(db, task.id, state, message)
        if freeze and task.service:
            goal_store.freeze_service(db, task.project_id, task.service, f"task {task.id[:12]} stopped: {message}")
        event_store.record(
            db, f"task.{state}", f"{task.kind} {task.target} {state}" + (f": {message}" if message else ""),
            project_id=task.project_id, service=task.service, task_id=task.id,
        )

    async def _handler(self, task: TaskRow) -> str:
        async def progress(update: dict) -> None:
            await self.ctx.store.call(task_store.set_progress, task.id, update)
            self.ctx.task_changes.set()

        if task.kind == "delete":
            return await delete_project(self.ctx, task, progress)
        return await converge_service(self.ctx, task, progress)

    async def stop(self, task_ref: str, project_id: str | None, author: str | None) -> TaskRow:
        """``queue stop``: end the task now and freeze what it was doing."""
        task = await self.ctx.store.call(task_store.get, task_ref, project_id)
        reason = f"stopped by {author}" if author else "stopped by the operator"
        running = self.running.get(task.id)
        if running is not None:
            running.reason, running.freeze = reason, True
            running.scope.cancel()
            with trio.fail_after(30):
                await running.done.wait()
            return await self.ctx.store.call(task_store.get, task.id)
        if task.state != "queued":
            raise Conflict(f"task {task.id[:12]} is already {task.state}")
        stopped = await self.ctx.store.call(self._stop_queued, task, reason)
        self.ctx.task_changes.set()
        return stopped

    @staticmethod
    def _stop_queued(db, task: TaskRow, reason: str) -> TaskRow:
        Executor._finish(db, task, "terminated", reason, True)
        return task_store.get(db, task.id)
