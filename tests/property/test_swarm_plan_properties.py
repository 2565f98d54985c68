"""The Swarm planner (mariposa/swarm/converge.py ``plan_swarm``) against a fake Swarm: whatever
the Swarm holds (main service, canary, orphans, on any version and replica count, mid-rollout),
carrying out each round's steps converges to the goal, planning again at convergence is empty,
a canary's N tasks run the new version beside scale - N old ones, a canary folds back only once
the main service is whole, and a rollout the Swarm paused fails with its message."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from mariposa.model import ServiceGoal, ServiceSpec
from mariposa.swarm.converge import (
    CreateService,
    Observed,
    Paused,
    RemoveService,
    ScaleService,
    UpdateService,
    WaitFor,
    observe,
    plan_swarm,
)

MAIN = "mariposa-p-web-12345678"
CANARY = MAIN + "-canary"
NEW_SPEC = ServiceSpec(name="web", image="img", environment=(("V", "new"),))
NEW = NEW_SPEC.spec_hash
OLD = ServiceSpec(name="web", image="img", environment=(("V", "old"),)).spec_hash


def goal(scale: int, desired: str = "running", keep_stale: bool = False) -> ServiceGoal:
    return ServiceGoal(project_id="p", project_name="p", version_id="v2", spec=NEW_SPEC, scale=scale,
                       desired=desired, keep_stale=keep_stale)  # type: ignore[arg-type]


def settle(o: Observed) -> Observed:
    """The Swarm finishes what it was doing: every replica runs the service's spec."""
    return attrs.evolve(o, running=o.replicas, update_state="completed" if o.update_state else None)


def apply(swarm: dict[str, Observed], steps) -> None:
    """The steps on the fake Swarm; a changed service starts rolling (nothing runs new yet)."""
    for step in steps:
        match step:
            case CreateService(name, n):
                swarm[name] = Observed(name, NEW, n, running=0)
            case UpdateService(name, n):
                swarm[name] = attrs.evolve(swarm[name], spec_hash=NEW, replicas=n, running=0, update_state="updating")
            case ScaleService(name, n):
                swarm[name] = attrs.evolve(swarm[name], replicas=n, running=min(swarm[name].running, n))
            case RemoveService(name, _):
                del swarm[name]


def run(g: ServiceGoal | None, swarm: dict[str, Observed], count: int | None = None) -> dict[str, Observed]:
    for _ in range(20):
        steps = plan_swarm(g, list(swarm.values()), MAIN, count)
        assert not any(isinstance(s, Paused) for s in steps)
        if not steps:
            return swarm
        if all(isinstance(s, WaitFor) for s in steps):
            for name in list(swarm):
                swarm[name] = settle(swarm[name])
            continue
        apply(swarm, steps)
    raise AssertionError(f"did not converge: {swarm}")


service = st.builds(
    lambda name, h, replicas, running, state: Observed(name, h, replicas, min(running, replicas), state),
    st.sampled_from([MAIN, CANARY, MAIN + "-old"]), st.sampled_from([NEW, OLD]), st.integers(0, 6),
    st.integers(0, 6), st.sampled_from([None, "updating", "completed"]))
swarms = st.lists(service, max_size=3).map(lambda xs: {o.name: o for o in xs})


@settings(max_examples=300)
@given(swarm=swarms, scale=st.integers(0, 8))
def test_converges_to_one_service_on_the_goal(swarm, scale):
    out = run(goal(scale), swarm)
    assert list(out) == [MAIN]
    assert out[MAIN].spec_hash == NEW and out[MAIN].replicas == scale == out[MAIN].running
    assert plan_swarm(goal(scale), list(out.values()), MAIN) == []


@given(swarm=swarms, scale=st.integers(0, 8))
def test_stopped_is_zero_replicas_and_removed_is_nothing(swarm, scale):
    out = run(goal(scale, desired="stopped"), dict(swarm))
    assert list(out) == [MAIN] and out[MAIN].replicas == 0
    assert run(None, dict(swarm)) == {}


@given(scale=st.integers(1, 8), n=st.integers(1, 8), old_running=st.integers(0, 8))
def test_canary_runs_n_new_beside_the_old_and_stays(scale, n, old_running):
    swarm = {MAIN: Observed(MAIN, OLD, scale, running=min(old_running, scale))}
    out = run(goal(scale, keep_stale=True), swarm, count=n)
    n = min(n, scale)
    assert out[MAIN].spec_hash == OLD and out[MAIN].replicas == scale - n
    if n:
        assert out[CANARY].spec_hash == NEW and out[CANARY].replicas == n
    # the reconciler (no count) finds nothing to do: the canary and the rest stay
    assert [s for s in plan_swarm(goal(scale, keep_stale=True), list(out.values()), MAIN)
            if not isinstance(s, WaitFor)] == []
    # the next reprovision folds them back
    folded = run(goal(scale), out)
    assert list(folded) == [MAIN] and folded[MAIN].spec_hash == NEW and folded[MAIN].replicas == scale


@given(scale=st.integers(1, 6), running=st.integers(0, 5))
def test_the_canary_goes_only_once_the_main_service_is_whole(scale, running):
    swarm = [Observed(MAIN, NEW, scale, running=min(running, scale - 1), update_state="updating"),
             Observed(CANARY, NEW, 1, running=1)]
    steps = plan_swarm(goal(scale), swarm, MAIN)
    assert not any(isinstance(s, RemoveService) for s in steps)
    assert any(isinstance(s, WaitFor) for s in steps)


@given(message=st.text(min_size=1, max_size=30))
def test_a_paused_rollout_fails_with_the_swarms_message(message):
    swarm = [Observed(MAIN, NEW, 3, running=2, update_state="paused", update_message=message)]
    assert plan_swarm(goal(3), swarm, MAIN) == [Paused(MAIN, message)]
    # a goal on another spec (a revert) updates it instead: the pause is of the old rollout
    assert isinstance(plan_swarm(goal(3), [attrs.evolve(swarm[0], spec_hash=OLD)], MAIN)[0], UpdateService)


def test_observe_counts_running_tasks_of_the_services_own_spec():
    services = [{"ID": "s1", "Spec": {"Name": MAIN, "Labels": {"io.mariposa.project": "p", "io.mariposa.service": "web",
                                                           "io.mariposa.spec-hash": NEW},
                                      "Mode": {"Replicated": {"Replicas": 3}}},
                 "UpdateStatus": {"State": "updating", "Message": "update in progress"}},
                {"ID": "s2", "Spec": {"Name": "other", "Labels": {"io.mariposa.project": "p",
                                                                   "io.mariposa.service": "db"}}}]

    def task(h: str, state: str = "running", desired: str = "running") -> dict:
        return {"ServiceID": "s1", "DesiredState": desired, "Status": {"State": state},
                "Spec": {"ContainerSpec": {"Labels": {"io.mariposa.spec-hash": h}}}}

    tasks = [task(NEW), task(NEW), task(OLD), task(NEW, "starting"), task(NEW, desired="shutdown")]
    assert observe(services, tasks, "p", "web") == [
        Observed(MAIN, NEW, 3, running=2, update_state="updating", update_message="update in progress")]
