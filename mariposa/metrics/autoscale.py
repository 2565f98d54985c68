"""Whether a service's metric triggers call for a scale now: a pure function of the service's
spec, its scale, the samples of the instances its triggers watch, the time and when it was last
scaled. No I/O, no clock: the loop that reads the world and acts is metrics/autoscaler.py, and
tests/property/test_autoscale.py holds the bounds.

Semantics, in the order they are applied:
- Nothing while ``retrigger_delay`` has not passed since the service was last scaled (by
  anyone: an operator, a manifest, the autoscaler) or last announced in notify mode.
- A service's metric at one sample time is the mean over its instances sampled then (the
  collector samples every instance in one round, so a round is one time).
- A trigger holds when its condition holds at every sample time in ``[now - time, now]`` and
  those samples cover the window: the oldest is at most one interval after its start, the newest
  at most two intervals old, and no two are more than two intervals apart (a gap, a daemon
  restart, a new service: wait for a full window again).
- cpu is percent of one core per instance (of its cpus limit with ``of_limit``); memory percent
  is of the instance's limit. An instance without the limit a trigger needs gives it nothing to
  judge: the trigger cannot apply, and says so (``Outcome.unusable``) for the loop to announce.
- The first trigger that holds (manifest order) and can move the scale decides. The target is
  clamped to ``[min, max]``, and nothing is decided when the scale is at that bound already
  (an increment never lowers the scale, a decrement never raises it).
"""

from __future__ import annotations

import itertools
import operator as op
from collections.abc import Callable, Mapping, Sequence

import attrs

from mariposa.manifest.autoscale import describe_value, metric_kind, metric_service
from mariposa.metrics.history import Sample
from mariposa.model import AutoscaleSpec, MetricTriggerSpec, ServiceSpec

OPERATORS: dict[str, Callable[[float, float], bool]] = {">": op.gt, ">=": op.ge, "<": op.lt, "<=": op.le}
DEFAULT_AUTOSCALE = AutoscaleSpec()  # metric triggers without `autoscale:` notify (the spec's default)


@attrs.frozen
class Decision:
    trigger: str
    action: str  # increment | decrement
    current: int
    target: int
    observed: float  # the metric's mean over the window, in the threshold's unit (percent or bytes)
    reason: str  # "highcpu: cpu 93% > 80% for 2m"


@attrs.frozen
class Outcome:
    decision: Decision | None = None
    # trigger name -> why it cannot apply (no limit to be a percentage of), for the loop to say once
    unusable: Mapping[str, str] = attrs.field(factory=dict)


def watched_service(spec: ServiceSpec, trigger: MetricTriggerSpec) -> str:
    return metric_service(trigger.metric) or spec.name


def settings(spec: ServiceSpec) -> AutoscaleSpec:
    return spec.autoscale or DEFAULT_AUTOSCALE


def decide(
    spec: ServiceSpec, scale: int, samples: Mapping[str, Sequence[Sequence[Sample]]], now: float,
    last_scaled: float | None, interval: float,
) -> Outcome:
    """``samples``: by service name, the sample lists of its instances (any order, any span: only
    those in each trigger's window count)."""
    auto = settings(spec)
    if not spec.metric_triggers or auto.enable == "false":
        return Outcome()
    if last_scaled is not None and now < last_scaled + auto.retrigger_delay:
        return Outcome()
    unusable: dict[str, str] = {}
    for trigger in spec.metric_triggers:
        target = _target(trigger, scale, auto)
        if target is None:
            continue
        instances = samples.get(watched_service(spec, trigger), ())
        series, why = _series(trigger, instances, now, interval)
        if why is not None:
            unusable[trigger.name] = why
            continue
        if series is None or not _holds(trigger, series, now, interval):
            continue
        observed = sum(v for _, v in series) / len(series)
        return Outcome(Decision(trigger=trigger.name, action=trigger.action, current=scale, target=target,
                                observed=observed, reason=reason(trigger, observed)), unusable)
    return Outcome(None, unusable)


def _target(trigger: MetricTriggerSpec, scale: int, auto: AutoscaleSpec) -> int | None:
    """The scale the trigger would set, clamped to ``[min, max]``; None when that does not move
    the scale the trigger's way (at the bound already, or outside the range on the far side)."""
    step = trigger.instances if trigger.action == "increment" else -trigger.instances
    target = max(scale + step, auto.min)
    if auto.max is not None:
        target = min(target, auto.max)
    moves = target > scale if trigger.action == "increment" else target < scale
    return target if moves else None


def _value(trigger: MetricTriggerSpec, sample: Sample) -> float | None | str:
    """The sample's number in the threshold's unit; a string says why there is none."""
    if metric_kind(trigger.metric) == "cpu":
        if not trigger.of_limit:
            return sample.cpu
        if not sample.cpu_limit:
            return "its instances have no cpu limit to be a percentage of (of_limit)"
        return sample.cpu / sample.cpu_limit
    if trigger.value_bytes is not None:
        return float(sample.memory)
    percent = sample.memory_percent
    if percent is None:
        return "its instances have no memory limit to be a percentage of"
    return percent


def _series(
    trigger: MetricTriggerSpec, instances: Sequence[Sequence[Sample]], now: float, interval: float,
) -> tuple[list[tuple[float, float]] | None, str | None]:
    """(time, mean over the instances) for each sample time in the trigger's window, oldest first;
    or why the trigger cannot apply."""
    start = now - max(trigger.time, interval)
    points: list[tuple[float, float]] = []
    for samples in instances:
        for sample in samples:
            if start <= sample.when <= now:
                value = _value(trigger, sample)
                if isinstance(value, str):
                    return None, value
                if value is not None:
                    points.append((sample.when, value))
    if not points:
        return None, None
    points.sort()
    # one collector round is one time; readings of one round a little apart still make one
    rounds: list[list[tuple[float, float]]] = []
    for when, value in points:
        if rounds and when - rounds[-1][0][0] <= interval / 2:
            rounds[-1].append((when, value))
        else:
            rounds.append([(when, value)])
    return [(r[0][0], sum(v for _, v in r) / len(r)) for r in rounds], None


def _holds(trigger: MetricTriggerSpec, series: list[tuple[float, float]], now: float, interval: float) -> bool:
    window = max(trigger.time, interval)
    times = [t for t, _ in series]
    if times[0] > now - window + interval or times[-1] < now - 2 * interval:
        return False  # the window is not covered yet (or no longer fresh)
    if any(b - a > 2 * interval for a, b in itertools.pairwise(times)):
        return False
    threshold = float(trigger.value_bytes) if trigger.value_bytes is not None else float(trigger.value or 0.0)
    compare = OPERATORS[trigger.operator]
    return all(compare(v, threshold) for _, v in series)


def reason(trigger: MetricTriggerSpec, observed: float) -> str:
    """``highcpu: cpu 93% > 80% for 2m``: what crossed what, for how long (the window's mean)."""
    what = trigger.metric + (" of limit" if trigger.of_limit else "")
    shown = _bytes(observed) if trigger.value_bytes is not None else f"{observed:.0f}%"
    return f"{trigger.name}: {what} {shown} {trigger.operator} {describe_value(trigger)} for {_duration(trigger.time)}"


def _bytes(n: float) -> str:
    for suffix, unit in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n >= unit:
            return f"{n / unit:.1f}{suffix}"
    return f"{n:.0f}b"


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 3600:g}h" if seconds % 3600 == 0 else f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def enforced_range(spec: ServiceSpec | None) -> tuple[int, int] | None:
    """``[min, max]`` when autoscale scales the service (``enable: true``): the range its scale
    keeps to whoever sets it; None when it only announces (or is off)."""
    if spec is None or spec.autoscale is None or spec.autoscale.enable != "true" or spec.autoscale.max is None:
        return None
    return spec.autoscale.min, spec.autoscale.max


def clamped(scale: int, spec: ServiceSpec | None) -> int:
    """``scale`` moved into the enforced range, if any (a new version's range, a first start)."""
    bounds = enforced_range(spec)
    return scale if bounds is None else min(max(scale, bounds[0]), bounds[1])


def outside_range(spec: ServiceSpec | None, target: int) -> str | None:
    """Why an operator's scale to ``target`` is refused, or None: inside the range it is kept
    until the next trigger; outside it the autoscaler and the operator would fight."""
    bounds = enforced_range(spec)
    if bounds is None or bounds[0] <= target <= bounds[1]:
        return None
    assert spec is not None
    return (f"{spec.name} autoscales between {bounds[0]} and {bounds[1]} (autoscale.min/max); scale within that "
            "range or set autoscale.enable: false")
