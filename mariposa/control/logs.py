"""Instances' output, merged: what ``service logs`` and ``instance logs`` stream.

Why it is built this way:

- **One reader per instance, one merge.** Each instance's lines come from the driver's ``logs()``
  in a task of their own and meet in one bounded channel, so a slow client slows the readers
  (back-pressure) instead of making the daemon buffer: the daemon holds at most ``BUFFER`` lines
  of each follower plus one line being joined per instance (``MAX_LOG_LINE``), never a whole log.
  Lines are sent in batches of what is ready, so 10,000 lines are not 10,000 socket writes.
- **Run, not iterated.** The readers need a nursery, and trio forbids yielding out of a nursery
  in an async generator, so a follower is a ``Feed``: the front end calls ``run(send)`` and every
  task lives and dies inside that call. Cancelling it (the client hung up) ends all of them.
- **Following follows the service, not a list of containers.** While following, the instances
  are looked up again whenever the runtime reports an event (``Context.runtime_changed``) and at
  least every ``RESYNC`` seconds: a new instance (a scale-up, a rollout's replacement) is read
  from its first line, and one started again in place is read on from its last line. The
  instances there at the start get ``tail``; a newcomer gets all its lines, as compose does.
- **Bad input is refused before anything streams**: ``since`` and ``tail`` are parsed here, and an
  unknown service or instance is a 404, while the answer can still say so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from datetime import datetime

import attrs
import trio

from mariposa.context import Context
from mariposa.control.base import Feed, Send
from mariposa.drivers.base import DriverError, RuntimeUnavailable
from mariposa.errors import BadRequest
from mariposa.model import Instance

RESYNC = 1.0  # seconds between looks for new or restarted instances while following
BUFFER = 1024  # lines in flight between the readers and the client
BATCH = 512  # lines sent at once, at most
READERS = 32  # instances read at once without --follow (following reads them all at once)
MAX_TAIL_DIGITS = 9  # a longer --tail is "all" (and never a 4,300-digit int)

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SINCE_HELP = ("a duration (10m, 1h30m, 45s) or a time (2026-11-26T13:55:00Z, 2026-11-26 13:55, or epoch "
               "seconds)")

Select = Callable[[], Awaitable[list[Instance]]]


def parse_since(value: object, now: float) -> float | None:
    """``--since`` as epoch seconds: a Go-style duration back from ``now`` (``10m``, ``1h30m``),
    an RFC 3339 / ISO 8601 time (without a zone: this host's local time, as Docker reads it) or
    epoch seconds. None or "" means from the start."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if len(text) > 64:
        raise BadRequest(f"'since' must be {_SINCE_HELP}, not a {len(text)}-character value")
    if text and _DURATION.sub("", text) == "" and _DURATION.match(text):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))
        if math.isfinite(seconds):
            return now - seconds
    try:
        stamp = float(text)
        if math.isfinite(stamp) and stamp >= 0:
            return stamp
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("z", "Z")).timestamp()
    except (ValueError, OverflowError, OSError):
        pass
    raise BadRequest(f"'since' must be {_SINCE_HELP}, not '{text}'")


def parse_tail(value: object) -> int | None:
    """``--tail``: a number of lines (0 or more) per instance, or ``all`` (None, the default)."""
    if value is None or value == "" or value == "all":
        return None
    text = str(value).strip()
    if not text.isdigit() or not text.isascii():
        raise BadRequest(f"'tail' must be a number of lines (0 or more) or 'all', not '{text[:40]}'")
    return None if len(text) > MAX_TAIL_DIGITS else int(text)


def short_name(inst: Instance) -> str:
    """What prefixes an instance's lines: its service and id, as compose prints ``web-1``."""
    return f"{inst.service}-{inst.id[:8]}"


@attrs.define
class _Reading:
    """What a follower knows of one instance: whether a reader is at it, and the last line's time."""

    active: bool = False
    read: bool = False  # read at least once (a stopped one is not read again until it runs)
    last: float | None = None


@attrs.define
class Follower:
    """Streams the lines of the instances ``select`` returns; see the module docstring.

    ``retired`` is given for one instance's logs (it tells whether that instance is retired):
    following then ends once the instance is removed, or stopped and retired, instead of
    waiting for newcomers that cannot come."""

    ctx: Context
    select: Select
    since: float | None = None
    tail: int | None = None
    follow: bool = False
    retired: Callable[[], Awaitable[bool]] | None = None

    def feed(self) -> Feed:
        return Feed(self.run)

    async def run(self, send: Send) -> None:
        to_client, lines = trio.open_memory_channel[dict](BUFFER)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._supervise, to_client)
                async with lines:
                    async for first in lines:
                        batch = [first]
                        while len(batch) < BATCH:
                            try:
                                batch.append(lines.receive_nowait())
                            except (trio.WouldBlock, trio.EndOfChannel):
                                break
                        await send(batch)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _supervise(self, to_client: trio.MemorySendChannel[dict]) -> None:
        readings: dict[str, _Reading] = {}
        first_look = True
        limiter = trio.CapacityLimiter(READERS)
        async with to_client, trio.open_nursery() as readers:
            while True:
                changed = self.ctx.runtime_changed.event
                found = await self.select()
                for inst in found:
                    reading = readings.setdefault(inst.id, _Reading())
                    if reading.active or (reading.read and not (self.follow and inst.running)):
                        continue
                    reading.active = True
                    tail = self.tail if first_look else None
                    readers.start_soon(self._read, inst, reading, tail, to_client.clone(), limiter)
                first_look = False
                if not self.follow or (self.retired is not None and await self._instance_over(found, readings)):
                    return  # the readers started so far finish; then the channel closes
                with trio.move_on_after(RESYNC):
                    await changed.wait()

    async def _instance_over(self, found: list[Instance], readings: dict[str, _Reading]) -> bool:
        """One instance's follow is over once it is gone, or stopped and retired (it never runs
        again); its reader, if still at it, finishes the lines there are."""
        assert self.retired is not None
        if not found:
            return True
        return not found[0].running and await self.retired()

    async def _read(self, inst: Instance, reading: _Reading, tail: int | None,
                    to_client: trio.MemorySendChannel[dict], limiter: trio.CapacityLimiter) -> None:
        if self.follow:
            await self._read_one(inst, reading, tail, to_client)
        else:
            async with limiter:
                await self._read_one(inst, reading, tail, to_client)

    async def _read_one(self, inst: Instance, reading: _Reading, tail: int | None,
                        to_client: trio.MemorySendChannel[dict]) -> None:
        name = short_name(inst)
        after = reading.last  # a re-attach goes on after the last line it had
        since = self.since if after is None else max(after, self.since or after)
        driver = self.ctx.driver_for(inst.compute_type)
        async with to_client:
            try:
                async with aclosing(driver.logs(inst, since=since, tail=tail, follow=self.follow)) as stream:
                    async for line in stream:
                        if after is not None and line.when <= after:
                            continue
                        reading.last = line.when
                        record = {"instance": inst.id, "name": name, "service": inst.service, "time": line.when,
                                  "line": line.line.decode("utf-8", "replace").rstrip("\r")}
                        try:  # lines that came in one read go on together, to be sent in one batch
                            to_client.send_nowait(record)
                        except trio.WouldBlock:
                            await to_client.send(record)  # the client is behind: wait for it
            except RuntimeUnavailable:
                raise
            except DriverError:
                pass  # removed between the look and the read: it has no more lines to give
            finally:
                reading.read, reading.active = True, False


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The one error a caller can act on out of a nursery's group (a runtime that went away);
    a group of only cancellations stays as it is, for trio to take."""
    errors = group.subgroup(lambda e: not isinstance(e, trio.Cancelled) and isinstance(e, Exception))
    if errors is None:
        return group
    leaf: BaseException = errors
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf
