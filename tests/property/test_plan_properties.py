"""Hypothesis properties of the pure planner, over arbitrary goals and actual states, run
round after round on a simulated clock the way the task loop runs it: its supervision, its
judgement of rollouts (failure, progress deadline) and its replacement back-off."""

from __future__ import annotations

import itertools

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from mariposa.converge.plan import plan, ready_time
from mariposa.converge.supervise import REPLACE
from mariposa.model import (
    Create,
    FailRollout,
    GiveUp,
    HealthCheck,
    Instance,
    InstanceState,
    NoteReplacement,
    Remove,
    Rollout,
    ServiceGoal,
    ServiceSpec,
    Start,
    Stop,
    Wait,
)

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


# ---- the decisions that used to live in the executor ------------------------------------------

new_states = st.sampled_from(["running", "unhealthy", "exited", "creating"])


def made(state: str, created: float, spec: ServiceSpec = CURRENT) -> Instance:
    """An instance in one of ``new_states`` ("unhealthy": running, and its checks fail)."""
    if state == "unhealthy":
        return attrs.evolve(instance(spec, "running", created), health="unhealthy", exit_code=None)
    return attrs.evolve(instance(spec, state, created), exit_code=1 if state == "exited" else None)


def failed(i: Instance) -> bool:
    return i.state == InstanceState.EXITED or i.health == "unhealthy"


@settings(max_examples=300, deadline=None)
@given(old=st.integers(1, 6), new=st.lists(new_states, min_size=1, max_size=6), scale=st.integers(1, 6),
       surge=st.integers(0, 3), idle=st.floats(0, 599))
def test_a_failed_new_instance_fails_the_rollout_and_old_ones_keep_serving(old, new, scale, surge, idle):
    olds = [instance(OLD, "running", float(i)) for i in range(old)]
    news = [made(state, 100.0 + n) for n, state in enumerate(new)]
    rollout = Rollout(frozenset(i.id for i in news), last_progress=1000.0 - idle)
    steps = plan(goal(scale), olds + news, surge=surge, now=1000.0, rollout=rollout)
    bad = [i for i in news if failed(i)]
    if bad:
        [step] = steps.steps  # nothing else happens in that round: no old instance is removed
        assert isinstance(step, FailRollout) and step.failed == tuple(bad)
        assert f"{old} instances of the previous version keep serving" in step.reason
    else:
        assert not steps.count(FailRollout)
    # instances the task did not make never fail it
    assert not plan(goal(scale), olds + news, surge=surge, now=1000.0, rollout=Rollout(last_progress=1000.0)
                    ).count(FailRollout)


@settings(max_examples=300, deadline=None)
@given(deadline=st.floats(1, 1000), idle=st.one_of(st.floats(0, 2000), st.just(0.0)), exact=st.booleans(),
       surge=st.integers(0, 2))
def test_the_progress_deadline_fails_exactly_when_passed(deadline, idle, exact, surge):
    spec = attrs.evolve(CURRENT, progress_deadline=deadline)
    idle = deadline if exact else idle
    now = 5000.0
    new = attrs.evolve(instance(spec, "running", 10.0), started_at=now - 1.0)  # up, not yet ready
    actual = [instance(OLD, "running", 0.0), instance(OLD, "running", 1.0), new]
    last = now - idle
    steps = plan(goal(2, spec=spec), actual, surge=surge, now=now,
                 rollout=Rollout(frozenset({new.id}), last_progress=last))
    assert bool(steps.count(FailRollout)) is (now - last > deadline)
    # without old instances there is no rollout to fail
    assert not plan(goal(2, spec=spec), [new], now=now, rollout=Rollout(frozenset(), last)).count(FailRollout)


streak = st.integers(0, 12)


@settings(max_examples=300, deadline=None)
@given(count=streak, since=st.floats(0, 700), up=st.integers(0, 5), scale=st.integers(1, 6))
def test_no_create_while_the_replacement_back_off_holds(count, since, up, scale):
    now = 10_000.0
    g = goal(scale, replacements=count, last_replacement_at=now - since if count else None)
    actual = [attrs.evolve(instance(CURRENT, "running", float(i)), started_at=0.0) for i in range(up)]
    steps = plan(g, actual, now=now)
    hold = REPLACE.until(count, g.last_replacement_at, now)
    creates = steps.count(Create)
    if up >= scale:
        assert creates == 0
    elif now < hold:
        assert creates == 0
        [wait] = [s for s in steps.steps if isinstance(s, Wait)]
        assert wait.until == hold and "backing off after failed instances" in wait.reason
    else:
        assert creates == scale - up  # the back-off has passed: the service goes back to scale


@settings(max_examples=300, deadline=None)
@given(count=streak, since=st.floats(0, 700), healthy=st.integers(0, 4), sick=st.integers(1, 3))
def test_taking_out_a_failed_instance_grows_the_streak_and_holds_at_once(count, since, healthy, sick):
    now = 10_000.0
    scale = healthy + sick
    g = goal(scale, replacements=count, last_replacement_at=now - since if count else None)
    actual = ([instance(CURRENT, "running", float(i)) for i in range(healthy)]
              + [made("unhealthy", 50.0 + i) for i in range(sick)])
    steps = plan(g, actual, now=now)
    assert steps.count(Remove) == sick
    current = REPLACE.streak(count, g.last_replacement_at, now)
    [note] = [s for s in steps.steps if isinstance(s, NoteReplacement)]
    assert note == NoteReplacement(current + 1, now)
    held = now < REPLACE.until(current, g.last_replacement_at, now) or REPLACE.delay(current + 1) > 0
    assert steps.count(Create) == (0 if held else sick)


def execute(g: ServiceGoal, actual: list[Instance], steps, now: float, created: set[str]):
    """What the executor does, step for step, leaving none out: a new goal (the streak it
    records) and a new actual state."""
    by_id = {i.id: i for i in actual}
    for step in steps:
        if isinstance(step, NoteReplacement):
            g = attrs.evolve(g, replacements=step.count, last_replacement_at=step.at)
        elif isinstance(step, Create):
            new = attrs.evolve(instance(g.spec, "running", now), started_at=now, health="healthy", health_since=now)
            by_id[new.id] = new
            created.add(new.id)
        elif isinstance(step, (FailRollout, GiveUp)):
            raise AssertionError(f"unexpected {step}")
    return g, apply(list(by_id.values()), [s for s in steps if not isinstance(s, (Create, NoteReplacement))],
                    now, g.spec)


@settings(max_examples=200, deadline=None)
@given(actual=st.lists(st.builds(made, new_states, st.floats(0, 1000), st.sampled_from([CURRENT, OLD])), max_size=10),
       scale=st.integers(0, 6), surge=st.integers(0, 3), count=streak, since=st.floats(0, 400))
def test_applying_every_step_converges_and_never_creates_during_a_hold(actual, scale, surge, count, since):
    now = 2000.0
    g = goal(scale, replacements=count, last_replacement_at=now - since if count else None)
    created: set[str] = set()
    for _ in range(120):
        steps = plan(g, actual, surge=surge, now=now)
        if not steps:
            break
        if steps.count(Create):
            current = REPLACE.streak(g.replacements, g.last_replacement_at, now)
            assert now >= REPLACE.until(current, g.last_replacement_at, now)
            if steps.count(NoteReplacement):
                assert REPLACE.delay(current + 1) == 0
        if not steps.only_waiting:
            g, actual = execute(g, actual, steps.steps, now, created)
        now = advance(steps, now)
    else:
        raise AssertionError("did not converge")
    assert running(actual) == scale == len(actual)
    assert all(i.spec_hash == CURRENT.spec_hash and i.health != "unhealthy" for i in actual)


def test_a_vm_with_a_named_volume_is_replaced_old_first():
    """Issue 15: a VM's named volume is a disk one VM attaches at a time (QEMU locks it), so its
    rollout removes the old VM before it makes the new one, as with a pinned host port."""
    from mariposa.model import MountSpec

    vm_old = ServiceSpec(name="web", image="img:1", compute_type="kvm", volumes=(MountSpec("volume", "data", "/data"),))
    vm_new = attrs.evolve(vm_old, image="img:2")
    old = attrs.evolve(instance(vm_old, InstanceState.RUNNING, 0.0), compute_type="kvm")
    steps = plan(goal(1, spec=vm_new), [old], now=100.0).steps
    kinds = [type(s) for s in steps]
    assert Remove in kinds and Create in kinds and kinds.index(Remove) < kinds.index(Create), kinds
    plain = attrs.evolve(vm_new, volumes=())
    steps = plan(goal(1, spec=plain), [attrs.evolve(old, spec_hash=attrs.evolve(vm_old, volumes=()).spec_hash)],
                 now=100.0).steps
    assert steps and isinstance(steps[0], Create) and not any(isinstance(s, Remove) for s in steps)  # new first
