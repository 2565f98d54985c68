"""The day in SQLite: one row per instance per minute, the averages of that minute's samples
(memory: the average and the most), written once a minute in one transaction through the one
writer (``ctx.store.call``, off the loop); rows older than 24 h are deleted in the same one.

Why a minute and a day: ``service stats --since 6h`` needs the shape of the day, not each 10 s
sample, and a day of minutes is bounded whatever the interval.

Bounded: measured with the database file (100 instances x 1,440 minutes written through
``write_minutes``, then VACUUM: /tmp script in the issue-17 report), a row costs 209 bytes with
its two index entries (13 numbers and three ids: the 32-character instance and project ids
dominate), so an instance-day (1,440 rows) costs about 300 KB of disk; 100 instances, about
30 MB. In memory the collector keeps one accumulator per instance (its minute so far).
"""

from __future__ import annotations

import attrs

from mariposa.context import Context
from mariposa.metrics.history import Sample
from mariposa.model import Instance
from mariposa.store import metrics as metric_store

MINUTE = 60


@attrs.define
class _Minute:
    """One instance's minute so far."""

    minute: int
    project_id: str
    service: str
    samples: int = 0
    cpu: float = 0.0
    memory: float = 0.0
    memory_max: int = 0
    memory_limit: int | None = None
    net_rx: float = 0.0
    net_tx: float = 0.0
    block_read: float = 0.0
    block_write: float = 0.0

    def add(self, s: Sample) -> None:
        self.samples += 1
        self.cpu += s.cpu
        self.memory += s.memory
        self.memory_max = max(self.memory_max, s.memory)
        self.memory_limit = s.memory_limit
        self.net_rx += s.net_rx
        self.net_tx += s.net_tx
        self.block_read += s.block_read
        self.block_write += s.block_write

    def row(self, instance_id: str) -> tuple:
        n = self.samples
        return (self.minute, instance_id, self.project_id, self.service, n, self.cpu / n, round(self.memory / n),
                self.memory_max, self.memory_limit, self.net_rx / n, self.net_tx / n, self.block_read / n,
                self.block_write / n)


class MinuteRollup:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._open: dict[str, _Minute] = {}  # instance id -> its minute so far
        self._done: list[tuple] = []  # finished minutes not yet written
        self.written = 0  # rows written, for tests and logs

    def add(self, inst: Instance, sample: Sample) -> None:
        minute = int(sample.when // MINUTE * MINUTE)
        current = self._open.get(inst.id)
        if current is not None and current.minute != minute:
            self._done.append(current.row(inst.id))
            current = None
        if current is None:
            current = self._open[inst.id] = _Minute(minute, inst.project_id, inst.service)
        current.add(sample)

    async def flush(self, now: float) -> None:
        """Write every minute that ended before ``now``'s (a gone instance's last one too)."""
        minute = int(now // MINUTE * MINUTE)
        for instance_id, acc in list(self._open.items()):
            if acc.minute < minute:
                self._done.append(acc.row(instance_id))
                del self._open[instance_id]
        if not self._done:
            return
        rows, self._done = self._done, []
        try:
            await self.ctx.store.call(metric_store.write_minutes, rows, now)
        except BaseException:
            self._done = rows + self._done  # the next minute tries again
            raise
        self.written += len(rows)
