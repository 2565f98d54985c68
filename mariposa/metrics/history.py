"""The last hour of every instance's numbers, at full resolution, in memory.

Why in memory: `mariposa top`, `service stats --since 1h` and the autoscale triggers read the
recent past many times a minute, and a reading that is lost with a daemon restart costs one
window of history, never a decision that matters (a trigger waits for a full window again). The
day at one-minute resolution is in SQLite (mariposa/metrics/rollup.py).

Bounded: each instance keeps a ring of ``ceil(3600 / interval) + 1`` readings packed as doubles
(``FIELDS`` of them), so at the default 10 s interval an instance costs 361 x 9 x 8 = 25,992
bytes of samples, whatever it does; an instance that goes is forgotten with its ring.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable

import attrs

from mariposa.model import InstanceStats
from mariposa.wakeup import Broadcast

HOUR = 3600.0


@attrs.frozen
class Sample:
    """An instance's numbers over the interval that ended at ``when`` (the collector's clock):
    rates from two readings of its counters, levels from the last one."""

    when: float
    cpu: float  # percent of one core (200.0: two cores busy)
    memory: int  # bytes
    memory_limit: int | None
    cpu_limit: float | None  # cores
    net_rx: float  # bytes per second
    net_tx: float
    block_read: float
    block_write: float

    @property
    def memory_percent(self) -> float | None:
        """Of the limit; None without one."""
        return 100.0 * self.memory / self.memory_limit if self.memory_limit else None

    def to_json(self) -> dict:
        data = attrs.asdict(self)
        data["memory_percent"] = self.memory_percent
        return data


FIELDS = 9  # the number of Sample fields, packed in this order


def to_sample(before: InstanceStats, after: InstanceStats, when: float) -> Sample:
    """The rates between two readings of one instance's counters. A counter that went down (the
    instance restarted inside the interval) counts from zero, so a restart never shows as a
    negative rate or a spike."""
    span = after.when - before.when
    if span <= 0:
        span = 1e-9

    def rate(a: int, b: int) -> float:
        return max(0.0, (b - a if b >= a else b) / span)

    return Sample(
        when=when,
        cpu=rate(before.cpu_ns, after.cpu_ns) / 1e9 * 100.0,
        memory=after.memory,
        memory_limit=after.memory_limit,
        cpu_limit=after.cpu_limit,
        net_rx=rate(before.net_rx, after.net_rx),
        net_tx=rate(before.net_tx, after.net_tx),
        block_read=rate(before.block_read, after.block_read),
        block_write=rate(before.block_write, after.block_write),
    )


def _pack(s: Sample) -> tuple[float, ...]:
    nan = math.nan
    return (s.when, s.cpu, float(s.memory), nan if s.memory_limit is None else float(s.memory_limit),
            nan if s.cpu_limit is None else s.cpu_limit, s.net_rx, s.net_tx, s.block_read, s.block_write)


def _unpack(values: Iterable[float]) -> Sample:
    when, cpu, memory, memory_limit, cpu_limit, net_rx, net_tx, block_read, block_write = values
    return Sample(when=when, cpu=cpu, memory=int(memory),
                  memory_limit=None if math.isnan(memory_limit) else int(memory_limit),
                  cpu_limit=None if math.isnan(cpu_limit) else cpu_limit,
                  net_rx=net_rx, net_tx=net_tx, block_read=block_read, block_write=block_write)


class Series:
    """One instance's ring of samples, oldest overwritten first."""

    def __init__(self, project_id: str, service: str, capacity: int) -> None:
        self.project_id = project_id
        self.service = service
        self.capacity = capacity
        self._data = array("d", bytes(8 * FIELDS * capacity))
        self._next = 0  # where the next sample goes
        self._count = 0

    def add(self, sample: Sample) -> None:
        at = self._next * FIELDS
        self._data[at:at + FIELDS] = array("d", _pack(sample))
        self._next = (self._next + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def samples(self, since: float = -math.inf) -> list[Sample]:
        """Oldest first, those taken at or after ``since``."""
        first = (self._next - self._count) % self.capacity
        found = []
        for i in range(self._count):
            at = ((first + i) % self.capacity) * FIELDS
            if self._data[at] >= since:
                found.append(_unpack(self._data[at:at + FIELDS]))
        return found

    def latest(self) -> Sample | None:
        if not self._count:
            return None
        at = ((self._next - 1) % self.capacity) * FIELDS
        return _unpack(self._data[at:at + FIELDS])

    @property
    def nbytes(self) -> int:
        return self._data.itemsize * len(self._data)


class MetricsHistory:
    """Every instance's series, by instance id."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.capacity = math.ceil(HOUR / interval) + 1
        self._series: dict[str, Series] = {}
        # set after each of the collector's rounds (take ``sampled.next()`` before looking, then wait)
        self.sampled = Broadcast()

    def resize(self, interval: float) -> None:
        """A new ``metrics_interval`` (SIGHUP): every ring holds an hour of the new interval,
        keeping the newest samples it had."""
        self.interval = interval
        self.capacity = math.ceil(HOUR / interval) + 1
        for instance_id, old in list(self._series.items()):
            new = Series(old.project_id, old.service, self.capacity)
            for sample in old.samples()[-self.capacity:]:
                new.add(sample)
            self._series[instance_id] = new

    def __len__(self) -> int:
        return len(self._series)

    def record(self, instance_id: str, project_id: str, service: str, sample: Sample) -> None:
        series = self._series.get(instance_id)
        if series is None:
            series = self._series[instance_id] = Series(project_id, service, self.capacity)
        series.add(sample)

    def retain(self, live: set[str]) -> None:
        """Forget every instance not in ``live`` (gone from the runtimes)."""
        for gone in [i for i in self._series if i not in live]:
            del self._series[gone]

    def series(self, instance_id: str) -> Series | None:
        return self._series.get(instance_id)

    def of(self, project_id: str | None = None, service: str | None = None) -> dict[str, Series]:
        """The series of a project's (a service's) instances, by instance id."""
        return {i: s for i, s in self._series.items()
                if (project_id is None or s.project_id == project_id) and (service is None or s.service == service)}

    def latest(self, instance_id: str) -> Sample | None:
        series = self._series.get(instance_id)
        return series.latest() if series is not None else None
