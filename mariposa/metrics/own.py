"""The daemon's own numbers, for ``GET /metrics``: how long reconcile passes take, how many health
checks run a second, and how far behind the runtimes' event streams the daemon is.

Kept here, in one object on the Context (``ctx.gauges``), rather than in each part: the parts
only note what happened (a float added, a counter read) and never format anything, and the
exposition (exposition.py) reads them all at once.

- Reconcile pass duration: a histogram (cumulative buckets, a sum and a count, as Prometheus
  keeps one), noted by the reconciler around each pass.
- Health checks: the monitor counts its probes (``HealthMonitor.probes``, exposed as the counter
  ``mariposa_health_checks_total``, whose rate Prometheus computes); the collector notes the
  count each round so the per-second rate over the last minute is a gauge too, for those who
  read /metrics without a Prometheus.
- Event lag: the time from when a runtime stamped an event (Docker's ``timeNano``) to when the
  daemon's watcher handled it (``watch_driver_events``): how stale what wakes the reconciler is.
  The last event's and the most over the last minute. A runtime that stamps no time (LXC and
  QEMU's journal, the fake) is not counted.
"""

from __future__ import annotations

import bisect
import collections

import attrs

# Seconds; a pass is milliseconds when nothing changed, seconds with hundreds of instances.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WINDOW = 60.0  # seconds: the health check rate and the event lag's max are over this


@attrs.define
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = attrs.field(init=False)  # per bucket (not cumulative); the last is +Inf
    total: float = 0.0
    count: int = 0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or under it), +Inf last, as the exposition writes them."""
        out, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@attrs.define
class DaemonGauges:
    reconcile: Histogram = attrs.field(factory=lambda: Histogram(RECONCILE_BUCKETS))
    event_lag: float | None = None  # seconds, the last event's
    _lags: collections.deque = attrs.field(factory=collections.deque)  # (when, lag) over WINDOW
    _probes: collections.deque = attrs.field(factory=collections.deque)  # (when, count) over WINDOW

    def note_reconcile(self, seconds: float) -> None:
        self.reconcile.observe(seconds)

    def note_event(self, now: float, stamped: float | None) -> None:
        """An event the runtime stamped at ``stamped`` (epoch seconds) was handled at ``now``."""
        if stamped is None:
            return
        lag = max(0.0, now - stamped)
        self.event_lag = lag
        self._lags.append((now, lag))
        while self._lags and self._lags[0][0] < now - WINDOW:
            self._lags.popleft()

    def event_lag_max(self, now: float) -> float | None:
        recent = [lag for when, lag in self._lags if when >= now - WINDOW]
        return max(recent) if recent else None

    def note_probes(self, now: float, count: int) -> None:
        """The health monitor's probe count at ``now`` (the collector notes it every round)."""
        self._probes.append((now, count))
        while len(self._probes) > 2 and self._probes[1][0] <= now - WINDOW:
            self._probes.popleft()  # keep one reading at or before the window's start

    def checks_per_second(self, now: float, count: int) -> float:
        """Health checks a second over about the last minute (the count now against the oldest
        reading kept); 0 before two readings."""
        if not self._probes:
            return 0.0
        when, then = self._probes[0]
        span = now - when
        return max(0.0, (count - then) / span) if span > 0 else 0.0
