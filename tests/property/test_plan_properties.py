"""Hypothesis properties of the pure planner, over arbitrary goals and actual states, run
round after round on a simulated clock the way the task loop runs it."""

from __future__ import annotations

import itertools

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from mariposa.converge.plan import plan, ready_time
from mariposa.model import Create, GiveUp, HealthCheck, Instance, InstanceState, Remove, ServiceGoal, ServiceSpec, Start, Stop, Wait

CURRENT = ServiceSpec(name="web", image="img:2", min_healthy_time=10.0)
CHECKED = attrs.evolve(CURRENT, healthchecks=(HealthCheck(type="tcp", port=80),))
OLD = ServiceSpec(name="web", image="img:1")
_ids = itertools.count()
ROUND = 4.0  # seconds a round of steps takes on the simulated clock


def instance(spec: ServiceSpec, state: str, created: float) -> Instance:
    n = next(_ids)
    return Instance(id=f"i{n}", runtime_id=f"r{n}", name=f"p-web-{n}", project_id="p", service="web",
                    spec_hash=spec.spec_hash, version_id="v", state=state, created=created, compute_type="docker")


instances = st.lists(
    st.builds(instance, st.sampled_from([CURRENT, OLD]), st.sampled_from([InstanceState.RUNNING, InstanceState.EXITED, InstanceState.CREATING]),
              st.floats(0, 1000)),
    max_size=12,
)


def goal(scale: int, desired: str = "running", spec: ServiceSpec = CURRENT, **kw) -> ServiceGoal:
    return ServiceGoal(project_id="p", project_name="p", version_id="v2", spec=spec, scale=scale, desired=desired, **kw)


def apply(actual: list[Instance], steps, now: float, spec: ServiceSpec = CURRENT) -> list[Instance]:
    """Steps as the runtime carries them out; new instances become healthy right away."""
    by_id = {i.id: i for i in actual}
    for step in steps:
        if isinstance(step, Create):
            new = attrs.evolve(instance(spec, "running", now), started_at=now, health="healthy", health_since=now)
            by_id[new.id] = new
        elif isinstance(step, Start):
            by_id[step.instance.id] = attrs.evolve(step.instance, state="running", started_at=now)
        elif isinstance(step, Stop):
            by_id[step.instance.id] = attrs.evolve(step.instance, state="exited")
        elif isinstance(step, Remove):
            by_id.pop(step.instance.id)
        elif isinstance(step, GiveUp):
            raise AssertionError(f"unexpected {step} with the default restart policy")
    return list(by_id.values())


def advance(steps, now: float) -> float:
    """The task sleeps until the earliest wait when a round only waits."""
    if steps.only_waiting:
        return max(now + 0.5, min(s.until for s in steps.steps if isinstance(s, Wait)))
    return now + ROUND


def running(actual):
    return sum(1 for i in actual if i.running)


def converge(g: ServiceGoal, actual: list[Instance], surge: int, replace=frozenset(), check=None, rounds=80):
    now = 2000.0
    for _ in range(rounds):
        steps = plan(g, actual, surge=surge, now=now, replace=replace)
        if not steps:
            return actual, now
        before = actual
        if not steps.only_waiting:
            actual = apply(actual, steps.steps, now, g.spec)
        if check:
            check(before, steps, actual, now)
        now = advance(steps, now)
    raise AssertionError(f"did not converge in {rounds} rounds")


@settings(max_examples=300)
@given(actual=instances, scale=st.integers(0, 8), surge=st.integers(0, 3))
def test_converges_to_exactly_scale_current_instances(actual, scale, surge):
    g = goal(scale)
    actual, now = converge(g, actual, surge)
    assert running(actual) == scale
    assert all(i.spec_hash == CURRENT.spec_hash and i.running for i in actual)
    assert plan(g, actual, surge=surge, now=now).steps == ()  # idempotent at the fixpoint


@settings(max_examples=300)
@given(actual=instances, scale=st.integers(0, 8), surge=st.integers(0, 3))
def test_each_round_keeps_availability_and_bounds_surge(actual, scale, surge):
    def check(before, steps, after, now):
        allowance = 1 if surge == 0 else 0
        assert running(after) >= min(scale, running(before)) - allowance
        assert running(after) <= max(running(before), scale + max(surge, 1))

    converge(goal(scale), actual, surge, check=check)


@settings(max_examples=200)
@given(scale=st.integers(1, 8), surge=st.integers(1, 3), checked=st.booleans())
def test_rollout_never_below_scale_ready_nor_above_scale_plus_rolling(scale, surge, checked):
    """New instances start before old ones go, and count only once up for min_healthy_time."""
    spec = CHECKED if checked else CURRENT
    g = goal(scale, spec=spec)
    actual = [instance(OLD, "running", float(i)) for i in range(scale)]

    def ready_or_old(instances, now):
        return sum(1 for i in instances if i.spec_hash == OLD.spec_hash and i.running
                   or (t := ready_time(i, g)) is not None and now >= t)

    def check(before, steps, after, now):
        removed = {s.instance.id for s in steps.steps if isinstance(s, Remove)}
        # the low point is between the removal phase and the create phase
        assert ready_or_old([i for i in before if i.id not in removed], now) >= scale
        assert len(after) <= scale + surge

    actual, _ = converge(g, actual, surge, check=check)
    assert len(actual) == scale and all(i.spec_hash == spec.spec_hash for i in actual)


@settings(max_examples=200)
@given(actual=instances, scale=st.integers(0, 6), surge=st.integers(0, 3))
def test_planning_twice_is_idempotent(actual, scale, surge):
    g = goal(scale)
    assert plan(g, actual, surge=surge, now=5.0) == plan(g, actual, surge=surge, now=5.0)


@given(count=st.integers(1, 4), scale=st.integers(4, 6))
def test_canary_replaces_only_the_chosen_and_keeps_the_rest(count, scale):
    actual = [instance(OLD, "running", float(i)) for i in range(scale)]
    chosen = frozenset(i.id for i in actual[:count])
    g = goal(scale, keep_stale=True)
    actual, _ = converge(g, actual, 1, replace=chosen)
    assert sum(1 for i in actual if i.spec_hash == CURRENT.spec_hash) == count
    assert sum(1 for i in actual if i.spec_hash == OLD.spec_hash) == scale - count
    assert not chosen & {i.id for i in actual}


@given(actual=instances)
def test_stopped_and_absent_goals(actual):
    assert running(apply(actual, plan(goal(3, "stopped"), actual).steps, 0.0)) == 0
    assert apply(actual, plan(None, actual).steps, 0.0) == []
