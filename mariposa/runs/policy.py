"""What the scheduler decides, as pure functions of a service's spec, its runs and the time:
which firings are due and what becomes of each (a run, skipped, missed), which queued runs may
start, and until when nothing needs deciding. No I/O, so the timing logic is tested on numbers
(tests/unit/test_runs_policy.py) and the scheduler only carries decisions out.

Firings at or after ``awake_since`` (when the scheduler last began watching the service: its
start, or the service's resumption) happened while we watched, however late the pass that sees
them; earlier ones were missed while the daemon was down or the service stopped, and ``catch_up``
decides what becomes of them. The cursor (the last firing recorded) is what makes that exact
across restarts: catch-up starts from the last recorded firing, never from "now".
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from mariposa.converge.backoff import Backoff
from mariposa.model import ServiceSpec
from mariposa.runs.schedule import Schedule
from mariposa.store.runs import RunRow

# A failed run is retried after 1 s, 2 s, 4 s ... up to five minutes (converge/backoff.py).
RUN_RETRY = Backoff(base=1.0, factor=2.0, cap=300.0)
# Missed firings recorded at most per look: a minute schedule stopped for a month is 43,200
# firings; the newest are recorded, and catch-up never looks further back than this.
MAX_FIRINGS = 1000
# The longest the scheduler sleeps with nothing due; nothing depends on it (a late look
# catches up exactly), it only bounds how long a lost wake-up could go unnoticed.
MAX_SLEEP = 3600.0

Firing = tuple[float, str, str, "str | None"]  # (time, trigger, state, reason)


@attrs.frozen
class Decision:
    firings: tuple[Firing, ...]
    stop: tuple[str, ...]  # active runs to stop (concurrency: replace)
    fired_through: float


def schedule_of(spec: ServiceSpec) -> Schedule:
    return Schedule(spec.schedule, spec.time_zone)


def limit(spec: ServiceSpec, scale: int) -> int:
    """How many runs of the service may run at once: ``scale`` under allow, else one."""
    return max(1, scale) if spec.concurrency == "allow" else 1


def on_firings(spec: ServiceSpec, scale: int, cursor: float, now: float, awake_since: float,
               active: Sequence[RunRow]) -> Decision:
    """Every firing in ``(cursor, now]`` and what becomes of it, given the service's active
    (queued and running) runs."""
    due = schedule_of(spec).firings(cursor, now, limit=MAX_FIRINGS)
    firings: list[Firing] = []
    stop: list[str] = []
    missed = [w for w in due if w < awake_since]
    if missed:
        if spec.catch_up == "none":
            caught: list[float] = []
        elif spec.catch_up == "latest":
            caught = missed[-1:]
        else:
            caught = missed[-spec.catch_up_limit:]
        why = {"none": "catch_up: none", "latest": "catch_up: latest runs only the newest",
               "all": f"past catch_up_limit {spec.catch_up_limit}"}[spec.catch_up]
        for when in missed:
            if when in caught:
                firings.append((when, "catch-up", "queued", None))
            else:
                firings.append((when, "schedule", "missed", f"the daemon was down or the service stopped ({why})"))
    running = [r for r in active if r.state == "running" and not r.stop_requested]
    queued = [r for r in active if r.state == "queued"] + [f for f in firings if f[2] == "queued"]
    for when in (w for w in due if w >= awake_since):
        busy = len(running) + len(queued)
        if spec.concurrency == "forbid" and busy:
            firings.append((when, "schedule", "skipped", "a run was still active (concurrency: forbid)"))
        elif spec.concurrency == "allow" and busy >= limit(spec, scale):
            firings.append((when, "schedule", "skipped", f"{busy} runs active, the most scale allows "
                                                         "(concurrency: allow)"))
        elif spec.concurrency == "queue" and len(queued) >= spec.queue_limit:
            firings.append((when, "schedule", "skipped", f"{len(queued)} runs waiting (queue_limit)"))
        else:
            if spec.concurrency == "replace":
                stop += [r.id for r in running] + [r.id for r in queued if isinstance(r, RunRow)]
                firings = [(f[0], f[1], "skipped", "replaced by a newer firing (concurrency: replace)")
                           if f[2] == "queued" else f for f in firings]
                running, queued = [], []
            firing: Firing = (when, "schedule", "queued", None)
            firings.append(firing)
            queued.append(firing)
    return Decision(tuple(firings), tuple(stop), due[-1] if due else cursor)


def deadline(spec: ServiceSpec, run: RunRow) -> float | None:
    """When a queued run that has not started counts as missed (``starting_deadline``); a retry
    has none (its firing did start)."""
    if spec.starting_deadline is None or run.attempt:
        return None
    return run.scheduled + spec.starting_deadline


def startable(spec: ServiceSpec, scale: int, active: Sequence[RunRow], now: float) -> list[RunRow]:
    """The queued runs that may start now, oldest firing first, as concurrency allows."""
    running = sum(1 for r in active if r.state == "running")
    ready = [r for r in active if r.state == "queued" and (r.not_before is None or r.not_before <= now)
             and ((d := deadline(spec, r)) is None or now <= d)]
    return ready[: max(0, limit(spec, scale) - running)]


def next_wake(spec: ServiceSpec | None, cursor: float | None, active: Sequence[RunRow], now: float) -> float:
    """When the scheduler must look at the service again: its next firing, a retry's back-off,
    a queued run's deadline or a running run's timeout, whichever comes first. Times already
    past are left out: what was due then was done in this pass, or waits for a run to end
    (which wakes the scheduler), so the scheduler never spins."""
    times = [now + MAX_SLEEP]
    if spec is not None and spec.service_type == "scheduled" and cursor is not None:
        when = schedule_of(spec).next_after(max(cursor, now))
        if when is not None:
            times.append(when)
    for run in active:
        if run.state == "queued":
            if run.not_before is not None:
                times.append(run.not_before)
            if spec is not None and (d := deadline(spec, run)) is not None:
                times.append(d)
        elif run.state == "running" and spec is not None and spec.timeout and run.started is not None:
            times.append(run.started + spec.timeout)
    return min(t for t in times if t > now)


def retry_at(spec: ServiceSpec, run: RunRow, state: str, ended: float) -> float | None:
    """When a run that ended in ``state`` is tried again (``retries``); None: it is not."""
    if state != "failed" or run.attempt >= spec.retries:
        return None
    return ended + RUN_RETRY.delay(run.attempt + 1)
