"""What a goal change would do, without doing it: the planner run round after round on a
copy of the actual state, as the task loop would run it. `project diff` prints this, so the
preview and the real thing come from the same planner."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import attrs

from mariposa.converge.plan import plan
from mariposa.model import Create, GiveUp, Instance, InstanceState, Remove, ServiceGoal, Start, Stop, Wait

ROUND = 5.0


@attrs.frozen
class Outcome:
    create: int = 0
    replace: int = 0
    remove: int = 0
    start: int = 0
    stop: int = 0
    rounds: int = 0


def simulate(goal: ServiceGoal | None, actual: Sequence[Instance], *, surge: int = 1, now: float = 0.0,
             max_rounds: int = 500) -> Outcome:
    counts = dict(create=0, replace=0, remove=0, start=0, stop=0)
    current = list(actual)
    ids = itertools.count()
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        steps = plan(goal, current, surge=surge, now=now)
        if not steps:
            break
        by_id = {i.id: i for i in current}
        for step in steps.steps:
            if isinstance(step, Create):
                assert goal is not None  # the planner only removes when there is no goal
                n = next(ids)
                new = Instance(id=f"sim{n}", runtime_id=f"sim{n}", name=f"sim{n}", project_id=goal.project_id,
                               service=goal.spec.name, spec_hash=goal.spec.spec_hash, version_id=goal.version_id,
                               state=InstanceState.RUNNING, created=now, started_at=now, health="healthy",
                               health_since=now, compute_type=goal.spec.compute_type)
                by_id[new.id] = new
                counts["create"] += 1
            elif isinstance(step, Start):
                by_id[step.instance.id] = attrs.evolve(step.instance, state=InstanceState.RUNNING, started_at=now)
                counts["start"] += 1
            elif isinstance(step, Stop):
                by_id[step.instance.id] = attrs.evolve(step.instance, state=InstanceState.EXITED)
                counts["stop"] += 1
            elif isinstance(step, Remove):
                by_id.pop(step.instance.id, None)
                counts["replace" if "replaced" in step.reason else "remove"] += 1
            elif isinstance(step, GiveUp):
                by_id.pop(step.instance.id, None)
        current = list(by_id.values())
        now += ROUND if not steps.only_waiting else 0
        if steps.only_waiting:
            now = max(s.until for s in steps.steps if isinstance(s, Wait)) + 0.001
    # a replacement is a create paired with the removal of an old instance
    counts["create"] -= counts["replace"]
    return Outcome(**counts, rounds=rounds)
