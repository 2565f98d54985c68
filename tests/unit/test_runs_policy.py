"""The scheduler's decisions on numbers (mariposa/runs/policy.py): no daemon, no clock."""

from __future__ import annotations

import attrs

from mariposa.model import ServiceSpec
from mariposa.runs import policy
from mariposa.store.runs import RunRow

T = 1_800_000_000.0


def spec(**kw) -> ServiceSpec:
    return ServiceSpec(name="job", image="x", service_type="scheduled", schedule=("*/5 * * * * *",), **kw)


def run(state="running", scheduled=T, **kw) -> RunRow:
    fields = dict(id=f"r{scheduled}{state}", project_id="p", service="job", trigger="schedule", scheduled=scheduled,
                  queued=scheduled, started=scheduled if state == "running" else None, ended=None, exit_code=None,
                  state=state, instance_id=None, attempt=0, not_before=None, stop_requested=False,
                  idempotency_key=None, env=(), reason=None, author=None)
    return RunRow(**{**fields, **kw})


def states(decision) -> list[tuple[float, str, str]]:
    return [(w - T, trigger, state) for w, trigger, state, _ in decision.firings]


def test_forbid_skips_while_a_run_is_active_and_moves_the_cursor():
    d = policy.on_firings(spec(), 1, T, T + 10, T, [run()])
    assert states(d) == [(5, "schedule", "skipped"), (10, "schedule", "skipped")]
    assert d.fired_through == T + 10
    assert states(policy.on_firings(spec(), 1, T, T + 10, T, [])) == [(5, "schedule", "queued"),
                                                                       (10, "schedule", "skipped")]


def test_replace_stops_what_runs_and_keeps_only_the_newest_firing():
    d = policy.on_firings(spec(concurrency="replace"), 1, T, T + 10, T, [run(), run("queued", T - 1)])
    assert states(d) == [(5, "schedule", "skipped"), (10, "schedule", "queued")]
    assert set(d.stop) == {run().id, run("queued", T - 1).id}


def test_queue_is_bounded_and_allow_by_scale():
    d = policy.on_firings(spec(concurrency="queue", queue_limit=1), 1, T, T + 10, T, [run()])
    assert states(d) == [(5, "schedule", "queued"), (10, "schedule", "skipped")]
    d = policy.on_firings(spec(concurrency="allow"), 2, T, T + 10, T, [run()])
    assert states(d) == [(5, "schedule", "queued"), (10, "schedule", "skipped")]


def test_catch_up_all_keeps_the_newest_up_to_the_limit_and_records_the_rest():
    d = policy.on_firings(spec(catch_up="all", catch_up_limit=2), 1, T, T + 21, T + 21, [])
    assert states(d) == [(5, "schedule", "missed"), (10, "schedule", "missed"), (15, "catch-up", "queued"),
                         (20, "catch-up", "queued")]
    # a firing after the scheduler woke up is no catch-up, however late the pass that sees it
    d = policy.on_firings(spec(catch_up="none"), 1, T, T + 12, T + 7, [])
    assert states(d) == [(5, "schedule", "missed"), (10, "schedule", "queued")]


def test_a_long_downtime_records_a_bounded_number_of_firings():
    # a month of a schedule every 5 s is 518,400 firings: the newest 1,000 are looked at (quickly)
    d = policy.on_firings(spec(catch_up="latest"), 1, T, T + 30 * 86400, T + 30 * 86400 + 1, [])
    assert len(d.firings) == policy.MAX_FIRINGS and states(d)[-1] == (30 * 86400, "catch-up", "queued")
    assert states(d)[0][0] == 30 * 86400 - 5 * (policy.MAX_FIRINGS - 1)


def test_startable_waits_for_back_off_deadline_and_concurrency():
    s = spec(starting_deadline=3.0)
    late = run("queued", T)
    backing_off = run("queued", T + 1, attempt=1, not_before=T + 10)
    assert policy.startable(s, 1, [late, backing_off], T + 5) == []  # past its deadline; still backing off
    assert policy.startable(s, 1, [late, backing_off], T + 2) == [late]
    assert policy.startable(s, 1, [run(), late], T + 2) == []  # one at a time
    assert policy.startable(attrs.evolve(s, concurrency="allow"), 2, [run(), late], T + 2) == [late]


def test_next_wake_is_the_soonest_future_thing_and_never_a_past_one():
    s = spec(timeout=4.0, starting_deadline=30.0)
    assert policy.next_wake(s, T, [], T + 1) == T + 5
    assert policy.next_wake(s, T, [run(started=T + 0.5)], T + 1) == T + 4.5  # the timeout
    # a back-off already over, a timeout already acted on: not a reason to wake at once (no spin)
    assert policy.next_wake(s, T, [run("queued", not_before=T), run(started=T - 10)], T + 1) == T + 5
    assert policy.next_wake(None, None, [], T) == T + policy.MAX_SLEEP


def test_retries_follow_the_back_off():
    s = spec(retries=2)
    assert policy.retry_at(s, run(), "failed", T) == T + 1
    assert policy.retry_at(s, run(attempt=1), "failed", T) == T + 2
    assert policy.retry_at(s, run(attempt=2), "failed", T) is None
    assert policy.retry_at(s, run(), "stopped", T) is None


# ---- the planner leaves runs to the scheduler (converge/plan.py) ----------------------------------


def _instance(spec: ServiceSpec, n: int, run_id: str | None = None, running: bool = True):
    from mariposa.model import Instance

    return Instance(id=f"i{n}", runtime_id=f"r{n}", name=f"p-job-{n}", project_id="p", service="job",
                    spec_hash=spec.spec_hash, version_id="v", state="running" if running else "exited",
                    created=float(n), compute_type="docker", run_id=run_id, exit_code=None if running else 0)


def _goal(spec: ServiceSpec, scale: int = 1):
    from mariposa.model import ServiceGoal

    return ServiceGoal(project_id="p", project_name="p", version_id="v", spec=spec, scale=scale, desired="running")


def test_a_scheduled_service_has_no_continuous_goal():
    from mariposa.converge.plan import plan
    from mariposa.model import Remove

    s = spec()
    # its runs, running or ended, are no drift: nothing is made, started or removed
    assert not plan(_goal(s, 3), [_instance(s, 1, "run1"), _instance(s, 2, "run2", running=False)]).steps
    # what a continuous version of it left goes
    steps = plan(_goal(s), [_instance(s, 1, "run1"), _instance(s, 2)]).steps
    assert [(type(x), x.instance.id) for x in steps] == [(Remove, "i2")]


def test_a_service_made_continuous_again_takes_the_runs_away_and_runs_its_scale():
    from mariposa.converge.plan import plan
    from mariposa.model import Create, Remove

    s = ServiceSpec(name="job", image="x")
    steps = plan(_goal(s, 1), [_instance(s, 1, "run1")]).steps
    assert sorted(type(x).__name__ for x in steps) == ["Create", "Remove"]
    assert [x.instance.id for x in steps if isinstance(x, Remove)] == ["i1"]
    assert any(isinstance(x, Create) for x in steps)
