"""The metrics collector: every ``metrics_interval`` seconds, one reading of every running
instance of every driver (``Driver.stats``), turned into a ``Sample`` (rates between this reading
and the last) and kept in ``ctx.metrics`` (history.py, the last hour) and, a minute at a time, in
SQLite (rollup.py, the day).

Why readings of cumulative counters, two at a time: a missed round (a slow runtime, a daemon
busy elsewhere) costs resolution, never a wrong rate; a restart inside the interval shows as a
counter that went down, which ``to_sample`` counts from zero.

A round reads each driver's listing on its own (a runtime that is away costs its instances'
readings, not the other runtimes'; its instances are not forgotten while it is away) and the
instances' stats concurrently, at most ``CONCURRENCY`` at once. A reading that fails (a
``DriverError``, an ``OSError``, anything) costs that instance's sample; it is logged once per
instance until a reading succeeds again, never once a round, and never ends the loop.

Every time is the one clock's (``ctx.clock``): a test with the fake driver and trio's
``MockClock`` runs an hour of rounds in milliseconds. After each round ``ctx.metrics.sampled``
(a ``Broadcast``) is set, for those who wait for fresh numbers (autoscale, tests).
"""

from __future__ import annotations

import traceback

import attrs
import structlog
import trio

from mariposa.context import Context
from mariposa.drivers.base import Driver, DriverError, RuntimeUnavailable
from mariposa.errors import StoreUnavailable
from mariposa.metrics.history import MetricsHistory, to_sample
from mariposa.metrics.rollup import MinuteRollup
from mariposa.model import Instance, InstanceStats

log = structlog.get_logger()

CONCURRENCY = 16  # stats() calls at once, over every driver


@attrs.frozen
class Reading:
    inst: Instance
    stats: InstanceStats | None


class Collector:
    def __init__(self, ctx: Context, interval: float = 10.0, concurrency: int = CONCURRENCY,
                 rollup: MinuteRollup | None = None) -> None:
        self.ctx = ctx
        self.interval = interval
        self.limiter = trio.CapacityLimiter(concurrency)
        if ctx.metrics is None:
            ctx.metrics = MetricsHistory(interval)
        self.history: MetricsHistory = ctx.metrics
        self.rollup = rollup if rollup is not None else MinuteRollup(ctx)
        self.rounds = 0
        self._last: dict[str, InstanceStats] = {}  # instance id -> its previous reading
        self._failing: set[str] = set()  # instances whose failing reading was logged (once)
        self._known: dict[str, set[str]] = {}  # compute type -> instance ids last listed running

    @property
    def sampled(self) -> trio.Event:
        """Set when the round in progress (or the next one) ends."""
        return self.history.sampled.event

    def set_interval(self, interval: float) -> None:
        """SIGHUP: the next sleep is the new interval's; the hour in memory is resized to it."""
        if interval != self.interval:
            self.interval = interval
            self.history.resize(interval)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        clock = self.ctx.clock
        next_at = clock.now()
        while True:
            try:
                await self.collect_once()
            except StoreUnavailable as exc:  # the minute rows wait for the next minute; the hour is kept
                log.warning("metrics minute not written: store unavailable", error=exc.message)
            except Exception as exc:  # a bug: log it, keep the daemon and the next rounds
                log.error("metrics round failed", error=repr(exc), traceback=traceback.format_exc())
            now = clock.now()
            next_at += self.interval
            if next_at <= now:  # a round longer than the interval: start afresh, do not catch up
                next_at = now + self.interval
            await clock.sleep_until(next_at)

    async def collect_once(self) -> None:
        """One round: list, read, sample, forget the gone, then the minute rows when a minute ended."""
        readings: list[Reading] = []
        async with trio.open_nursery() as nursery:
            for driver in self.ctx.drivers.values():
                nursery.start_soon(self._read_driver, driver, readings)
        now = self.ctx.clock.now()
        for reading in readings:
            inst, stats = reading.inst, reading.stats
            if stats is None:  # stopped a moment ago, or its reading failed: start again from the next
                self._last.pop(inst.id, None)
                continue
            before = self._last.get(inst.id)
            self._last[inst.id] = stats
            if before is None:
                continue  # a first reading has nothing to be a rate of
            sample = to_sample(before, stats, now)
            self.history.record(inst.id, inst.project_id, inst.service, sample)
            self.rollup.add(inst, sample)
        live = set().union(*self._known.values()) if self._known else set()
        self.history.retain(live)
        for gone in [i for i in self._last if i not in live]:
            del self._last[gone]
        self._failing &= live
        self.rounds += 1
        if self.ctx.monitor is not None:
            self.ctx.gauges.note_probes(now, self.ctx.monitor.probes)
        self.history.sampled.set()
        await self.rollup.flush(now)

    async def _read_driver(self, driver: Driver, readings: list[Reading]) -> None:
        try:
            listed = [i for i in await driver.inventory() if i.running]
        except (DriverError, RuntimeUnavailable, OSError) as exc:
            # away: its instances keep their history (and their last reading) until it answers
            log.debug("metrics: runtime not listed", driver=driver.compute_type, error=str(exc))
            return
        self._known[driver.compute_type] = {i.id for i in listed}
        async with trio.open_nursery() as nursery:
            for inst in listed:
                nursery.start_soon(self._read_one, driver, inst, readings)

    async def _read_one(self, driver: Driver, inst: Instance, readings: list[Reading]) -> None:
        async with self.limiter:
            try:
                stats = await driver.stats(inst)
            except Exception as exc:  # DriverError, OSError, a transport's: this reading only
                if inst.id not in self._failing:
                    self._failing.add(inst.id)
                    expected = isinstance(exc, DriverError | OSError)
                    (log.warning if expected else log.error)(
                        "metrics: cannot read an instance's stats; skipping it until it can be read",
                        instance=inst.id[:12], name=inst.name, driver=driver.compute_type,
                        error=str(exc) if expected else repr(exc))
                stats = None
            else:
                if stats is not None and inst.id in self._failing:
                    self._failing.discard(inst.id)
                    log.info("metrics: instance's stats readable again", instance=inst.id[:12], name=inst.name)
        readings.append(Reading(inst, stats))
