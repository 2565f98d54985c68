"""Hypothesis properties of the pure planner, over arbitrary goals and actual states."""

from __future__ import annotations

import itertools

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from mariposa.converge.plan import plan
from mariposa.model import Create, GiveUp, Instance, Remove, ServiceGoal, ServiceSpec, Start, Stop, Wait

CURRENT = ServiceSpec(name="web", image="img:2")
OLD = ServiceSpec(name="web", image="img:1")
_ids = itertools.count()


def instance(spec: ServiceSpec, state: str, created: float) -> Instance:
    n = next(_ids)
    return Instance(id=f"i{n}", runtime_id=f"r{n}", name=f"p-web-{n}", project_id="p", service="web",
                    spec_hash=spec.spec_hash, version_id="v", state=state, created=created)


instances = st.lists(
    st.builds(instance, st.sampled_from([CURRENT, OLD]), st.sampled_from(["running", "exited", "created", "dead"]),
              st.floats(0, 1000)),
    max_size=12,
)


def goal(scale: int, desired: str = "running") -> ServiceGoal:
    return ServiceGoal(project_id="p", project_name="p", version_id="v2", spec=CURRENT, scale=scale, desired=desired)


def apply(actual: list[Instance], steps) -> list[Instance]:
    by_id = {i.id: i for i in actual}
    for step in steps:
        if isinstance(step, Create):
            new = instance(CURRENT, "running", 2000.0 + next(_ids))
            by_id[new.id] = new
        elif isinstance(step, Start):
            by_id[step.instance.id] = attrs.evolve(step.instance, state="running")
        elif isinstance(step, Stop):
            by_id[step.instance.id] = attrs.evolve(step.instance, state="exited")
        elif isinstance(step, Remove):
            by_id.pop(step.instance.id)
        elif isinstance(step, (Wait, GiveUp)):
            raise AssertionError(f"unexpected {step} with the default restart policy and no back-off")
    return list(by_id.values())


def running(actual):
    return sum(1 for i in actual if i.running)


@settings(max_examples=400)
@given(actual=instances, scale=st.integers(0, 8), surge=st.integers(0, 3))
def test_converges_to_exactly_scale_current_instances(actual, scale, surge):
    g = goal(scale)
    for _ in range(60):
        steps = plan(g, actual, surge=surge)
        if not steps:
            break
        actual = apply(actual, steps.steps)
    else:
        raise AssertionError("did not converge in 60 rounds")
    assert running(actual) == scale
    assert all(i.spec_hash == CURRENT.spec_hash and i.running for i in actual)
    assert plan(g, actual, surge=surge).steps == ()  # idempotent at the fixpoint


@settings(max_examples=400)
@given(actual=instances, scale=st.integers(0, 8), surge=st.integers(0, 3))
def test_each_round_keeps_availability_and_bounds_surge(actual, scale, surge):
    g = goal(scale)
    for _ in range(60):
        steps = plan(g, actual, surge=surge)
        if not steps:
            break
        before = running(actual)
        actual = apply(actual, steps.steps)
        after = running(actual)
        allowance = 1 if surge == 0 else 0
        assert after >= min(scale, before) - allowance
        assert after <= max(before, scale + max(surge, 0))


@given(scale=st.integers(1, 8), surge=st.integers(1, 3))
def test_rolling_update_never_below_scale_nor_above_scale_plus_surge(scale, surge):
    actual = [instance(OLD, "running", float(i)) for i in range(scale)]
    g = goal(scale)
    rounds = 0
    while steps := plan(g, actual, surge=surge):
        # Removals run before creates within a round: check the low point between phases too.
        removed = {s.instance.id for s in steps.steps if isinstance(s, Remove)}
        assert running([i for i in actual if i.id not in removed]) >= scale
        actual = apply(actual, steps.steps)
        assert scale <= running(actual) <= scale + surge
        rounds += 1
        assert rounds < 50
    assert all(i.spec_hash == CURRENT.spec_hash for i in actual)


@given(actual=instances)
def test_plan_is_deterministic(actual):
    assert plan(goal(3), actual) == plan(goal(3), actual)


@given(actual=instances)
def test_stopped_and_absent_goals(actual):
    assert running(apply(actual, plan(goal(3, "stopped"), actual).steps)) == 0
    assert apply(actual, plan(None, actual).steps) == []
