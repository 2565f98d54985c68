"""Carrying plans out on a driver, round after round, until the planner has nothing left to do.

Each round re-reads the goal and takes a fresh inventory, so a scale changed mid-task, an
instance killed mid-task or a daemon restart mid-task all just become inputs to the next round.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable

import structlog
import trio

from mariposa.context import Context
from mariposa.converge.plan import plan
from mariposa.drivers.base import Driver, DriverError
from mariposa.model import Create, CreateRequest, Instance, Plan, Remove, ServiceGoal, Start, Stop
from mariposa.store import events as event_store
from mariposa.store import goal as goal_store
from mariposa.store.db import new_id
from mariposa.store.rows import TaskRow

log = structlog.get_logger()

# An instance started this many times in one task that still is not running is crash-looping.
MAX_STARTS = 3
MAX_ROUNDS = 10_000

Progress = Callable[[dict], Awaitable[None]]


class TaskFailed(Exception):
    """The task cannot reach its goal; the message says why, for the user."""


async def _service_instances(driver: Driver, project_id: str, service: str) -> list[Instance]:
    return [i for i in await driver.inventory(project_id) if i.service == service]


async def converge_service(ctx: Context, task: TaskRow, progress: Progress) -> str:
    surge = int(task.params.get("rolling", 1))
    attempts: collections.Counter[str] = collections.Counter()
    done = 0
    goal: ServiceGoal | None = None
    for _ in range(MAX_ROUNDS):
        goal = await ctx.goals.service_goal(task.project_id, task.service)
        driver = ctx.driver_for(goal.spec.compute_type if goal else "docker")
        actual = await _service_instances(driver, task.project_id, task.service)
        steps = plan(goal, actual, surge=surge)
        if not steps:
            running = sum(1 for i in actual if i.running)
            await progress({"done": done, "todo": 0, "step": "converged", "running": running})
            break
        _refuse_crash_loops(steps, attempts, task.service)
        await progress({"done": done, "todo": len(steps.steps), "step": steps.summary(), "running": sum(i.running for i in actual)})
        await execute(ctx, driver, goal, task, steps, attempts)
        done += len(steps.steps)
    else:
        raise TaskFailed(f"{task.service} did not converge after {MAX_ROUNDS} rounds")
    if goal is None:
        await ctx.store.call(goal_store.forget_service, task.project_id, task.service)
        return f"{task.service} removed"
    if goal.desired == "stopped":
        return f"{task.service} stopped"
    return f"{task.service}: {goal.scale} running"


def _refuse_crash_loops(steps: Plan, attempts: collections.Counter, service: str) -> None:
    for step in steps.steps:
        if isinstance(step, Start) and attempts[step.instance.id] >= MAX_STARTS:
            inst = step.instance
            code = f"exit code {inst.exit_code}" if inst.exit_code is not None else f"state {inst.state}"
            raise TaskFailed(
                f"instance {inst.name} of {service} stops right after starting ({code}); "
                f"gave up after {MAX_STARTS} starts"
            )


async def execute(
    ctx: Context, driver: Driver, goal: ServiceGoal | None, task: TaskRow, steps: Plan, attempts: collections.Counter
) -> None:
    """Removals and stops first (they only ever take away what is surplus or unwanted), then
    starts and creates, each phase in parallel up to ``ctx.parallelism``."""
    limiter = trio.CapacityLimiter(ctx.parallelism)
    errors: list[str] = []
    timeout = goal.spec.stop_timeout if goal else None

    async def one(step) -> None:
        async with limiter:
            try:
                await _run_step(ctx, driver, goal, task, step, attempts, timeout)
            except DriverError as exc:
                errors.append(str(exc))

    for phase in ((Remove, Stop), (Start, Create)):
        async with trio.open_nursery() as nursery:
            for step in steps.steps:
                if isinstance(step, phase):
                    nursery.start_soon(one, step)
        if errors:
            failed = len(errors)
            raise TaskFailed(errors[0] if failed == 1 else f"{errors[0]} (and {failed - 1} more failures)")


async def _run_step(
    ctx: Context, driver: Driver, goal: ServiceGoal | None, task: TaskRow, step, attempts: collections.Counter,
    timeout: int | None,
) -> None:
    if isinstance(step, Create):
        assert goal is not None
        req = CreateRequest(
            instance_id=new_id(), owner=ctx.owner, project_id=goal.project_id, project_name=goal.project_name,
            version_id=goal.version_id, spec=goal.spec,
        )
        inst = await driver.create(req)
        attempts[inst.id] += 1
        await _event(ctx, task, inst, "instance.create", f"created {inst.name}")
    elif isinstance(step, Start):
        attempts[step.instance.id] += 1
        await driver.start(step.instance)
        await _event(ctx, task, step.instance, "instance.start", f"started {step.instance.name} ({step.reason})")
    elif isinstance(step, Stop):
        await driver.stop(step.instance, timeout)
        await _event(ctx, task, step.instance, "instance.stop", f"stopped {step.instance.name}")
    elif isinstance(step, Remove):
        if step.instance.running:
            await driver.stop(step.instance, timeout)
        await driver.remove(step.instance)
        await _event(ctx, task, step.instance, "instance.remove", f"removed {step.instance.name} ({step.reason})")


async def _event(ctx: Context, task: TaskRow, inst: Instance, type: str, message: str) -> None:
    log.info(message, project=task.project_name, service=inst.service, instance=inst.id[:12], task=task.id[:12])
    await ctx.store.call(
        lambda db: event_store.record(
            db, type, message, project_id=inst.project_id, service=inst.service, instance=inst.id, task_id=task.id
        )
    )


async def delete_project(ctx: Context, task: TaskRow, progress: Progress) -> str:
    """Remove every instance of the project on every driver, its network, then its goal state."""
    removed = 0
    for driver in ctx.drivers.values():
        while instances := await driver.inventory(task.project_id):
            await progress({"done": removed, "todo": len(instances), "step": f"remove {len(instances)}"})
            await execute(ctx, driver, None, task, Plan(tuple(Remove(i, "project deleted") for i in instances)),
                          collections.Counter())
            removed += len(instances)
        await driver.remove_network(task.project_id)
    await ctx.store.call(goal_store.forget_project, task.project_id)
    await progress({"done": removed, "todo": 0, "step": "deleted"})
    return f"project {task.project_name} deleted ({removed} instances removed)"
