"""The pure heart of convergence: goal + actual + now -> the next steps. No I/O.

A plan is one round. The caller executes it, takes a fresh inventory and plans again until the
plan is empty (or only waits); that loop is what makes rolling replacement safe without tracking
anything in flight: each round only ever removes an old instance once a new one is already
counted running.

Ordering policy (``services/triton-cli.md``, reprovision and scale down): instances of other
versions go first, the current version last, and within each the oldest instance first.

Supervision lives here too, so it is testable the same way: an exited instance is started again
when its restart policy allows (after its back-off), given up on when it does not; an unhealthy
instance is retired and replaced, replacements waiting out the service's back-off (``REPLACE``),
which grows the moment another failed instance is replaced. Retired instances (kept stopped for
inspection) never count and are never started again.

So does the judgement of a rollout, given what the task remembers (``Rollout``): a new instance
the task made that exits or goes unhealthy, or no progress for ``progress_deadline``, stops it
(``FailRollout``). The executor carries out every step it is given and decides nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from mariposa.converge.supervise import REPLACE
from mariposa.model import (
    Create,
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
    Step,
    Stop,
    Wait,
)


def _oldest_first(instances: Sequence[Instance]) -> list[Instance]:
    return sorted(instances, key=lambda i: (i.created, i.id))


def _exited_badly(inst: Instance) -> bool:
    return inst.exit_code not in (0, None)


def ready_time(inst: Instance, goal: ServiceGoal) -> float | None:
    """When a running instance counts as up for a rollout: it stayed up (healthy, when the
    service has checks) for ``min_healthy_time``. None: not yet known (still starting)."""
    if not inst.running or inst.health == "unhealthy":
        return None
    if goal.spec.healthchecks:
        if inst.health != "healthy":
            return None
        return inst.health_since + goal.spec.min_healthy_time
    return inst.started_at + goal.spec.min_healthy_time


def from_nothing(actual: Sequence[Instance]) -> bool:
    """No instance serves, waits to start or is being replaced: the service starts afresh, the
    one case where ``depends_on`` makes it wait (converge/depends.py)."""
    return not any(not i.retired and i.state != InstanceState.REMOVING and not i.removing for i in actual)


# While a service waits for its dependencies, it looks again this often.
DEPENDENCY_RECHECK = 1.0


def _is_stale(inst: Instance, goal: ServiceGoal, replace: frozenset[str]) -> bool:
    return inst.id in replace or (inst.spec_hash != goal.spec.spec_hash and not goal.keep_stale)


def _rollout_failure(
    goal: ServiceGoal, actual: Sequence[Instance], rollout: Rollout, now: float, replace: frozenset[str]
) -> FailRollout | None:
    """A rollout (old instances still there) stops at its first failed new instance, or when it
    made no progress for ``progress_deadline``: the old instances keep serving, and the service
    is frozen with the reason, so nothing retries a bad version behind the operator's back."""
    old = [i for i in actual if not i.retired and _is_stale(i, goal, replace)]
    if not old:
        return None
    failed = [i for i in actual if i.id in rollout.created and not i.retired
              and (i.state == InstanceState.EXITED or i.health == "unhealthy")]
    if failed:
        inst = failed[0]
        why = (f"new instance {inst.name} exited (exit code {inst.exit_code})" if not inst.running
               else f"new instance {inst.name} is unhealthy")
    elif now - rollout.last_progress > goal.spec.progress_deadline:
        why = f"no progress for {goal.spec.progress_deadline:g}s (progress_deadline)"
    else:
        return None
    serving = sum(1 for i in old if i.running)
    reason = (f"rollout stopped: {why}; {serving} instances of the previous version keep serving "
              f"(mariposa project revert {goal.project_name} VERSION, or fix and update)")
    return FailRollout(reason, tuple(failed))


def plan(
    goal: ServiceGoal | None, actual: Sequence[Instance], *, surge: int = 1, now: float = 0.0,
    replace: frozenset[str] = frozenset(), rollout: Rollout | None = None, waiting: str | None = None,
) -> Plan:
    """Steps for one service. ``surge`` is how many instances beyond scale a replacement may run
    at once (``--rolling``); 0 replaces old-first (needed when a host port is pinned).
    ``replace`` names instances a reprovision replaces whatever their version. ``rollout`` is
    what the task running the plan remembers; without it (the reconciler's look, a preview) no
    rollout is judged. ``waiting`` says which dependencies are not ready yet (converge/depends.py):
    a service starting from nothing then waits instead of creating."""
    live = [i for i in actual if i.state != InstanceState.REMOVING]
    if goal is None or goal.desired == "absent":
        return Plan(tuple(Remove(i, "service removed", purge=True) for i in _oldest_first(live)))
    if goal.spec.runs:
        # Scheduled and event services have no continuous goal: their instances are runs, the
        # scheduler's (mariposa/runs/). Only what a continuous version of the service left goes.
        return Plan(tuple(Remove(i, f"the service is {goal.spec.service_type} now", purge=True)
                          for i in _oldest_first(live) if i.run_id is None))
    runs = [i for i in live if i.run_id is not None]  # a version that was scheduled left them
    actual = [i for i in actual if i.run_id is None]
    live = [i for i in live if i.run_id is None]
    if rollout is not None and (failure := _rollout_failure(goal, actual, rollout, now, replace)):
        return Plan((failure,))

    # A removal a crash interrupted (marked, perhaps stopped, not yet deleted) is finished: its
    # exit code is our own SIGTERM's, not a failure to keep.
    steps: list[Step] = [Remove(i, "a run of a service that is continuous now", purge=True)
                         for i in _oldest_first(runs)]
    steps += [Remove(i, "finishing a removal interrupted by a restart", purge=True)
              for i in _oldest_first(live) if i.removing and not i.retired]
    live = [i for i in live if not i.removing or i.retired]
    # A retired instance that runs again (a crash between marking and stopping it) is stopped.
    steps += [Stop(i, "retired") for i in _oldest_first(live) if i.retired and i.running]
    serving = [i for i in live if not i.retired]
    if goal.desired == "stopped":
        steps += [Remove(i, "service stopped", failed=_exited_badly(i)) for i in _oldest_first(serving)]
        return Plan(tuple(steps))

    if waiting and goal.scale > 0 and from_nothing(serving):
        steps.append(Wait(now + DEPENDENCY_RECHECK, waiting))
        return Plan(tuple(steps))

    want = goal.scale
    if goal.spec.has_pinned_host_ports or goal.spec.has_exclusive_volumes:
        surge = 0  # two instances cannot bind the same host port, or attach one VM's volume disk
    policy = goal.spec.restart_policy
    current = [i for i in serving if not _is_stale(i, goal, replace)]
    stale = [i for i in serving if _is_stale(i, goal, replace)]

    up: list[Instance] = []
    pending: list[Instance] = []  # to be started, now or after their back-off; they count
    for inst in _oldest_first(current):
        if inst.state == InstanceState.PAUSED:
            # unreachable (the single-host stand-in for a CN gone offline): it neither counts
            # nor is touched; a replacement is made, and if it comes back the service is over
            # its scale and the scale-down policy takes the surplus away
            continue
        if inst.running:
            if inst.health == "unhealthy":
                steps.append(Remove(inst, "unhealthy", failed=True))
            else:
                up.append(inst)
        elif inst.state == InstanceState.CREATING:
            pending.append(inst)  # made but never started (e.g. a crash mid-create)
        elif policy.allows(inst.exit_code, inst.restarts):
            pending.append(inst)
        else:
            code = f"exit code {inst.exit_code}" if inst.exit_code is not None else inst.state
            reason = f"{inst.name} exited ({code}); restart policy {policy} will not start it again"
            return Plan(tuple(s for s in steps if isinstance(s, Stop)) + (GiveUp(inst, reason),))

    running_stale = _oldest_first([i for i in stale if i.running])
    steps += [Remove(i, "stopped instance of an old version", failed=_exited_badly(i))
              for i in _oldest_first(stale) if not i.running and i.state != InstanceState.PAUSED]

    def ready(i: Instance) -> bool:
        at = ready_time(i, goal)
        return at is not None and now >= at

    def wait_for_readiness() -> Wait:
        times = [t for i in up if not ready(i) and (t := ready_time(i, goal)) is not None]
        until = min(times) if times else now + 1.0
        return Wait(until, f"waiting for new instances to be up for {goal.spec.min_healthy_time:g}s"
                           + (" and healthy" if goal.spec.healthchecks else ""))

    if len(up) >= want:
        keep = up[len(up) - want:]  # scale down: the oldest go first
        steps += [Remove(i, "scale down") for i in up[: len(up) - want]]
        steps += [Remove(i, "not needed", failed=_exited_badly(i)) for i in pending]
        if running_stale:
            # old instances go only once enough new ones are up: never below scale
            if sum(1 for i in keep if ready(i)) >= want:
                steps += [Remove(i, "replaced by the current version") for i in running_stale]
            else:
                steps.append(wait_for_readiness())
        _replacement_hold(goal, steps, now)  # nothing to create, but the streak still grows
        return Plan(tuple(steps))

    need = want - len(up)
    retire: list[Instance] = []
    room = need
    if running_stale:
        # Rolling replacement: old instances keep serving until new ones are up, and no more
        # than scale + surge run in all.
        ready_count = sum(1 for i in up if ready(i))
        retire = running_stale[: max(0, ready_count + len(running_stale) - want)]
        if surge == 0 and not retire and len(up) + len(running_stale) >= want:
            retire = running_stale[:1]  # nothing may run beside the old one: take one down first
        room = max(0, want + surge - (len(up) + len(running_stale) - len(retire)))
    steps += [Remove(i, "replaced by the current version") for i in retire]

    # newest first
    chosen = sorted(pending, key=lambda i: (i.state != InstanceState.CREATING, -i.created))[: min(need, room)]
    for inst in chosen:
        if inst.state == InstanceState.CREATING or now >= inst.ready_at:
            steps.append(Start(inst, "instance not running" if inst.state == InstanceState.CREATING
                               else f"restart policy {policy}"))
        else:
            steps.append(Wait(inst.ready_at, f"{inst.name} exited (exit code {inst.exit_code}); restart "
                                             f"{inst.restarts + 1} in {inst.ready_at - now:.0f}s"))
    steps += [Remove(i, "not needed", failed=_exited_badly(i)) for i in pending if i not in chosen]
    creates = min(need - len(chosen), room - len(chosen))
    if running_stale and not retire and not creates and not chosen:
        steps.append(wait_for_readiness())
    hold = _replacement_hold(goal, steps, now)
    if creates and now < hold:
        steps.append(Wait(hold, f"backing off after failed instances; next attempt in {hold - now:.0f}s"))
    else:
        steps += [Create(goal.spec.name, "below scale") for _ in range(creates)]
    return Plan(tuple(steps))


def _replacement_hold(goal: ServiceGoal, steps: list[Step], now: float) -> float:
    """Until when no replacement instance may be made (``REPLACE``). Taking out another failed
    instance that still runs lengthens the streak as of now (the step records it), and its own
    replacement already waits out the longer delay."""
    streak = REPLACE.streak(goal.replacements, goal.last_replacement_at, now)
    hold = REPLACE.until(streak, goal.last_replacement_at, now)
    if any(isinstance(s, Remove) and s.failed and s.instance.running for s in steps):
        steps.append(NoteReplacement(streak + 1, now))
        if REPLACE.delay(streak + 1) > 0:
            hold = max(hold, now + REPLACE.delay(streak + 1))
    return hold
