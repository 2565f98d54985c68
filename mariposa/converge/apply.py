"""Carrying plans out on a driver, round after round, until the planner has nothing left to do.

Each round re-reads the goal and takes a fresh inventory, so a scale changed mid-task, an
instance killed mid-task or a daemon restart mid-task all just become inputs to the next round.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

import attrs
import structlog
import trio

from mariposa.context import Context
from mariposa.converge import depends, render
from mariposa.converge.plan import from_nothing, plan
from mariposa.converge.supervise import merge
from mariposa.drivers.base import Driver, DriverError
from mariposa.errors import MariposaError, TaskFailed
from mariposa.model import (
    Create,
    CreateRequest,
    FailRollout,
    GiveUp,
    Instance,
    InstanceState,
    NoteReplacement,
    Plan,
    Remove,
    Rollout,
    ServiceGoal,
    Start,
    Stop,
    Wait,
)
from mariposa.store import events as event_store
from mariposa.store import goal as goal_store
from mariposa.store import instances as instance_store
from mariposa.store import tasks as task_store
from mariposa.store.db import new_id
from mariposa.store.rows import TaskRow
from mariposa.store.secrets import PROJECT
from mariposa.vault.delivery import DeliveryError

log = structlog.get_logger()

MAX_ROUNDS = 100_000
WAIT_SLICE = 1.0  # while backing off, look again this often: goals and instances change
# A service waiting for its dependencies looks again at their runtime events and health changes
# (at least every WAIT_SLICE), this long after the first of a burst.
DEPENDENCY_SETTLE = 0.1

Progress = Callable[[dict], Awaitable[None]]


async def _service_instances(driver: Driver, project_id: str, service: str) -> list[Instance]:
    return [i for i in await driver.inventory(project_id) if i.service == service]


async def _left_behind(ctx: Context, project_id: str, service: str) -> tuple[Driver, list[Instance]]:
    """A removed service has no goal to name its compute type, so its instances name their
    drivers. One driver per round; the next round finds the next one still holding some."""
    found = [i for i in await ctx.inventory(project_id) if i.service == service]
    if not found:
        # Nothing left anywhere: the plan is empty and no driver is called.
        return next(iter(ctx.drivers.values())), []
    driver = ctx.driver_for(found[0].compute_type)
    return driver, [i for i in found if i.compute_type == found[0].compute_type]


def unnoted_exits(actual: list[Instance], records: dict) -> list[Instance]:
    """The exited instances whose exit is not recorded yet."""
    fresh = []
    for inst in actual:
        if inst.running or inst.state != InstanceState.EXITED:
            continue
        rec = records.get(inst.id)
        if rec is not None and (rec["retired"] or instance_store.exit_noted(rec)):
            continue
        fresh.append(inst)
    return fresh


def note_exits(db, fresh: list[Instance]) -> None:
    """Record exits (once each: ``note_exit`` is idempotent): the restart back-off counts from
    here. The reconciler notes what it finds when it queues the repair, in the same transaction,
    so the task that restarts the instance need not note and read again."""
    for inst in fresh:
        if instance_store.note_exit(db, inst.id, inst.project_id, inst.service, inst.exit_code):
            event_store.record(db, "instance.exit", f"{inst.name} exited (exit code {inst.exit_code})",
                               project_id=inst.project_id, service=inst.service, instance=inst.id)


async def _observe_exits(ctx: Context, actual: list[Instance], records: dict) -> bool:
    """Record each exit the first time we see it; True if there was one (records changed)."""
    fresh = unnoted_exits(actual, records)
    if fresh:
        await ctx.store.call(note_exits, fresh)
    return bool(fresh)


async def converge_service(ctx: Context, task: TaskRow, progress: Progress) -> str:
    service = task.service
    assert service is not None  # every task but a project's delete names its service
    if ctx.cluster == "swarm":
        from mariposa.swarm.converge import converge_on_swarm, on_swarm

        seen, _row, _records = await ctx.goals.service_view(task.project_id, service)
        if on_swarm(ctx, seen) and (seen is not None or await _on_swarm_left(ctx, task.project_id, service)):
            return await converge_on_swarm(ctx, task, progress)
    surge = int(task.params.get("rolling", 1))
    done = 0
    goal: ServiceGoal | None = None
    created: set[str] = set()  # instances this task made: if one fails during a rollout, it stops
    last_progress = ctx.clock.now()
    replace = frozenset(task.params.get("replace", ()))
    announced: str | None = None  # the dependency wait last recorded as an event
    for _ in range(MAX_ROUNDS):
        # taken before looking: a dependency that starts or turns healthy after the look still wakes the wait
        changes = (ctx.runtime_changed.next(), ctx.health_changes.next())
        goal, _row, records = await ctx.goals.service_view(task.project_id, service)
        if goal is not None:
            driver = ctx.driver_for(goal.spec.compute_type)
            raw = await _service_instances(driver, task.project_id, service)
        else:
            driver, raw = await _left_behind(ctx, task.project_id, service)
        if await _observe_exits(ctx, raw, records):
            goal, _row, records = await ctx.goals.service_view(task.project_id, service)
        now = ctx.clock.now()
        actual = merge(raw, records, now)
        if goal is not None and task.kind == "reprovision" and "replace" not in task.params and _selects(task.params):
            replace = frozenset(select_for_reprovision(actual, goal, task.params))
            await ctx.store.call(task_store.update_params, task.id, {**task.params, "replace": sorted(replace)})
            task = attrs.evolve(task, params={**task.params, "replace": sorted(replace)})
        live = frozenset(i.id for i in actual)
        waiting = None
        if goal is not None and goal.spec.depends_on and goal.desired == "running" and from_nothing(actual):
            waiting = await depends.waiting_for(ctx, goal)
        steps = plan(goal, actual, surge=surge, now=now, replace=replace & live,
                     rollout=Rollout(frozenset(created), last_progress), waiting=waiting)
        running = sum(1 for i in actual if i.running and not i.retired)
        if not steps:
            await progress({"done": done, "todo": 0, "step": "converged", "running": running})
            break
        todo = sum(1 for s in steps.steps if not isinstance(s, (Wait, NoteReplacement)))
        await progress({"done": done, "todo": todo, "step": steps.summary(), "running": running,
                        **({"waiting": waiting} if waiting else {})})
        if waiting and waiting != announced:
            announced = waiting
            await ctx.store.call(functools.partial(event_store.record, type="service.waiting",
                                                   message=f"{service} {waiting}", project_id=task.project_id,
                                                   service=service, task_id=task.id))
        if steps.only_waiting:
            until = min(s.until for s in steps.steps if isinstance(s, Wait))
            delay = max(0.05, min(WAIT_SLICE, until - now))
            if waiting:
                await _first_of(changes, delay)
                await trio.sleep(DEPENDENCY_SETTLE)  # a burst of events (a dependency's scale-up) is one look
            else:
                await ctx.clock.sleep(delay)
            continue
        await execute(ctx, driver, goal, task, steps, created)
        done += todo
        last_progress = ctx.clock.now()
    else:
        raise TaskFailed(f"{task.service} did not converge after {MAX_ROUNDS} rounds")
    if goal is None:
        await ctx.store.call(goal_store.forget_service, task.project_id, task.service)
        return f"{task.service} removed"
    if goal.desired == "stopped":
        return f"{task.service} stopped"
    kept = sum(1 for i in actual if i.running and not i.retired and i.spec_hash != goal.spec.spec_hash)
    return f"{task.service}: {goal.scale} running" + (f" ({kept} still on an older version)" if kept else "")


async def _on_swarm_left(ctx: Context, project_id: str, service: str) -> bool:
    """A removed service is the Swarm's when a Swarm service of it is left (or no instance
    anywhere else is: then either path has nothing to do)."""
    from mariposa.swarm.converge import observe

    driver = ctx.drivers["docker"]
    services, _ = await driver.observe(project_id)  # type: ignore[attr-defined]
    if observe(services, [], project_id, service):
        return True
    return not any(i.service == service and i.run_id for i in await ctx.inventory(project_id))


async def _first_of(events: tuple[trio.Event, ...], timeout: float) -> None:
    """Until one of ``events`` is set, or ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:
            for event in events:
                async def one(event: trio.Event = event) -> None:
                    await event.wait()
                    nursery.cancel_scope.cancel()
                nursery.start_soon(one)


def _selects(params: dict) -> bool:
    return bool(params.get("explicit") or params.get("count"))


def select_for_reprovision(actual: list[Instance], goal: ServiceGoal, params: dict) -> list[str]:
    """``services/triton-cli.md``'s order: running instances only (not stopped, not in
    transition), filtered; other versions first, the current version last, oldest first;
    then ``count``. Without filters, "the rest" are the instances not on the current version,
    or every instance when all are current (a restart by replacement)."""
    candidates = [i for i in actual if i.running and not i.retired and not i.transitioning]
    if params.get("version"):
        candidates = [i for i in candidates if i.version_id == params["version"]]
    if params.get("image"):
        candidates = [i for i in candidates if i.image == params["image"]]
    if params.get("instance"):
        ref = params["instance"]
        candidates = [i for i in candidates
                      if ref in (i.id, i.name) or i.id.startswith(ref) or i.runtime_id.startswith(ref)]
    current = goal.spec.spec_hash
    ordered = sorted(candidates, key=lambda i: (i.spec_hash == current, i.created, i.id))
    filtered = any(params.get(k) for k in ("version", "image", "instance"))
    if not filtered and any(i.spec_hash != current for i in ordered):
        ordered = [i for i in ordered if i.spec_hash != current]
    count = params.get("count")
    return [i.id for i in (ordered[: int(count)] if count else ordered)]


async def execute(
    ctx: Context, driver: Driver, goal: ServiceGoal | None, task: TaskRow, steps: Plan,
    created: set[str] | None = None,
) -> None:
    """Every step of the plan, none left out: give-ups and failed rollouts first (they end the
    task), then the replacement streak, then removals and stops (they only ever take away what
    is surplus or unwanted), then starts and creates, each phase in parallel up to
    ``ctx.parallelism``. Waits are the task loop's business."""
    for step in steps.steps:
        if isinstance(step, GiveUp):
            await _give_up(ctx, driver, goal, task, step)
        elif isinstance(step, FailRollout):
            assert goal is not None
            await _fail_rollout(ctx, driver, goal, task, step)
    for step in steps.steps:
        if isinstance(step, NoteReplacement):
            assert goal is not None
            await ctx.store.call(goal_store.note_replacement, goal.project_id, goal.spec.name, step.count, step.at)
    limiter = trio.CapacityLimiter(ctx.parallelism)
    errors: list[str] = []
    timeout = goal.spec.stop_timeout if goal else None
    preserve = goal.spec.preserve_stopped if goal else "no"

    async def one(step) -> None:
        async with limiter:
            try:
                made = await _run_step(ctx, driver, goal, task, step, timeout, preserve)
                if made and created is not None:
                    created.add(made)
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


def _keeps(preserve: str, failed: bool) -> bool:
    """``stop.preservestopped``: keep a stopped instance for inspection, or delete it."""
    return preserve == "always" or (preserve == "on-failure" and failed)


async def _take_out(ctx: Context, driver: Driver, inst: Instance, reason: str, keep: bool, timeout: int | None) -> None:
    """Mark, then stop: retired first when it is kept, so a crash in between leaves a retired
    instance (which the planner stops), never a stopped one the restart policy would bring back;
    marked as being removed otherwise, so a crash between the stop and the delete leaves one the
    planner finishes removing, never a stopped one kept as a failure."""
    if keep:
        await ctx.store.call(instance_store.retire, inst.id, inst.project_id, inst.service, reason)
    else:
        await ctx.store.call(instance_store.mark_removing, inst.id, inst.project_id, inst.service)
    ctx.names_changed.set()  # out of its service's name before it stops
    if inst.running:
        await driver.stop(inst, timeout)
    if not keep:
        await driver.remove(inst)
        await ctx.store.call(instance_store.forget, [inst.id])
        await ctx.discard_instance_files(inst.project_name, inst.id)


async def _fail_rollout(ctx: Context, driver: Driver, goal: ServiceGoal, task: TaskRow, step: FailRollout) -> None:
    """The old instances keep serving; the failed new ones go, the service is frozen with the
    reason (so nothing retries a bad version behind the operator's back) and the task fails."""
    for inst in step.failed:
        await _take_out(ctx, driver, inst, "failed during a rollout", _keeps(goal.spec.preserve_stopped, True),
                        goal.spec.stop_timeout)
    await ctx.store.call(goal_store.freeze_service, goal.project_id, goal.spec.name, step.reason)
    await ctx.store.call(lambda db: event_store.record(
        db, "rollout.failed", f"{goal.spec.name}: {step.reason}", project_id=goal.project_id, service=goal.spec.name,
        task_id=task.id))
    raise TaskFailed(step.reason)


async def _give_up(ctx: Context, driver: Driver, goal: ServiceGoal | None, task: TaskRow, step: GiveUp) -> None:
    inst = step.instance
    preserve = goal.spec.preserve_stopped if goal else "no"
    await _take_out(ctx, driver, inst, step.reason, _keeps(preserve, inst.exit_code not in (0, None)), None)
    await ctx.store.call(goal_store.freeze_service, inst.project_id, inst.service, f"down: {step.reason}")
    await _event(ctx, task, inst, "service.down", f"{inst.service} is down: {step.reason}")
    raise TaskFailed(step.reason)


async def _run_step(
    ctx: Context, driver: Driver, goal: ServiceGoal | None, task: TaskRow, step, timeout: int | None, preserve: str
) -> str | None:
    """Carry out one step; returns the id of an instance it created."""
    if isinstance(step, Create):
        assert goal is not None
        inst = await make_instance(ctx, goal, new_id())
        await ctx.store.call(instance_store.note_start, inst.id, inst.project_id, inst.service, False)
        await _event(ctx, task, inst, "instance.create", f"created {inst.name}")
        return inst.id
    elif isinstance(step, Start):
        inst = step.instance
        restart = inst.state != InstanceState.CREATING
        if goal is not None and goal.spec.secrets and goal.version_id == inst.version_id:
            # the files live on a tmpfs: after a host reboot they are gone, and the mount needs them
            await _deliver_secrets(ctx, goal, inst.id)
        if goal is not None and goal.spec.mdata:
            await ctx.mdata.deliver(goal, inst.id, inst.name)  # likewise: the mount needs its directory
        await ctx.store.call(instance_store.note_start, inst.id, inst.project_id, inst.service, restart)
        await driver.start(inst)
        what = (f"restarted {inst.name} (restart {inst.restarts + 1}, {step.reason})" if restart
                else f"started {inst.name}")
        await _event(ctx, task, inst, "instance.start", what)
    elif isinstance(step, Stop):
        await driver.stop(step.instance, timeout)
        await _event(ctx, task, step.instance, "instance.stop", f"stopped {step.instance.name} ({step.reason})")
    elif isinstance(step, Remove):
        inst = step.instance
        keep = not step.purge and _keeps(preserve, step.failed)
        await _take_out(ctx, driver, inst, step.reason, keep, timeout)
        verb = "retired (kept stopped)" if keep else "removed"
        await _event(ctx, task, inst, "instance.remove", f"{verb} {inst.name} ({step.reason})")
    return None


async def make_instance(ctx: Context, goal: ServiceGoal, instance_id: str, *, run_id: str | None = None,
                        env: Sequence[tuple[str, str]] = ()) -> Instance:
    """Make and start one instance of the goal's service: templates rendered, secret and mdata
    files delivered, labelled (with ``run_id``, a run's: mariposa/runs/). ``env`` (a manual
    run's ``--env``) is set over the environment as given, never rendered. Nothing is left
    behind when it fails; replayed with the same ``instance_id`` it finds the one made."""
    driver = ctx.driver_for(goal.spec.compute_type)
    spec = goal.spec
    name = f"{goal.project_name}-{spec.name}-{instance_id[:8]}"
    rendering = await render.for_instance(ctx.store, goal, instance_id, name) if (
        render.templated(spec) or spec.mdata) else None
    if rendering is not None and render.templated(spec):
        meta, values = rendering
        secrets = {}
        if names := render.env_secrets(spec):
            found = await ctx.vault.get_many(PROJECT, goal.project_name, names)
            secrets = {k: v.decode("utf-8", "replace") for k, v in found.items()}
        spec = render.render_spec(spec, values, meta, secrets)
    if env:
        spec = attrs.evolve(spec, environment=tuple({**dict(spec.environment), **dict(env)}.items()))
    try:
        secrets_dir = await _deliver_secrets(ctx, goal, instance_id)
        mdata_dir = await ctx.mdata.deliver(goal, instance_id, name, rendering)
        req = CreateRequest(
            instance_id=instance_id, owner=ctx.owner, project_id=goal.project_id, project_name=goal.project_name,
            version_id=goal.version_id, spec=spec, created=ctx.clock.now(), secrets_dir=secrets_dir,
            mdata_dir=mdata_dir, goal_hash=goal.spec.spec_hash, run_id=run_id,
        )
        inst = await driver.create(req)
    except BaseException:
        with trio.CancelScope(shield=True):
            await ctx.discard_instance_files(goal.project_name, instance_id)
        raise
    if mdata_dir is not None:
        ctx.mdata.mark(goal.project_id)  # a meta change while it was made: the refresh then missed it
    return inst


async def _deliver_secrets(ctx: Context, goal: ServiceGoal, instance_id: str) -> str | None:
    """The instance's secret files, written before it exists (vault/delivery.py); the directory
    to mount, None for a service without secrets. A secret removed since the version was made
    fails the step with its name (never an empty file)."""
    names = list(goal.spec.secrets)
    if not names:
        return None
    try:
        values = await ctx.vault.get_many(PROJECT, goal.project_name, names)
    except MariposaError as exc:  # the key file is missing or wrong
        raise DriverError(f"{goal.spec.name}: secrets: {exc.message}") from None
    missing = [n for n in names if n not in values]
    if missing:
        raise DriverError(f"{goal.spec.name}: secret{'s' if len(missing) > 1 else ''} {', '.join(missing)} of "
                          f"project {goal.project_name} not set (mariposa -j {goal.project_name} secret set NAME)")
    try:
        return await trio.to_thread.run_sync(
            ctx.secret_files.deliver, goal.project_name, instance_id, values, goal.spec.user)
    except (DeliveryError, OSError) as exc:
        raise DriverError(f"{goal.spec.name}: secret files: {exc}") from None


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
    kept: list[str] = []
    if ctx.cluster == "swarm":
        from mariposa.swarm.converge import delete_on_swarm

        await progress({"done": 0, "todo": 1, "step": "remove the project's Swarm services"})
        removed += await delete_on_swarm(ctx, task.project_id)
    for driver in ctx.drivers.values():
        while instances := await driver.inventory(task.project_id):
            await progress({"done": removed, "todo": len(instances), "step": f"remove {len(instances)}"})
            removals = Plan(tuple(Remove(i, "project deleted", purge=True) for i in instances))
            await execute(ctx, driver, None, task, removals)
            removed += len(instances)
    for driver in ctx.drivers.values():  # every runtime's instances gone first: they share the bridge
        kept += await driver.remove_network(task.project_id, task.project_name)
        if task.params.get("purge_volumes"):
            for volume in await driver.volumes(task.project_name):
                await driver.remove_volume(task.project_name, volume.name)
    await ctx.store.call(goal_store.forget_project, task.project_id)
    await ctx.store.call(instance_store.forget_project, task.project_id)
    ctx.names_changed.set()  # its zone and its DNS socket go now
    await progress({"done": removed, "todo": 0, "step": "deleted"})
    for line in kept:
        await ctx.store.call(lambda db, line=line: event_store.record(
            db, "network.kept", f"project {task.project_name} deleted; {line}", project_id=task.project_id,
            task_id=task.id))
    return f"project {task.project_name} deleted ({removed} instances removed)" + "".join(f"; {k}" for k in kept)
