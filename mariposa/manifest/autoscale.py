"""Metric triggers (a ``triggers`` entry with a ``metric``) and ``autoscale``: thresholds on the
numbers the collector samples (mariposa/metrics/), and what crossing one does.

Why a metric trigger shares ``triggers`` with the public trigger URLs (manifest/triggers.py): the
spec puts both there. An entry is a metric trigger when it has any key only metric triggers have
(``metric``, ``operator``, ``value``, ...), so a metric trigger missing its ``metric`` is told so
instead of being read as a public trigger with unknown options. Names are the project's across
both kinds (manifest/validate.py).

Choices, each refused where it is written when broken:
- ``value``: ``80%`` or ``80`` is a percentage (of one core for cpu, of the cpus limit with
  ``of_limit``, of the memory limit for memory); for memory a size with a unit (``512m``) is an
  absolute threshold instead. A percentage of a limit needs that limit (``memory``, or a
  ``package`` for cpus), checked here for the service's own metrics and by the project for
  another service's.
- ``time``: 1 s to 1 h, since the last hour is what the daemon keeps in memory; a window shorter
  than the daemon's ``metrics_interval`` is judged on the latest sample alone.
- ``autoscale.enable: true`` needs a ``max`` (an autoscaler without a ceiling lets a runaway
  metric take the host); ``notify`` (the default) and ``false`` do not (no max: no upper bound on
  what is announced). With ``enable: true`` a ``scale:`` outside ``[min, max]`` is refused.
- ``notify_email`` is out of scope: a webhook to a mail relay does it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mariposa.manifest.report import MAX_SCALE, _At
from mariposa.manifest.scheduling import parse_duration
from mariposa.manifest.shapes import _Shapes, _shown
from mariposa.manifest.units import format_size, parse_size
from mariposa.model import METRIC_OPERATORS, AutoscaleSpec, MetricTriggerSpec

METRIC_TRIGGER_KEYS = ("name", "metric", "operator", "value", "of_limit", "time", "action", "instances")
# keys that make an entry a metric trigger (``source`` is the spec's other spelling of ``metric``)
METRIC_ONLY_KEYS = frozenset({"metric", "source", "operator", "value", "of_limit", "time", "instances"})
METRIC_RE = re.compile(r"(?:service\.(?P<service>[^.]+)\.)?(?P<kind>[^.]+)")
METRIC_KINDS = ("cpu", "memory")
ACTIONS = {"increment": "increment", "incr": "increment", "decrement": "decrement", "decr": "decrement"}
ENABLE = {"notify": "notify", "notify-only": "notify", "true": "true", "1": "true", "false": "false", "0": "false"}
AUTOSCALE_KEYS = ("enable", "min", "max", "retrigger_delay", "notify_email")
PERCENT_RE = re.compile(r"\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*%\s*")
NUMBER_RE = re.compile(r"\s*(?:\d+(?:\.\d*)?|\.\d+)\s*")
MIN_WINDOW = 1.0
MAX_WINDOW = 3600.0  # the hour of samples the daemon keeps in memory (metrics/history.py)
MAX_PERCENT = 100_000.0  # cpu of one core: 1,000 cores busy; past it a value is a typo
# "5 minutes" as the spec writes it, besides 5m and 300
_WORDY_DURATION = re.compile(r"\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>seconds?|secs?|minutes?|mins?|hours?)\s*")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def is_metric_trigger(value: Any) -> bool:
    return isinstance(value, Mapping) and any(k in METRIC_ONLY_KEYS for k in value if isinstance(k, str))


def window_seconds(value: Any) -> float:
    """``parse_duration``'s forms, and the spec's ``5 minutes``."""
    if isinstance(value, str) and (wordy := _WORDY_DURATION.fullmatch(value.lower())):
        return parse_duration(float(wordy["n"]) * _UNIT_SECONDS[wordy["unit"][0]])
    return parse_duration(value)


def metric_service(metric: str) -> str | None:
    """The other service a metric watches (``service.db.cpu`` -> db), None for the service's own."""
    match = METRIC_RE.fullmatch(metric)
    return match["service"] if match else None


def metric_kind(metric: str) -> str:
    """cpu or memory."""
    return metric.rpartition(".")[2]


class _MetricTriggerChecks(_Shapes):
    def metric_trigger(self, at: _At, name: str | None) -> MetricTriggerSpec | None:
        """One metric trigger entry; ``name`` is its checked name (None: refused already)."""
        opts = self.options(at, (*METRIC_TRIGGER_KEYS, "source"), "metric trigger") or {}
        failed_before, self.failed = self.failed, False
        if "source" in opts:
            self.problem(opts["source"], "'source' is the spec's other spelling: write 'metric'", on_key=True)
        fields: dict[str, Any] = {}
        for key in ("metric", "operator", "value", "action"):
            if key not in opts and not (key == "metric" and "source" in opts):
                self.problem(at, f"a metric trigger needs {'an' if key[0] in 'aeiou' else 'a'} {key!r}"
                             + {"metric": " (cpu, memory, service.NAME.cpu or service.NAME.memory)",
                                "operator": f" ({', '.join(METRIC_OPERATORS)})",
                                "value": " (80% or 80: a percentage; for memory also a size such as 512m)",
                                "action": " (increment, incr, decrement or decr)"}[key])
        if "metric" in opts:
            fields["metric"] = self.metric(opts["metric"])
        if "operator" in opts:
            fields["operator"] = self.metric_operator(opts["operator"])
        if "of_limit" in opts:
            fields["of_limit"] = self.flag(opts["of_limit"])
            if fields["of_limit"] and fields.get("metric") and metric_kind(fields["metric"]) != "cpu":
                self.problem(opts["of_limit"], "'of_limit' is for cpu (a memory percentage is always of the "
                                               "memory limit)", on_key=True)
        if "value" in opts:
            fields.update(self.metric_value(opts["value"], fields.get("metric"), bool(fields.get("of_limit"))))
        if "time" in opts:
            fields["time"] = self.window(opts["time"])
        if "action" in opts:
            fields["action"] = self.metric_action(opts["action"])
        if "instances" in opts:
            fields["instances"] = self.integer(opts["instances"], 1, MAX_SCALE)
        ok = not self.failed
        self.failed = failed_before or self.failed
        if not ok or name is None:
            return None
        return MetricTriggerSpec(name=name, **{k: v for k, v in fields.items() if v is not None})

    def metric(self, at: _At) -> str | None:
        value = self.string(at)
        if value is None:
            return None
        expected = "cpu, memory, service.NAME.cpu or service.NAME.memory"
        match = METRIC_RE.fullmatch(value.strip())
        if match is None or match["kind"] not in METRIC_KINDS:
            hint = ("; ContainerPilot and Container Monitor metrics are not collected"
                    if value.startswith(("containerpilot", "containermonitor")) or ".containe" in value else "")
            self.problem(at, f"unknown metric {value!r} (expected {expected}){hint}")
            return None
        other = match["service"]
        if other is not None:
            me = self.at.field.rpartition(".")[2]
            services = self.rules.services
            if other == me:
                self.problem(at, f"{value!r} is this service's own metric: write {match['kind']!r}")
                return None
            if services is not None and other not in services:
                self.problem(at, f"unknown service {other!r} in metric {value!r}: the project has "
                                 f"{', '.join(services)}")
                return None
        return value.strip()

    def metric_operator(self, at: _At) -> str | None:
        if isinstance(at.value, str) and at.value.strip() in METRIC_OPERATORS:
            return at.value.strip()
        if isinstance(at.value, str):
            shown = at.value if at.value.strip() else "an empty string (an unquoted > or >= needs quotes: \">\")"
            self.problem(at, f"unknown operator {shown!r} (expected one of {', '.join(METRIC_OPERATORS)}, "
                             "quoted: \">\")")
        else:
            self.wrong_type(at, f"an operator, quoted: one of {', '.join(repr(o) for o in METRIC_OPERATORS)}")
        return None

    def metric_value(self, at: _At, metric: str | None, of_limit: bool) -> dict[str, Any]:
        """{"value": percent} or {"value_bytes": bytes}; {} when refused."""
        value = at.value
        kind = metric_kind(metric) if metric else None
        percent: float | None = None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.wrong_type(at, "a percentage (80% or 80) or, for memory, a size such as 512m")
            return {}
        if isinstance(value, str) and (match := PERCENT_RE.fullmatch(value)):
            percent = float(match["number"])
        elif isinstance(value, str) and NUMBER_RE.fullmatch(value):
            percent = float(value)
        elif isinstance(value, str):
            if kind == "cpu":
                self.problem(at, f"invalid cpu threshold {value!r}: a percentage (80% or 80) of one core"
                             + (" (of the cpus limit with of_limit)" if of_limit else ""))
                return {}
            try:
                size = parse_size(value)
            except ValueError:
                self.problem(at, f"invalid threshold {value!r}: a percentage (80% or 80) or, for memory, a size "
                                 "such as 512m")
                return {}
            if size <= 0:
                self.problem(at, "a memory threshold must be more than 0 bytes")
                return {}
            return {"value_bytes": size}
        elif isinstance(value, int) and not -1e18 < value < 1e18 or value != value:  # huge ints, nan
            self.problem(at, f"a percentage must be between 0 and {MAX_PERCENT:,.0f}, got {_shown(value)}")
            return {}
        else:
            percent = float(value)
        top = 100.0 if kind == "memory" or of_limit else MAX_PERCENT
        if not 0 <= percent <= top:
            what = "of the limit" if top == 100.0 else "of one core"
            self.problem(at, f"a percentage {what} must be between 0 and {top:,.0f}, got {_shown(percent)}")
            return {}
        return {"value": percent}

    def window(self, at: _At) -> float | None:
        try:
            seconds = window_seconds(at.value)
        except TypeError:
            self.wrong_type(at, "a duration such as 2m, 90s or \"5 minutes\", or a number of seconds")
            return None
        except ValueError as exc:
            self.problem(at, str(exc))
            return None
        if not MIN_WINDOW <= seconds <= MAX_WINDOW:
            self.problem(at, f"time must be between 1s and 1h (the hour of samples the daemon keeps), got "
                             f"{_shown(seconds)}s")
            return None
        return seconds

    def metric_action(self, at: _At) -> str | None:
        value = self.string(at)
        if value is None:
            return None
        if value.strip().lower() not in ACTIONS:
            self.problem(at, f"unknown metric trigger action {value!r} (expected increment, incr, decrement or decr)")
            return None
        return ACTIONS[value.strip().lower()]

    # -- autoscale ----------------------------------------------------------------------------------

    def autoscale(self, at: _At) -> None:
        opts = self.options(at, AUTOSCALE_KEYS, "autoscale")
        if opts is None:
            return
        failed_before, self.failed = self.failed, False
        fields: dict[str, Any] = {}
        if "notify_email" in opts:
            self.problem(opts["notify_email"], "'notify_email' is out of scope: use a webhook to a mail relay "
                                               "(webhooks: [{url: ..., events: [autoscale]}])", on_key=True)
        if "enable" in opts and opts["enable"].value is not None:
            fields["enable"] = self.enable(opts["enable"])
        for key in ("min", "max"):
            if key in opts and opts[key].value is not None:
                fields[key] = self.integer(opts[key], 1, MAX_SCALE)
        if "retrigger_delay" in opts and opts["retrigger_delay"].value is not None:
            try:
                fields["retrigger_delay"] = window_seconds(opts["retrigger_delay"].value)
            except TypeError:
                self.wrong_type(opts["retrigger_delay"], "a duration such as 60s or 5m, or a number of seconds")
            except ValueError as exc:
                self.problem(opts["retrigger_delay"], str(exc))
        low, high = fields.get("min"), fields.get("max")
        if low is not None and high is not None and low > high:
            self.problem(opts["min"], f"autoscale min ({low}) is more than max ({high})")
        if fields.get("enable") == "true" and "max" not in opts:
            self.problem(opts["enable"], "autoscale enable: true needs a 'max' (the most instances it may scale "
                                         "to)")
        ok = not self.failed
        self.failed = failed_before or self.failed
        if ok:
            self.fields["autoscale"] = AutoscaleSpec(**{k: v for k, v in fields.items() if v is not None})

    def enable(self, at: _At) -> str | None:
        value = at.value
        text = ("true" if value else "false") if isinstance(value, bool) else str(value).strip().lower() \
            if isinstance(value, (str, int)) else None
        if text is None or text not in ENABLE:
            self.problem(at, f"unknown autoscale enable {value!r} (expected notify, notify-only, true, 1, false or 0)")
            return None
        return ENABLE[text]

    def autoscale_cross_checks(self) -> None:
        """What the service's other options decide: its kind, its limits and its scale."""
        kind = self.fields.get("service_type", "continuous")
        triggers: tuple[MetricTriggerSpec, ...] = self.fields.get("metric_triggers", ())
        if kind != "continuous":
            for key in ("autoscale",):
                if key in self.seen and self.seen[key].value is not None:
                    self.problem(self.seen[key], f"'autoscale' is only for continuous services (service_type {kind}: "
                                 "its instances are runs, started by its schedule or trigger)", on_key=True)
            if triggers:
                self.problem(self.seen["triggers"], f"metric triggers are only for continuous services (service_type "
                             f"{kind}: its instances are runs, not a scale to change)", on_key=True)
            return
        for trigger in triggers:
            where = self.metric_trigger_at(trigger.name)
            if metric_service(trigger.metric) is not None or where is None:
                continue  # another service's limits: the project's check (manifest/validate.py)
            if trigger.of_limit and not self.fields.get("cpus"):
                self.problem(where, f"trigger {trigger.name!r}: of_limit needs a cpu limit, and this service has "
                                    "none: give it a 'package'")
            if metric_kind(trigger.metric) == "memory" and trigger.value is not None and not self.fields.get("memory"):
                self.problem(where, f"trigger {trigger.name!r}: a memory percentage is of the memory limit, and this "
                                    "service has none: give it 'memory' (or a 'package'), or a size (value: 512m)")
        spec = self.fields.get("autoscale")
        scale = self.fields.get("scale")
        if spec is not None and spec.enable == "true" and scale is not None \
                and not spec.min <= scale <= (spec.max or MAX_SCALE):
            self.problem(self.seen["scale"], f"scale {scale} is outside autoscale's range {spec.min}-{spec.max}: "
                                             "the scale it starts at is within the range")

    def metric_trigger_at(self, name: str) -> _At | None:
        at = self.seen.get("triggers")
        if at is None or not isinstance(at.value, list):
            return None
        for item in at.items():
            if isinstance(item.value, Mapping) and item.value.get("name") == name:
                return item
        return None


def describe_value(trigger: MetricTriggerSpec) -> str:
    """The threshold as written back in messages: 80%, 512m."""
    if trigger.value_bytes is not None:
        return format_size(trigger.value_bytes)
    return f"{trigger.value:g}%"

