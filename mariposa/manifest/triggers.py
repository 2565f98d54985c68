"""A service's ``triggers:``: public triggers, each a name and what a POST on its URL does
(mariposa/triggers/), and metric triggers, an entry with a ``metric`` (manifest/autoscale.py), in
one list as the spec has them. Names are unique in the project across both kinds, since
``trigger rotate NAME`` names one with the project alone; that check is the project's
(manifest/validate.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from mariposa.manifest.autoscale import _MetricTriggerChecks, is_metric_trigger
from mariposa.manifest.report import MAX_SCALE, _At, _is_int
from mariposa.manifest.shapes import _shown
from mariposa.model import TRIGGER_ACTIONS, MetricTriggerSpec, TriggerSpec

TRIGGER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SCALE_RE = re.compile(r"[+-]?\d{1,5}")
MAX_TRIGGERS = 100  # per service: past it a list is a mistake


def trigger_names(at: _At) -> list[tuple[str, _At]]:
    """(name, where) of every well-formed trigger entry of a service's ``triggers`` node, for the
    project's check of duplicate names."""
    if not isinstance(at.value, list):
        return []
    found = []
    for item in at.items():
        if isinstance(item.value, Mapping):
            for key, entry in item.entries():
                if key == "name" and isinstance(entry.value, str):
                    found.append((entry.value, entry))
    return found


class _TriggerChecks(_MetricTriggerChecks):
    def triggers(self, at: _At) -> None:
        items = self.list_of(at, "triggers ({name: ..., action: run | start | stop | scale})")
        if items is None:
            return
        if len(items) > MAX_TRIGGERS:
            self.problem(at, f"lists {len(items)} triggers; a service has at most {MAX_TRIGGERS}")
            return
        found: list[TriggerSpec] = []
        metric: list[MetricTriggerSpec] = []
        names: set[str] = set()
        for item in items:
            if not isinstance(item.value, Mapping):
                self.wrong_type(item, "a trigger mapping ({name: ..., action: ...})")
                continue
            named = item.value.get("name")
            if isinstance(named, str) and named in names:
                self.problem(item, f"trigger {named!r} is given twice")
                continue
            if isinstance(named, str):
                names.add(named)
            if is_metric_trigger(item.value):
                by_metric = self.metric_trigger(item, self.trigger_name(item))
                if by_metric is not None:
                    metric.append(by_metric)
                continue
            trigger = self.trigger(item)
            if trigger is not None:
                found.append(trigger)
        self.fields["triggers"] = tuple(found)
        self.fields["metric_triggers"] = tuple(metric)

    def trigger_name(self, at: _At) -> str | None:
        """The entry's checked ``name`` (None, and a problem recorded, when it has none or a bad one)."""
        named = next((entry for key, entry in at.entries() if key == "name"), None)
        if named is None:
            self.problem(at, "a trigger needs a 'name'")
            return None
        name = self.string(named)
        if name is not None and not TRIGGER_NAME_RE.fullmatch(name):
            self.problem(named, f"invalid trigger name {name!r}: letters, digits, '.', '_' and '-', "
                                "starting with a letter or digit, at most 63 characters")
            return None
        return name

    def trigger(self, at: _At) -> TriggerSpec | None:
        opts = self.options(at, ("name", "action", "scale"), "trigger") or {}
        failed_before, self.failed = self.failed, False
        name = action = scale = None
        if "name" not in opts:
            self.problem(at, "a trigger needs a 'name'")
        else:
            name = self.string(opts["name"])
            if name is not None and not TRIGGER_NAME_RE.fullmatch(name):
                self.problem(opts["name"], f"invalid trigger name {name!r}: letters, digits, '.', '_' and '-', "
                                           "starting with a letter or digit, at most 63 characters")
        if "action" not in opts:
            self.problem(at, f"a trigger needs an 'action' ({', '.join(TRIGGER_ACTIONS)})")
        else:
            action = self.choice(opts["action"], TRIGGER_ACTIONS, "trigger action")
        if "scale" in opts:
            scale = self.trigger_scale(opts["scale"])
            if action is not None and action != "scale":
                self.problem(opts["scale"], f"'scale' is only for action scale, not {action}", on_key=True)
        elif action == "scale":
            self.problem(opts["action"], "action scale needs 'scale': a number (scale: 3) or a change (scale: \"+1\")")
        ok = not self.failed
        self.failed = failed_before or self.failed
        if not ok or name is None or action is None:
            return None
        return TriggerSpec(name=name, action=action, scale=scale)

    def trigger_scale(self, at: _At) -> str | None:
        """N (0 or more), or "+N" / "-N": a change of the scale when the trigger fires."""
        value = at.value
        if _is_int(value):
            if int(value) < 0:
                hint = f" (a change is a string: \"{value}\")" if value >= -MAX_SCALE else ""
                self.problem(at, f"must be 0 or more, got {_shown(int(value))}{hint}")
                return None
        else:
            text = value.strip() if isinstance(value, str) else ""
            if not SCALE_RE.fullmatch(text):
                self.wrong_type(at, "a scale: a number (3) or a change (\"+1\", \"-1\")")
                return None
            if abs(int(text)) > MAX_SCALE:
                self.problem(at, f"a scale (or change of it) is at most {MAX_SCALE:,}")
                return None
            return text if text[0] in "+-" else str(int(text))
        if int(value) > MAX_SCALE:
            self.problem(at, f"a scale is at most {MAX_SCALE:,}")
            return None
        return str(int(value))

    def trigger_cross_checks(self) -> None:
        """``action: run`` asks for a run, which only scheduled and event services have."""
        self.autoscale_cross_checks()
        kind = self.fields.get("service_type", "continuous")
        at = self.seen.get("triggers")
        if kind != "continuous" or at is None or not isinstance(at.value, list):
            return
        for item in at.items():
            if not isinstance(item.value, Mapping) or is_metric_trigger(item.value):
                continue
            for key, entry in item.entries():
                if key == "action" and entry.value == "run":
                    self.problem(entry, "action 'run' is only for service_type scheduled or event (a continuous "
                                        "service has no runs; use start, stop or scale)")
