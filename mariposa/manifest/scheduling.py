"""The options of scheduled and event services (``service_type: scheduled | event``): when they
fire and what a run may do. None of them shapes an instance, so none changes the spec hash.

Durations are written as people write them (``5m``, ``1h30m``, ``90s``) or as a number of seconds.
"""

from __future__ import annotations

import re

from mariposa.manifest.report import _At
from mariposa.manifest.shapes import MAX_SECONDS, _Shapes
from mariposa.runs.schedule import Schedule, check_cron, is_interval, parse_interval, zone
from mariposa.store.meta import KEY_RE as META_KEY_RE

CONCURRENCY = ("allow", "forbid", "replace", "queue")
CATCH_UP = ("none", "latest", "all")
MAX_RUN_COUNT = 10_000  # retries, history and queue limits: past it a value is a typo
_DURATION_RE = re.compile(r"(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?")
# Options only scheduled services take, and those scheduled and event services take.
SCHEDULED_ONLY = ("schedule", "time_zone", "catch_up", "catch_up_limit", "starting_deadline")
RUN_OPTIONS = ("concurrency", "timeout", "retries", "history", "queue_limit")
ON_EVENTS = ("meta",)  # what `on:` may name: an event service runs when one of them happens
MAX_ON_KEYS = 100  # meta keys one service watches


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90s"``, ``"5m"``, ``"1h30m"`` or ``"2d"``; ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError
    if isinstance(value, str):
        text = value.strip().lower()
        match = _DURATION_RE.fullmatch(text)
        if not text or not match:
            raise ValueError(f"invalid duration {value!r}; expected seconds or a duration such as 90s, 5m, 1h30m, 2d")
        seconds = (int(match["d"] or 0) * 86400 + int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60
                   + float(match["s"] or 0))
    else:
        seconds = value
    if not (0 < seconds <= MAX_SECONDS):  # false for nan too
        raise ValueError(f"duration must be more than 0 and at most {MAX_SECONDS:,} seconds (a year), got {value!r}")
    return float(seconds)


class _SchedulingChecks(_Shapes):
    def duration(self, at: _At) -> float | None:
        try:
            return parse_duration(at.value)
        except TypeError:
            self.wrong_type(at, "a duration such as 90s, 5m or 1h, or a number of seconds")
        except ValueError as exc:
            self.problem(at, str(exc))
        return None

    def schedule(self, at: _At) -> None:
        items = self.list_of(at, "schedules") if isinstance(at.value, list) else [at]
        if not items:
            if items is not None:
                self.problem(at, "a schedule list must not be empty")
            return
        found: list[str] = []
        for item in items:
            text = self.string(item)
            if text is None:
                continue
            try:
                if is_interval(text.strip()):
                    parse_interval(text.strip(), zone("UTC"))
                    found.append(text.strip())
                else:
                    found.append(check_cron(text))
            except ValueError as exc:
                self.problem(item, str(exc))
        self.fields["schedule"] = tuple(found)

    def time_zone(self, at: _At) -> None:
        name = self.string(at)
        if name is None:
            return
        try:
            zone(name.strip())
        except ValueError as exc:
            self.problem(at, str(exc))
            return
        self.fields["time_zone"] = name.strip()

    def concurrency(self, at: _At) -> None:
        value = self.choice(at, CONCURRENCY, "concurrency")
        if value is not None:
            self.fields["concurrency"] = value

    def catch_up(self, at: _At) -> None:
        value = self.choice(at, CATCH_UP, "catch_up")
        if value is not None:
            self.fields["catch_up"] = value

    def catch_up_limit(self, at: _At) -> None:
        value = self.integer(at, 1, MAX_RUN_COUNT)
        if value is not None:
            self.fields["catch_up_limit"] = value

    def starting_deadline(self, at: _At) -> None:
        value = self.duration(at)
        if value is not None:
            self.fields["starting_deadline"] = value

    def timeout(self, at: _At) -> None:
        value = self.duration(at)
        if value is not None:
            self.fields["timeout"] = value

    def retries(self, at: _At) -> None:
        value = self.integer(at, 0, MAX_RUN_COUNT)
        if value is not None:
            self.fields["retries"] = value

    def queue_limit(self, at: _At) -> None:
        value = self.integer(at, 1, MAX_RUN_COUNT)
        if value is not None:
            self.fields["queue_limit"] = value

    def history(self, at: _At) -> None:
        opts = self.options(at, ("succeeded", "failed"), "history")
        if opts is None:
            return
        for key, entry in opts.items():
            value = self.integer(entry, 0, MAX_RUN_COUNT)
            if value is not None:
                self.fields[f"history_{key}"] = value

    def on(self, at: _At) -> None:
        """``on: {meta: [KEY, ...]}``: a run each time one of the keys changes value."""
        opts = self.options(at, ON_EVENTS, "on")
        if opts is None:
            return
        if not at.value:
            self.problem(at, "'on' needs what to run on, e.g. {meta: [KEY, ...]}")
            return
        entry = opts.get("meta")  # None: an unknown sub-key, already refused
        if entry is None or entry.value is None:
            if entry is not None:
                self.problem(entry, "on.meta needs a list of meta keys")
            return
        if entry.value == []:
            self.problem(entry, "on.meta must not be empty: list the meta keys whose changes run the service")
            return
        items = self.strings(entry)
        if items is None:
            return
        if len(items) > MAX_ON_KEYS:
            self.problem(entry, f"on.meta may list at most {MAX_ON_KEYS} keys")
            return
        keys: list[str] = []
        for key, item in items:
            if not META_KEY_RE.fullmatch(key):
                self.problem(item, f"invalid meta key {key!r}: 1-128 letters, digits, '_' or '-', "
                             "not starting with '-'")
            elif key in keys:
                self.problem(item, f"meta key {key!r} is listed twice")
            else:
                keys.append(key)
        self.fields["on_meta"] = tuple(keys)

    def scheduling_cross_checks(self) -> None:
        kind = self.fields.get("service_type", "continuous")
        for name in (*SCHEDULED_ONLY, *RUN_OPTIONS):
            at = self.seen.get(name)
            if at is None or at.value is None:
                continue
            if kind == "continuous":
                self.problem(at, f"{name!r} is only valid with service_type scheduled"
                             + ("" if name in SCHEDULED_ONLY else " or event"), on_key=True)
            elif kind == "event" and name in SCHEDULED_ONLY:
                self.problem(at, f"{name!r} is only valid with service_type scheduled (an event service "
                             "runs when triggered: mariposa -j PROJECT service run NAME)", on_key=True)
        on = self.seen.get("on")
        if on is not None and on.value is not None and kind != "event":
            self.problem(on, "'on' is only valid with service_type event (a run each time a listed meta key "
                         "changes)", on_key=True)
        if kind == "scheduled" and "service_type" in self.seen and not self.fields.get("schedule") \
                and "schedule" not in self.seen:
            self.problem(self.seen["service_type"], "a scheduled service needs a 'schedule' (e.g. \"30 2 * * *\")")
        if "schedule" in self.fields and "time_zone" in self.fields:
            try:
                Schedule.checked(self.fields["schedule"], self.fields["time_zone"])
            except ValueError as exc:
                self.problem(self.seen["schedule"], str(exc))
