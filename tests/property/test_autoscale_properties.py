"""The autoscale decision (mariposa/metrics/autoscale.py) over any samples, scale and settings:
it never leaves ``[min, max]``, never moves against its trigger's direction, never decides inside
``retrigger_delay``, and never decides on a window its samples do not cover."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mariposa.metrics.autoscale import decide
from mariposa.metrics.history import Sample
from mariposa.model import AutoscaleSpec, MetricTriggerSpec, ServiceSpec

NOW = 10_000.0

triggers = st.builds(
    MetricTriggerSpec,
    name=st.sampled_from(["a", "b", "c"]),
    metric=st.sampled_from(["cpu", "memory", "service.db.cpu"]),
    operator=st.sampled_from([">", ">=", "<", "<="]),
    value=st.floats(0, 200),
    time=st.floats(1, 300),
    action=st.sampled_from(["increment", "decrement"]),
    instances=st.integers(1, 5),
)
autoscales = st.builds(
    lambda enable, low, span, delay: AutoscaleSpec(enable=enable, min=low, max=None if span is None else low + span,
                                                   retrigger_delay=delay),
    st.sampled_from(["true", "notify"]), st.integers(1, 10), st.one_of(st.none(), st.integers(0, 10)),
    st.floats(1, 600),
)


@st.composite
def instance_samples(draw, interval: float) -> list[Sample]:
    start = draw(st.floats(0, 400))
    count = draw(st.integers(0, 200))
    jitter = draw(st.lists(st.floats(0, interval * 3), min_size=count, max_size=count))
    out, t = [], NOW - start
    for step in jitter:
        out.append(Sample(when=t, cpu=draw(st.floats(0, 200)), memory=draw(st.integers(0, 1000)),
                          memory_limit=draw(st.sampled_from([None, 1000])), cpu_limit=None,
                          net_rx=0, net_tx=0, block_read=0, block_write=0))
        t += step
        if t > NOW:
            break
    return out


@settings(max_examples=300, deadline=None)
@given(st.data(), st.lists(triggers, min_size=1, max_size=3), autoscales, st.integers(0, 30),
       st.sampled_from([1.0, 2.0, 10.0]), st.one_of(st.none(), st.floats(NOW - 1000, NOW)))
def test_decisions_keep_to_the_range_and_the_direction(data, chosen, auto, scale, interval, last_scaled):
    spec = ServiceSpec(name="web", image="busybox", metric_triggers=tuple(chosen), autoscale=auto)
    samples = {name: data.draw(st.lists(instance_samples(interval), max_size=3)) for name in ("web", "db")}
    decision = decide(spec, scale, samples, NOW, last_scaled, interval).decision
    if decision is None:
        return
    assert decision.current == scale
    assert auto.min <= decision.target and (auto.max is None or decision.target <= auto.max)
    assert (scale < decision.target) if decision.action == "increment" else (decision.target < scale)
    assert last_scaled is None or NOW >= last_scaled + auto.retrigger_delay


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([">", "<"]), st.integers(1, 10), st.integers(0, 10), st.integers(0, 40),
       st.floats(5, 120), st.sampled_from([1.0, 2.0, 10.0]), st.floats(0, 1))
def test_a_held_and_covered_window_decides_unless_at_the_bound(operator, low, span, scale, window, interval, late):
    """Samples every interval over the whole window, all past the threshold: a decision,
    exactly when the bound leaves room; the same samples starting too late: none."""
    action = "increment" if operator == ">" else "decrement"
    trigger = MetricTriggerSpec(name="t", metric="cpu", operator=operator, value=50.0, time=window, action=action)
    spec = ServiceSpec(name="web", image="busybox", metric_triggers=(trigger,),
                       autoscale=AutoscaleSpec(enable="true", min=low, max=low + span))
    level = 90.0 if operator == ">" else 10.0

    def covering(first: float) -> list[Sample]:
        out, t = [], first
        while t <= NOW:
            out.append(Sample(when=t, cpu=level, memory=0, memory_limit=None, cpu_limit=None, net_rx=0, net_tx=0,
                              block_read=0, block_write=0))
            t += interval
        return out

    span_start = NOW - max(window, interval)
    decision = decide(spec, scale, {"web": [covering(span_start)]}, NOW, None, interval).decision
    room = scale < low + span if action == "increment" else scale > low
    assert (decision is not None) == room
    if decision is not None:
        assert low <= decision.target <= low + span
    too_late = covering(span_start + interval * (1.5 + late))
    assert decide(spec, scale, {"web": [too_late]}, NOW, None, interval).decision is None
