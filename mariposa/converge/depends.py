"""Start order: a service with ``depends_on`` gets its first instances only once its dependencies
are ready, so a web server does not crash-loop against a database that is still starting.

Ready means, for every instance the dependency's goal wants (its scale):
- ``service_started``: running;
- ``service_healthy``: running and passing its health checks (a dependency without checks
  counts as healthy once running).

Only creation from nothing waits (``project add``, ``project start``, ``service start``, a new
service): a service that has instances of any kind (a rollout, a scale-up, a restart) never
waits, so a dependency's trouble never takes a running service down. While it waits, its task
says what for (the task's progress, ``service get``, and an event), never silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mariposa.context import Context
from mariposa.converge.plan import from_nothing
from mariposa.converge.supervise import merge
from mariposa.model import Instance, ServiceGoal

__all__ = ["from_nothing", "unmet", "waiting_for"]


def unmet(goal: ServiceGoal, deps: Mapping[str, tuple[ServiceGoal | None, Sequence[Instance]]]) -> str | None:
    """Why ``goal``'s service may not start yet (one clause per dependency not ready), or None."""
    waits = []
    for name, condition in goal.spec.depends_on:
        dep, insts = deps.get(name, (None, ()))
        healthy = condition == "service_healthy"
        if dep is None:
            waits.append(f"{name} (it is being removed)")
            continue
        if dep.desired != "running":
            waits.append(f"{name} (it is stopped: mariposa -j {goal.project_name} service start {name})")
            continue
        if dep.scale == 0:
            waits.append(f"{name} (its scale is 0)")
            continue
        checked = healthy and bool(dep.spec.healthchecks)
        ready = sum(1 for i in insts if i.running and not i.retired and (not checked or i.health == "healthy"))
        if ready < dep.scale:
            word = "healthy" if healthy else "running"
            waits.append(f"{name} to be {'healthy' if healthy else 'started'} ({ready} of {dep.scale} {word})")
    return "waiting for " + "; ".join(waits) if waits else None


async def waiting_for(ctx: Context, goal: ServiceGoal) -> str | None:
    """``unmet`` for the goal's dependencies as they are now (goal, instances and health)."""
    if not goal.spec.depends_on:
        return None
    snap = await ctx.goals.snapshot()
    project = next((p for p in snap.projects if p.id == goal.project_id), None)
    if project is None:
        return None
    rows = {s.name: s for s in snap.services if s.project_id == goal.project_id}
    insts = merge(await ctx.inventory(goal.project_id), snap.records, ctx.clock.now())
    deps = {name: (ctx.goals.goal_from(project, rows.get(name)), [i for i in insts if i.service == name])
            for name, _ in goal.spec.depends_on}
    return unmet(goal, deps)
