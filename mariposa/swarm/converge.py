"""Converging a cluster-placed service (``cluster = "swarm"``, a Docker service) on the Swarm.

The local path plans instance by instance (converge/plan.py); on a Swarm the unit is the Swarm
service: the Swarm itself starts, restarts, reschedules and rolls its tasks. So the planner here
is about at most two Swarm services per Mariposa service, the main one and a canary
(``NAME-canary``), and what it says is: create, update to the goal's spec, set replicas, remove,
wait, or fail (a rollout the Swarm paused). ``plan_swarm`` is pure, like plan.py (tested with
hypothesis); ``converge_on_swarm`` carries its steps out round after round, re-reading the goal
and the Swarm each time, so a scale changed mid-task or a daemon restart are just inputs.

A canary (a reprovision with ``count`` N, goal ``keep_stale``): the new version as ``NAME-canary``
at N replicas and the main service, still on the old version, at scale - N. The next reprovision
(or a revert: any goal without ``keep_stale``) folds them back: the main service is updated to the
goal at full scale first, then the canary goes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import structlog
import trio

from mariposa.drivers.base import DriverError
from mariposa.errors import TaskFailed
from mariposa.model import (
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    ServiceGoal,
    ServiceSpec,
)
from mariposa.swarm.driver import CANARY, SwarmDriver
from mariposa.swarm.placement import Placed, Placement, place
from mariposa.swarm.spec import LABEL_MDATA, config_name, mdata_digest, service_name, stale_configs, swarm_service

log = structlog.get_logger()

PAUSED = ("paused", "rollback_paused")
ROLLING = ("updating", "rollback_started")
ROLLED_BACK = ("rollback_completed", "completed")
POLL = 0.25  # while the Swarm rolls, look again this often (and at each of its events)
ROLLBACK_WAIT = 120.0  # how long a failed rollout waits for the Swarm's rollback without a progress_deadline


@attrs.frozen
class Observed:
    """One Swarm service as the planner needs it."""

    name: str
    spec_hash: str
    replicas: int
    running: int = 0  # its tasks running now with its own spec hash and meant to run
    update_state: str | None = None  # UpdateStatus.State, None when it never rolled
    update_message: str = ""
    version_id: str = ""
    mdata: str = ""  # the mdata_digest its configs hold (spec.LABEL_MDATA; "" without mdata)


# ---- steps ------------------------------------------------------------------------------------

@attrs.frozen
class CreateService:
    name: str
    replicas: int


@attrs.frozen
class UpdateService:
    """Replace the service's spec with the goal's, at ``replicas``."""

    name: str
    replicas: int


@attrs.frozen
class ScaleService:
    name: str
    replicas: int


@attrs.frozen
class RemoveService:
    name: str
    reason: str


@attrs.frozen
class WaitFor:
    name: str
    why: str


@attrs.frozen
class Paused:
    """The Swarm paused a rollout (a new task failed): the task fails with its message."""

    name: str
    message: str


Step = CreateService | UpdateService | ScaleService | RemoveService | WaitFor | Paused


def summary(steps: Sequence[Step]) -> str:
    parts = []
    for s in steps:
        match s:
            case CreateService(name, n):
                parts.append(f"create {name} ({n})")
            case UpdateService(name, n):
                parts.append(f"update {name} ({n})")
            case ScaleService(name, n):
                parts.append(f"scale {name} to {n}")
            case RemoveService(name, why):
                parts.append(f"remove {name} ({why})")
            case WaitFor(name, why):
                parts.append(f"wait for {name}: {why}")
            case Paused(name, message):
                parts.append(f"{name} paused: {message}")
    return "; ".join(parts)


def only_waiting(steps: Sequence[Step]) -> bool:
    return all(isinstance(s, WaitFor) for s in steps)


def plan_swarm(goal: ServiceGoal | None, observed: Sequence[Observed], main: str,
               count: int | None = None, mdata: str | None = None) -> list[Step]:
    """What to do next for one Mariposa service, whose main Swarm service is called ``main``
    (its canary ``main + CANARY``; any other of ``observed`` is an orphan and goes). ``count``: a
    canary reprovision's N. ``mdata``: the ``mdata_digest`` of its files rendered from the meta
    of now; a Swarm service on the goal's spec with other values is updated (new configs, a
    rolling update). None: not compared (the reconciler's look, which reads no meta: the mdata
    keeper queues a converge when meta changes them). Empty: converged."""
    canary_name = main + CANARY
    by_name = {o.name: o for o in observed}
    m, c = by_name.get(main), by_name.get(canary_name)
    steps: list[Step] = [RemoveService(o.name, "not this service's") for o in observed
                         if o.name not in (main, canary_name)]
    if goal is None:
        return steps + [RemoveService(o.name, "service removed") for o in (m, c) if o is not None]
    h = goal.spec.spec_hash
    scale = goal.scale if goal.desired == "running" else 0
    # (name, spec hash wanted, replicas wanted)
    want_main: tuple[str, int] = (h, scale)
    want_canary: tuple[str, int] | None = None
    if goal.keep_stale and scale and m is not None and m.spec_hash != h:
        n = count if count is not None else (c.replicas if c is not None and c.spec_hash == h else None)
        if n is None:
            want_main = (m.spec_hash, m.replicas)  # older versions stay until the next reprovision
        else:
            n = min(n, scale)
            want_main, want_canary = (m.spec_hash, scale - n), (h, n)

    def to(name: str, o: Observed | None, want: tuple[str, int]) -> list[Step]:
        hash_, replicas = want
        if o is None:
            return [CreateService(name, replicas)]
        if o.update_state in PAUSED and o.spec_hash == hash_:
            return [Paused(name, o.update_message or "the Swarm paused the rollout")]
        if o.spec_hash != hash_:
            return [UpdateService(name, replicas)]  # only ever to the goal's: an old spec is never re-sent
        if hash_ == h and mdata is not None and o.mdata != mdata:
            return [UpdateService(name, replicas)]  # the same spec, new mdata values: new configs
        if o.replicas != replicas:
            return [ScaleService(name, replicas)]
        if o.update_state in ROLLING:
            return [WaitFor(name, f"the Swarm is rolling it ({o.running}/{replicas} running)")]
        if o.running != replicas:
            return [WaitFor(name, f"{o.running}/{replicas} running")]
        return []

    main_steps = to(main, m, want_main)
    steps += main_steps
    if want_canary is not None:
        steps += to(canary_name, c, want_canary)
    elif c is not None and not main_steps:
        steps.append(RemoveService(canary_name, "folded back into the service"))  # once the main one is whole
    return steps


def observe(services: Sequence[Mapping[str, Any]], tasks: Sequence[Mapping[str, Any]], project_id: str,
            service: str) -> list[Observed]:
    """The Swarm services of one Mariposa service, from the driver's listing."""
    out = []
    for s in services:
        spec = s.get("Spec") or {}
        labels = spec.get("Labels") or {}
        if labels.get(LABEL_PROJECT) != project_id or labels.get(LABEL_SERVICE) != service:
            continue
        h, digest = labels.get(LABEL_SPEC_HASH, ""), labels.get(LABEL_MDATA, "")

        def current(task_labels: Mapping[str, str], h: str = h, digest: str = digest) -> bool:
            return task_labels.get(LABEL_SPEC_HASH) == h and task_labels.get(LABEL_MDATA, "") == digest  # ...and values

        running = sum(
            1 for t in tasks if t.get("ServiceID") == s["ID"] and t.get("DesiredState") == "running"
            and (t.get("Status") or {}).get("State") == "running"
            and current(((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}))
        update = s.get("UpdateStatus") or {}
        out.append(Observed(
            name=spec.get("Name", ""), spec_hash=h,
            replicas=int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)), running=running,
            update_state=update.get("State"), update_message=update.get("Message", ""),
            version_id=labels.get(LABEL_VERSION, ""), mdata=digest))
    return out


# ---- carrying it out ---------------------------------------------------------------------------

Progress = Callable[[dict], Awaitable[None]]


def swarm_driver(ctx) -> SwarmDriver:
    driver = ctx.drivers.get("docker")
    if not isinstance(driver, SwarmDriver):
        raise TaskFailed("cluster = \"swarm\" but the daemon's Docker driver is not the Swarm's")
    return driver


def on_swarm(ctx, goal: ServiceGoal | None) -> bool:
    """Whether this service is the Swarm's: a continuous Docker service of a swarm daemon."""
    return (getattr(ctx, "cluster", "none") == "swarm" and isinstance(ctx.drivers.get("docker"), SwarmDriver)
            and (goal is None or (goal.spec.compute_type == "docker" and goal.spec.service_type == "continuous")))


async def _secrets(driver: SwarmDriver, ctx, goal: ServiceGoal) -> dict[str, tuple[str, str]]:
    """A Swarm secret per secret the service reads, named by its value's digest (Swarm secrets
    are immutable: a new value is a new secret, and the spec that names it a rolling update)."""
    if not goal.spec.secrets:
        return {}
    from mariposa.store.secrets import PROJECT

    values = await ctx.vault.get_many(PROJECT, goal.project_name, list(goal.spec.secrets))
    missing = [n for n in goal.spec.secrets if n not in values]
    if missing:
        raise TaskFailed(f"{goal.spec.name}: secrets {', '.join(missing)} of project {goal.project_name} not set "
                         f"(mariposa -j {goal.project_name} secret set NAME)")
    labels = {LABEL_OWNER: driver.owner, LABEL_PROJECT: goal.project_id}
    have = {s["Spec"]["Name"]: s["ID"] for s in await driver.client.secrets(labels)}
    out = {}
    for name, value in values.items():
        swarm_name = f"mariposa-{goal.project_name}-{goal.project_id[:8]}-{name}-" \
                     f"{hashlib.sha256(value).hexdigest()[:12]}"
        if swarm_name not in have:
            have[swarm_name] = await driver.client.create_secret(swarm_name, value, labels)
        out[name] = (have[swarm_name], swarm_name)
    return out


async def mdata_values(ctx, goal: ServiceGoal) -> dict[str, str]:
    """The service's mdata files rendered from the project's meta of now: one set for all of
    its tasks (the manifest refuses an instance's variables in them on the Swarm)."""
    if not goal.spec.mdata:
        return {}
    from mariposa.converge import render
    from mariposa.mdata.keeper import values_for

    meta, variables = await render.for_instance(ctx.store, goal, "", "")
    return values_for(goal.spec, variables, meta)


async def _configs(driver: SwarmDriver, goal: ServiceGoal, values: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """A Swarm config per mdata file, named by its content's digest and labelled with the owner
    and project (as the secrets), made once: the same content again is the same config."""
    if not values:
        return {}
    labels = {LABEL_OWNER: driver.owner, LABEL_PROJECT: goal.project_id}
    have = {c["Spec"]["Name"]: c["ID"] for c in await driver.client.configs(labels)}
    out = {}
    for key, value in values.items():
        swarm_name = config_name(goal.project_name, goal.project_id, key, value)
        if swarm_name not in have:
            have[swarm_name] = await driver.client.create_config(swarm_name, value.encode("utf-8"), labels)
        out[key] = (have[swarm_name], swarm_name)
    return out


async def remove_stale_configs(driver: SwarmDriver, project_id: str) -> int:
    """The project's configs no Swarm service of it names (an mdata value replaced by a finished
    rolling update); one a task still holds is left for the next time (the Swarm refuses it)."""
    labels = {LABEL_OWNER: driver.owner, LABEL_PROJECT: project_id}
    configs = await driver.client.configs(labels)
    if not configs:
        return 0
    removed = 0
    for config_id in stale_configs(configs, await driver.services(project_id)):
        try:
            removed += await driver.client.remove_config(config_id)
        except DriverError as exc:
            log.info("Swarm config not removed yet", config=config_id[:12], error=str(exc))
    return removed


async def placement_now(driver: SwarmDriver, spec: ServiceSpec, project_name: str, replicas: int) -> Placement | None:
    """The service's affinity against the Swarm's nodes and the tasks running on them now (None
    without rules): what it is placed by, and what a new version is judged by (swarm/admit.py)."""
    if not spec.affinity:
        return None
    nodes = await driver.client.nodes()
    running = []
    for s in await driver.services():
        labels = s["Spec"].get("Labels") or {}
        for t in await driver.client.tasks(service=s["ID"], desired_state="running"):
            running.append(Placed(name=t["ID"], service=labels.get(LABEL_SERVICE, ""),
                                  node_id=t.get("NodeID", ""), tags=labels))
    return place(spec.name, project_name, spec.affinity, replicas, nodes, running, dict(spec.tags))


async def _body(ctx, driver: SwarmDriver, goal: ServiceGoal, name: str, replicas: int, rolling: int) -> tuple[
        dict[str, Any], tuple[str, ...]]:
    spec = goal.spec
    placement = await placement_now(driver, spec, goal.project_name, replicas)
    values = await mdata_values(ctx, goal)
    made = swarm_service(driver.owner, goal.project_id, goal.project_name, goal.version_id, spec, replicas, rolling,
                         placement, name=name, secrets=await _secrets(driver, ctx, goal),
                         configs=await _configs(driver, goal, values), mdata=mdata_digest(values))
    if not made.ok:
        raise TaskFailed(f"{spec.name} cannot run on the Swarm: " + "; ".join(
            f"{p.field}: {p.reason}" for p in made.problems))
    return made.body, made.messages


async def converge_on_swarm(ctx, task, progress: Progress) -> str:
    """Every kind of a cluster service's task (converge, scale, start, stop, reprovision,
    revert): plan against the Swarm, act, wait for the Swarm to finish, until nothing is left."""
    from mariposa.store import events as event_store
    from mariposa.store import goal as goal_store

    driver = swarm_driver(ctx)
    service = task.service
    rolling = int(task.params.get("rolling", 1))
    count = int(task.params["count"]) if task.kind == "reprovision" and task.params.get("count") else None
    last_change, last_running = ctx.clock.now(), -1
    notes: tuple[str, ...] = ()
    announced: str | None = None  # the dependency wait last recorded as an event
    goal = None
    while True:
        changed = ctx.runtime_changed.next()
        goal, _row, _records = await ctx.goals.service_view(task.project_id, service)
        main = service_name(task.project_name, task.project_id, service)
        services, tasks = await driver.observe(task.project_id)
        observed = observe(services, tasks, task.project_id, service)
        mdata = mdata_digest(await mdata_values(ctx, goal)) if goal is not None else None
        steps = plan_swarm(goal, observed, main, count, mdata)
        running = sum(o.running for o in observed)
        now = ctx.clock.now()
        if running != last_running:
            last_change, last_running = now, running
        note: dict[str, str] = {"surge": "0 (stop-first: " + "; ".join(notes) + ")"} if notes else {}
        paused = [s for s in steps if isinstance(s, Paused)]
        if paused:
            # The Swarm paused with some slots already on the new version (crash-looping): roll
            # them back too, so the old version serves at full strength, as locally.
            current = await driver.client.inspect_service(paused[0].name)
            rolled = "no earlier spec to roll back to"
            if current is not None and current.get("PreviousSpec"):
                await driver.client.update_service(current["ID"], current["Version"]["Index"], current["Spec"],
                                                   rollback=True)
                bad = (current["Spec"].get("Labels") or {}).get(LABEL_SPEC_HASH, "")
                rolled = await _rolled_back(ctx, driver, task, paused[0].name, bad,
                                            goal.spec.progress_deadline if goal is not None else None)
            reason = f"{paused[0].name}: rollout paused by the Swarm: {paused[0].message}; {rolled}"
            await ctx.store.call(goal_store.freeze_service, task.project_id, service, reason)
            await ctx.store.call(functools.partial(event_store.record, type="rollout.failed", message=reason,
                                                   project_id=task.project_id, service=service, task_id=task.id))
            raise TaskFailed(reason)
        if not steps:
            await progress({"done": 1, "todo": 0, "step": "converged", "running": running, **note})
            if goal is not None and goal.spec.mdata:
                await remove_stale_configs(driver, task.project_id)
            break
        await progress({"done": 0, "todo": len([s for s in steps if not isinstance(s, WaitFor)]),
                        "step": summary(steps), "running": running, **note})
        if goal is not None and goal.spec.depends_on and any(
                isinstance(s, CreateService) and s.name == main for s in steps):
            from mariposa.converge import depends

            waiting = await depends.waiting_for(ctx, goal)  # its first tasks wait for its dependencies
            if waiting:
                if waiting != announced:
                    announced = waiting
                    await ctx.store.call(functools.partial(
                        event_store.record, type="service.waiting", message=f"{service} {waiting}",
                        project_id=task.project_id, service=service, task_id=task.id))
                await progress({"done": 0, "todo": 1, "step": summary(steps), "running": 0, "waiting": waiting})
                with trio.move_on_after(1.0):
                    await changed.wait()
                continue
        if only_waiting(steps):
            deadline = goal.spec.progress_deadline if goal is not None else None
            if deadline and now - last_change > deadline:
                raise TaskFailed(f"{service}: no progress for {deadline:g}s (progress_deadline): {summary(steps)}")
            with trio.move_on_after(POLL):
                await changed.wait()
            continue
        for step in steps:
            notes = await _act(ctx, driver, goal, task, step, rolling) or notes
        last_change = ctx.clock.now()
    if goal is None:
        await ctx.store.call(goal_store.forget_service, task.project_id, service)
        return f"{service} removed"
    if goal.desired == "stopped":
        return f"{service} stopped"
    return f"{service}: {goal.scale} running on the Swarm"


async def _rolled_back(ctx, driver: SwarmDriver, task, name: str, bad: str, deadline: float | None) -> str:
    """Wait for the Swarm's rollback of ``name`` away from spec hash ``bad``, so that when the
    failed task ends (and a ``--wait`` returns) the old version serves again at full strength, not
    half-way back. Done is the old spec, its tasks all running and the update over: the Swarm says
    "rollback_completed", and a moment later sometimes "completed" (Engine 20.10: the paused
    updater's end overwrites it), so either counts."""
    limit = deadline or ROLLBACK_WAIT
    with trio.move_on_after(limit):
        while True:
            changed = ctx.runtime_changed.next()
            services, tasks = await driver.observe(task.project_id)
            o = next((o for o in observe(services, tasks, task.project_id, task.service) if o.name == name), None)
            if o is None:
                return "rolled back"
            if o.update_state == "rollback_paused":
                return f"its rollback paused too: {o.update_message or 'see docker service ps ' + name}"
            if o.spec_hash != bad and o.update_state in ROLLED_BACK and o.running == o.replicas:
                return "rolled back: the old version keeps serving"
            with trio.move_on_after(POLL):
                await changed.wait()
    return f"rolling back (not done in {limit:g}s): the old version comes back as the Swarm goes on"


async def _act(ctx, driver: SwarmDriver, goal: ServiceGoal | None, task, step: Step,
               rolling: int) -> tuple[str, ...]:
    from mariposa.store import events as event_store

    async def event(type_: str, message: str) -> None:
        log.info(message, project=task.project_name, service=task.service, task=task.id[:12])
        await ctx.store.call(functools.partial(event_store.record, type=type_, message=message,
                                               project_id=task.project_id, service=task.service, task_id=task.id))

    match step:
        case RemoveService(name, why):
            await driver.client.remove_service(name)
            await event("swarm.service.remove", f"removed Swarm service {name} ({why})")
        case ScaleService(name, n):
            await driver.client.scale_service(name, n)
            await event("swarm.service.scale", f"scaled Swarm service {name} to {n}")
        case CreateService(name, n) | UpdateService(name, n):
            assert goal is not None
            await driver.ensure_network(goal.project_id, goal.project_name)
            body, messages = await _body(ctx, driver, goal, name, n, rolling)
            if isinstance(step, CreateService):
                await driver.client.create_service(body)
                await event("swarm.service.create", f"created Swarm service {name} ({n} replicas, version "
                                                    f"{goal.version_id[:12]})")
            else:
                current = await driver.client.inspect_service(name)
                if current is None:
                    return ()
                await driver.client.update_service(current["ID"], current["Version"]["Index"], body)
                await event("swarm.service.update", f"updating Swarm service {name} to version "
                                                    f"{goal.version_id[:12]} ({n} replicas, {rolling} at a time)")
            return tuple(m for m in messages if "surge 0" in m or "stops before" in m)
    return ()


async def delete_on_swarm(ctx, project_id: str) -> int:
    """A deleted project's Swarm services, overlay anchor, secrets and configs (its overlay goes
    with the driver's ``remove_network`` once the services' tasks are gone)."""
    driver = ctx.drivers.get("docker")
    if not isinstance(driver, SwarmDriver):
        return 0
    labels = {LABEL_OWNER: driver.owner, LABEL_PROJECT: project_id}
    services = await driver.services(project_id)
    for s in services:
        await driver.client.remove_service(s["ID"])
    with trio.move_on_after(60):
        while await driver.client.tasks(labels=labels):  # the overlay is in use until they are gone
            await trio.sleep(0.3)
    await driver.remove_anchors(project_id)  # its overlay anchor holds an endpoint too (swarm/anchor.py)
    for secret in await driver.client.secrets(labels):
        await driver.client.remove_secret(secret["ID"])
    for config in await driver.client.configs(labels):
        await driver.client.remove_config(config["ID"])
    return len(services)
