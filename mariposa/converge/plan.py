"""The pure heart of convergence: goal + actual -> the next steps. No I/O, no clock.

A plan is one round. The caller executes it, takes a fresh inventory and plans again until the
plan is empty; that loop is what makes rolling replacement safe without tracking anything in
flight: each round only ever removes an old instance once a new one is already counted running.

Ordering policy (``services/triton-cli.md``, reprovision and scale down): instances of other
versions go first, the current version last, and within each the oldest instance first.
"""

from __future__ import annotations

from collections.abc import Sequence

from mariposa.model import Create, Instance, Plan, Remove, ServiceGoal, Start, Step, Stop

# Docker states we can start again; "dead" containers can only be removed.
_STARTABLE = ("created", "exited", "paused")


def _oldest_first(instances: Sequence[Instance]) -> list[Instance]:
    return sorted(instances, key=lambda i: (i.created, i.id))


def plan(goal: ServiceGoal | None, actual: Sequence[Instance], *, surge: int = 1) -> Plan:
    """Steps for one service. ``surge`` is how many instances beyond scale a replacement may run
    at once (``--rolling``); 0 replaces old-first (needed when a host port is pinned)."""
    live = [i for i in actual if i.state != "removing"]
    if goal is None or goal.desired == "absent":
        return Plan(tuple(Remove(i, "service removed") for i in _oldest_first(live)))
    if goal.desired == "stopped":
        return Plan(tuple(Stop(i, "service stopped") for i in _oldest_first(live) if i.running))

    want = goal.scale
    if goal.spec.has_pinned_host_ports:
        surge = 0  # two instances cannot bind the same host port
    current_hash = goal.spec.spec_hash
    running_current = _oldest_first([i for i in live if i.spec_hash == current_hash and i.running])
    idle_current = _oldest_first([i for i in live if i.spec_hash == current_hash and not i.running])
    running_stale = _oldest_first([i for i in live if i.spec_hash != current_hash and i.running])
    idle_stale = [i for i in live if i.spec_hash != current_hash and not i.running]

    steps: list[Step] = [Remove(i, "stopped instance of an old version") for i in _oldest_first(idle_stale)]

    if len(running_current) >= want:
        steps += [Remove(i, "scale down") for i in running_current[: len(running_current) - want]]
        steps += [Remove(i, "replaced by the current version") for i in running_stale]
        steps += [Remove(i, "not needed") for i in idle_current]
        return Plan(tuple(steps))

    need = want - len(running_current)
    restartable = [i for i in reversed(idle_current) if i.state in _STARTABLE]  # newest first
    starts = restartable[:need]
    steps += [Start(i, "instance not running") for i in starts]
    steps += [Remove(i, "not needed") for i in idle_current if i not in starts]
    need -= len(starts)

    if not running_stale:
        steps += [Create(goal.spec.name, "below scale") for _ in range(need)]
        return Plan(tuple(steps))

    # Rolling replacement: old instances keep serving until new ones run.
    serving = len(running_current) + len(starts) + len(running_stale)
    surplus = max(0, serving - want)
    if surge == 0 and need > 0 and surplus == 0:
        surplus = 1  # nothing may run beside the old one: take one down, then replace it
    retire = running_stale[:surplus]
    steps += [Remove(i, "replaced by the current version") for i in retire]
    total_after = serving - len(retire)
    creates = min(need, max(0, want + surge - total_after))
    steps += [Create(goal.spec.name, "replacing an old version") for _ in range(creates)]
    return Plan(tuple(steps))
