"""When a scheduled service fires: cron expressions (5 fields, or 6 with seconds first) and
ISO 8601 repeating intervals (``R/2026-01-01T00:00:00Z/PT15M``), in an IANA time zone. Pure.

Why croniter: it already knows what is hard about cron, time zones and seconds. On a spring-forward
day a time that does not exist (02:30 in New York on 2026-03-08) fires once, at the first time
after the gap (03:00); on a fall-back day a time that happens twice (01:30 on 2026-11-01) fires
twice, once in each offset. That is croniter's documented behaviour and ours (tests pin it).

An interval needs no library: its firings are ``start + k * period``; periods are weeks, days,
hours, minutes and seconds (a month or a year has no fixed length, so it is refused).

Errors are ``ValueError`` with a message fit for the user ("day-of-month 32 out of range 1-31");
the manifest check adds the line and column.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

# Cron's fields in order (the 6-field form puts seconds first), with their ranges and names.
_FIELDS = {
    "second": (0, 59), "minute": (0, 59), "hour": (0, 23), "day-of-month": (1, 31), "month": (1, 12),
    "day-of-week": (0, 7),
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_ATOM_RE = re.compile(r"(?P<a>\*|[A-Za-z0-9]+)(?:-(?P<b>[A-Za-z0-9]+))?(?:/(?P<step>[^/]*))?")
MAX_ZONE_NAME = 128  # the longest IANA name is 32 characters
_DURATION_RE = re.compile(
    r"P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?")


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` naming it when the host's tz database lacks it. A
    name is a path in that database: one too long for the file system (the fuzzer's 14,000
    characters) is refused before it is looked up, not let out as the OSError the lookup raises."""
    unknown = ValueError(f"unknown time zone {name[:60]!r}{'...' if len(name) > 60 else ''} "
                         "(an IANA name such as Europe/Berlin or UTC)")
    if not name or name.startswith(("/", ".")) or ".." in name or len(name) > MAX_ZONE_NAME:
        raise unknown
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise unknown from None


def _number(text: str, field: str) -> int:
    names = _MONTHS if field == "month" else _DAYS if field == "day-of-week" else ()
    if text.lower() in names:
        return names.index(text.lower()) + (1 if field == "month" else 0)
    if not text.isdigit():
        raise ValueError(f"{field} {text!r} is not a number" + (f" or a name ({', '.join(names)})" if names else ""))
    value = int(text)
    lo, hi = _FIELDS[field]
    if not lo <= value <= hi:
        raise ValueError(f"{field} {value} out of range {lo}-{hi}")
    return value


def _check_field(text: str, field: str) -> None:
    for part in text.split(","):
        if field == "day-of-week" and ("#" in part or part.endswith("L")) or (field == "day-of-month" and
                                                                              part in ("L", "l")):
            continue  # croniter's extensions (nth weekday, last day): croniter checks them
        if part in ("?",) and field in ("day-of-month", "day-of-week"):
            continue
        match = _ATOM_RE.fullmatch(part)
        if not match:
            raise ValueError(f"{field} {part!r} is not valid (expected *, N, N-M, */S or a list of them)")
        if match["a"] != "*":
            low = _number(match["a"], field)
            if match["b"] is not None and _number(match["b"], field) < low:
                raise ValueError(f"{field} range {part!r} goes backwards")
        elif match["b"] is not None:
            raise ValueError(f"{field} {part!r} is not valid")
        if match["step"] is not None:
            step = match["step"]
            if not step.isdigit() or int(step) == 0:
                raise ValueError(f"{field} step {step!r} must be a whole number above 0")
            lo, hi = _FIELDS[field]
            if int(step) > hi - lo + 1:
                raise ValueError(f"{field} step {step} out of range 1-{hi - lo + 1}")


def _parse_duration(text: str) -> float:
    match = _DURATION_RE.fullmatch(text)
    if not match or text in ("P", "PT") or text.endswith("T"):
        if re.fullmatch(r"P.*\d+[YM].*", text.split("T")[0]):
            raise ValueError(f"interval period {text!r}: months and years have no fixed length; use weeks, days, "
                             "hours, minutes or seconds (P1W, P1D, PT15M)")
        raise ValueError(f"interval period {text!r} is not an ISO 8601 duration such as PT15M, PT1H or P1D")
    seconds = (int(match["weeks"] or 0) * 7 * 86400 + int(match["days"] or 0) * 86400
               + int(match["hours"] or 0) * 3600 + int(match["minutes"] or 0) * 60 + float(match["seconds"] or 0))
    if seconds < 1:
        raise ValueError(f"interval period {text!r} must be at least one second")
    return seconds


@attrs.frozen
class Interval:
    """``R[n]/START/PERIOD``: START, START+PERIOD, ... (n times when given)."""

    start: float
    period: float
    count: int | None

    def next_after(self, t: float) -> float | None:
        if t < self.start:
            return self.start
        k = math.floor((t - self.start) / self.period) + 1
        if self.count is not None and k >= self.count:
            return None
        return self.start + k * self.period


def parse_interval(text: str, tz: ZoneInfo) -> Interval:
    parts = text.split("/")
    if len(parts) != 3 or not re.fullmatch(r"R\d*", parts[0]):
        raise ValueError(f"interval {text!r} is not R[n]/START/PERIOD (e.g. R/2026-01-01T00:00:00Z/PT15M)")
    count = int(parts[0][1:]) if len(parts[0]) > 1 else None
    try:
        start = dt.datetime.fromisoformat(parts[1])
    except ValueError:
        raise ValueError(f"interval start {parts[1]!r} is not an ISO 8601 date and time "
                         "(e.g. 2026-01-01T00:00:00Z)") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=tz)
    return Interval(start.timestamp(), _parse_duration(parts[2]), count)


def check_cron(text: str) -> str:
    """The expression, normalised (whitespace); ``ValueError`` saying which field is wrong."""
    from croniter import croniter

    words = text.split()
    if len(words) == 1 and words[0].lower() in _MACROS:
        return words[0].lower()
    if len(words) not in (5, 6):
        raise ValueError(f"cron expression {text!r} has {len(words)} fields; expected 5 (minute hour day-of-month "
                         "month day-of-week), or 6 with seconds first")
    names = list(_FIELDS)[1:] if len(words) == 5 else list(_FIELDS)
    for word, field in zip(words, names, strict=True):
        _check_field(word, field)
    normal = " ".join(words)
    try:
        croniter(normal, second_at_beginning=True)
    except (ValueError, KeyError) as exc:  # croniter's errors are ValueErrors
        raise ValueError(f"invalid cron expression {text!r}: {exc}") from None
    return normal


def is_interval(text: str) -> bool:
    return text.startswith("R") and "/" in text


@attrs.frozen
class Schedule:
    """A service's ``schedule`` (one or more expressions) in its ``time_zone``."""

    expressions: tuple[str, ...]
    time_zone: str = "UTC"

    @classmethod
    def checked(cls, expressions: Iterable[str], time_zone: str = "UTC") -> Schedule:
        tz = zone(time_zone)
        out = []
        for text in expressions:
            if is_interval(text.strip()):
                parse_interval(text.strip(), tz)
                out.append(text.strip())
            else:
                out.append(check_cron(text))
        return cls(tuple(out), time_zone)

    def next_after(self, t: float) -> float | None:
        """The first firing strictly after ``t`` (epoch seconds); None when none is left."""
        from croniter import croniter

        tz = zone(self.time_zone)
        found: list[float] = []
        for text in self.expressions:
            if is_interval(text):
                when = parse_interval(text, tz).next_after(t)
                if when is not None:
                    found.append(when)
                continue
            start = dt.datetime.fromtimestamp(t, tz)
            found.append(croniter(text, start, second_at_beginning=True).get_next(float))
        return min(found) if found else None

    def firings(self, after: float, until: float, limit: int = 1000) -> list[float]:
        """Every firing in ``(after, until]``, oldest first; only the newest ``limit`` when there
        are more. Found from ``until`` backwards, so a month of a schedule every second (2.6
        million firings) costs ``limit`` steps, not millions."""
        from croniter import croniter

        tz = zone(self.time_zone)
        found: set[float] = set()
        for text in self.expressions:
            if is_interval(text):
                interval = parse_interval(text, tz)
                if until < interval.start:
                    continue
                last = math.floor((until - interval.start) / interval.period)
                if interval.count is not None:
                    last = min(last, interval.count - 1)
                k = last
                while k >= 0 and len(found) < 10 * limit:
                    when = interval.start + k * interval.period
                    if when <= after:
                        break
                    found.add(when)
                    if k <= last - limit:
                        break
                    k -= 1
                continue
            # from just past ``until`` backwards (get_prev never returns its start itself)
            it = croniter(text, dt.datetime.fromtimestamp(math.floor(until) + 1, tz), second_at_beginning=True)
            count = 0
            while count < limit:
                when = it.get_prev(float)
                if when <= after:
                    break
                if when <= until:
                    found.add(when)
                    count += 1
        return sorted(found)[-limit:]

    def upcoming(self, after: float, count: int) -> list[float]:
        out: list[float] = []
        t = after
        while len(out) < count and (when := self.next_after(t)) is not None:
            out.append(when)
            t = when
        return out
