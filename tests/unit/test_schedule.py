"""Scheduled and event services in the manifest, and when a schedule fires (mariposa/runs/
schedule.py): cron with seconds, intervals, time zones, and the DST days, on a fixed clock."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from mariposa.manifest.scheduling import parse_duration
from mariposa.runs.schedule import Schedule
from tests.unit.test_manifest import problems, service, service_problem


def at(text: str, zone: str = "UTC") -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def local(t: float, zone: str) -> str:
    return dt.datetime.fromtimestamp(t, ZoneInfo(zone)).isoformat()


def test_a_scheduled_service_with_every_option():
    spec = service("image: x\nservice_type: scheduled\nschedule: '30 2 * * *'\ntime_zone: Europe/Berlin\n"
                   "concurrency: queue\ncatch_up: all\ncatch_up_limit: 4\nstarting_deadline: 5m\ntimeout: 1h30m\n"
                   "retries: 2\nhistory: {succeeded: 3, failed: 1}\nqueue_limit: 7")
    assert (spec.service_type, spec.schedule, spec.time_zone, spec.concurrency, spec.catch_up, spec.catch_up_limit,
            spec.starting_deadline, spec.timeout, spec.retries, spec.history_succeeded, spec.history_failed,
            spec.queue_limit) == ("scheduled", ("30 2 * * *",), "Europe/Berlin", "queue", "all", 4, 300.0, 5400.0,
                                  2, 3, 1, 7)


def test_defaults_and_a_list_of_schedules():
    spec = service("image: x\nservice_type: scheduled\nschedule: ['*/5 * * * * *', R/2026-01-01T00:00:00Z/PT15M]")
    assert spec.schedule == ("*/5 * * * * *", "R/2026-01-01T00:00:00Z/PT15M")
    assert (spec.time_zone, spec.concurrency, spec.catch_up, spec.retries, spec.queue_limit) == (
        "UTC", "forbid", "latest", 0, 100)


def test_run_options_do_not_change_the_spec_hash():
    a = service("image: x\nservice_type: scheduled\nschedule: '* * * * *'")
    b = service("image: x\nservice_type: scheduled\nschedule: '*/2 * * * *'\ntimeout: 5m\nretries: 1")
    assert a.spec_hash == b.spec_hash


@pytest.mark.parametrize("schedule, line, column, message", [
    ("'30 2 32 * *'", 3, 11, "day-of-month 32 out of range 1-31"),
    ("'61 * * * *'", 3, 11, "minute 61 out of range 0-59"),
    ("'* * * * 8'", 3, 11, "day-of-week 8 out of range 0-7"),
    ("'70 * * * * *'", 3, 11, "second 70 out of range 0-59"),
    ("'* * *'", 3, 11, "cron expression '* * *' has 3 fields; expected 5 (minute hour day-of-month month "
                       "day-of-week), or 6 with seconds first"),
    ("'*/0 * * * *'", 3, 11, "minute step '0' must be a whole number above 0"),
    ("['* * * * *', '0 25 * * *']", 3, 25, "hour 25 out of range 0-23"),
    ("R/2026-01-01T00:00:00Z/P1M", 3, 11, "interval period 'P1M': months and years have no fixed length; use "
                                          "weeks, days, hours, minutes or seconds (P1W, P1D, PT15M)"),
    ("R/yesterday/PT1M", 3, 11, "interval start 'yesterday' is not an ISO 8601 date and time "
                                "(e.g. 2026-01-01T00:00:00Z)"),
])
def test_bad_schedules_say_where_and_what(schedule, line, column, message):
    found = service_problem(f"image: x\nservice_type: scheduled\nschedule: {schedule}")
    assert (found.message, found.line, found.column) == (message, line + 2, column + 4)


def test_bad_zone_and_options():
    found = problems("services:\n  job:\n    image: x\n    service_type: scheduled\n    schedule: '* * * * *'\n"
                     "    time_zone: Europe/Berln\n    concurrency: sometimes\n    timeout: 5 minutes\n"
                     "    history: {kept: 3}\n")
    assert [(p.line, p.message) for p in found] == [
        (6, "unknown time zone 'Europe/Berln' (an IANA name such as Europe/Berlin or UTC)"),
        (7, "unknown concurrency 'sometimes' (expected one of allow, forbid, replace, queue)"),
        (8, "invalid duration '5 minutes'; expected seconds or a duration such as 90s, 5m, 1h30m, 2d"),
        (9, "unknown history option 'kept'"),
    ]


def test_schedule_on_a_continuous_service_is_refused():
    assert service_problem("image: x\nschedule: '* * * * *'").message == (
        "'schedule' is only valid with service_type scheduled")
    assert service_problem("image: x\nservice_type: event\ncatch_up: all").message.startswith(
        "'catch_up' is only valid with service_type scheduled (an event service runs when triggered")
    assert service_problem("image: x\nretries: 2").message == (
        "'retries' is only valid with service_type scheduled or event")


def test_durations():
    assert [parse_duration(v) for v in (90, "90s", "5m", "1h30m", "2d", 0.5)] == [90, 90, 300, 5400, 172800, 0.5]
    for bad in ("0s", "-5m", "", "5 m", 0):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_every_five_seconds_with_seconds_first():
    s = Schedule.checked(["*/5 * * * * *"])
    assert s.upcoming(at("2026-01-01T00:00:01"), 3) == [at("2026-01-01T00:00:05"), at("2026-01-01T00:00:10"),
                                                         at("2026-01-01T00:00:15")]
    # a firing is strictly after the time asked about: the one just recorded is not due again
    assert s.next_after(at("2026-01-01T00:00:05")) == at("2026-01-01T00:00:10")


def test_an_interval_and_a_list_fire_at_the_earliest():
    s = Schedule.checked(["R/2026-01-01T00:00:00Z/PT15M", "0 0 * * *"])
    assert s.upcoming(at("2025-12-31T23:59:00"), 3) == [at("2026-01-01T00:00:00"), at("2026-01-01T00:15:00"),
                                                        at("2026-01-01T00:30:00")]
    assert Schedule.checked(["R2/2026-01-01T00:00:00Z/PT1H"]).upcoming(at("2025-01-01T00:00:00"), 5) == [
        at("2026-01-01T00:00:00"), at("2026-01-01T01:00:00")]  # R2: twice, then never


def test_interval_firings_in_a_window_and_a_count():
    s = Schedule.checked(["R3/2026-01-01T00:00:00Z/PT15M", "0 * * * *"])
    assert s.firings(at("2025-12-31T23:59:59"), at("2026-01-01T02:00:00")) == [
        at("2026-01-01T00:00:00"), at("2026-01-01T00:15:00"), at("2026-01-01T00:30:00"), at("2026-01-01T01:00:00"),
        at("2026-01-01T02:00:00")]


def test_firings_in_a_window_are_bounded():
    s = Schedule.checked(["* * * * * *"])
    assert len(s.firings(at("2026-01-01T00:00:00"), at("2026-01-01T01:00:00"), limit=10)) == 10
    assert s.firings(at("2026-01-01T00:00:00"), at("2026-01-01T00:00:03")) == [
        at("2026-01-01T00:00:01"), at("2026-01-01T00:00:02"), at("2026-01-01T00:00:03")]


# DST, with croniter's documented behaviour: a time skipped by spring-forward fires once, at the
# first time after the gap; a time repeated by fall-back fires twice, once in each offset.
@pytest.mark.parametrize("zone, day, after_gap", [
    ("America/New_York", "2026-03-08", "2026-03-08T03:00:00-04:00"),
    ("Europe/Berlin", "2026-03-29", "2026-03-29T03:00:00+02:00"),
])
def test_spring_forward_fires_once_after_the_gap(zone, day, after_gap):
    s = Schedule.checked(["30 2 * * *"], zone)
    got = [local(t, zone) for t in s.upcoming(at(f"{day}T00:00:00", zone) - 86400, 3)]
    previous = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
    following = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    assert got[0].startswith(f"{previous}T02:30:00")
    assert got[1] == after_gap
    assert got[2].startswith(f"{following}T02:30:00")


@pytest.mark.parametrize("zone, day, offsets", [
    ("America/New_York", "2026-11-01", ("-04:00", "-05:00")),
    ("Europe/Berlin", "2026-10-25", ("+02:00", "+01:00")),
])
def test_fall_back_fires_the_repeated_time_in_both_offsets(zone, day, offsets):
    time = "01:30" if zone == "America/New_York" else "02:30"
    s = Schedule.checked([f"{time.split(':')[1]} {int(time.split(':')[0])} * * *"], zone)
    got = [local(t, zone) for t in s.upcoming(at(f"{day}T00:00:00", zone), 3)]
    assert got[:2] == [f"{day}T{time}:00{offsets[0]}", f"{day}T{time}:00{offsets[1]}"]
    assert got[1 + 1].startswith((dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat())
    # an hourly schedule neither skips nor doubles an instant: the UTC gaps are all one hour
    hourly = Schedule.checked(["0 * * * *"], zone).upcoming(at(f"{day}T00:00:00", zone), 6)
    assert {b - a for a, b in zip(hourly, hourly[1:], strict=False)} == {3600.0}


@pytest.mark.parametrize("name", ["0b" + "1" * 300, "Europe/" + "x" * 5000])
def test_a_zone_name_too_long_for_a_path_is_an_unknown_zone_not_a_crash(name):
    """The fuzzer's find (seed 2500781251): a 14,000-character time_zone reached the tz database
    as a path and let out 'OSError: File name too long'."""
    found = service_problem(f"image: x\nservice_type: scheduled\nschedule: '* * * * *'\ntime_zone: '{name}'")
    assert found.message == f"unknown time zone {name[:60]!r}... (an IANA name such as Europe/Berlin or UTC)"
    assert (found.line, found.field) == (6, "services.web.time_zone")  # the 4th line of the service
