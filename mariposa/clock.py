"""The one clock every time-dependent decision reads.

Why one: back-offs, rollout deadlines, health grace periods and timestamps in the store all
compare times with each other. Read from one source, a test can drive all of them with trio's
``MockClock`` (or a ``FakeClock``) and run in milliseconds what takes minutes in real time,
instead of sleeping for real.

Times are epoch seconds, so they can be stored and shown. ``TrioClock`` anchors trio's own
(monotonic) clock to the wall clock once, when it is made: every later reading advances with
trio's clock, so the daemon's notion of time never jumps when NTP steps the wall clock, and a
``MockClock`` that autojumps moves it along too. ``now()`` is safe to call from worker threads
(the store's functions run there), because it reads the clock object, not trio's run state.

trio is imported where it is used: the CLI imports this module for ``wall_clock()`` and should
not pay for importing trio on every command.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds; callable from any thread."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return once ``now() >= when``."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class TrioClock:
    """Follows the clock of the trio run it was made in (the real one, or a ``MockClock``)."""

    def __init__(self, epoch: float | None = None) -> None:
        import trio

        self._trio = trio.lowlevel.current_clock()
        start = self._trio.current_time()
        self._offset = (time.time() if epoch is None else epoch) - start

    def now(self) -> float:
        return self._offset + self._trio.current_time()

    def to_trio(self, when: float) -> float:
        """An epoch time as a deadline on trio's clock, for cancel scopes."""
        return when - self._offset

    async def sleep_until(self, when: float) -> None:
        import trio

        await trio.sleep_until(when - self._offset)

    async def sleep(self, seconds: float) -> None:
        import trio

        await trio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to, for pure (non-trio) tests. ``sleep_until`` jumps."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep_until(self, when: float) -> None:
        import trio

        self.t = max(self.t, when)
        await trio.lowlevel.checkpoint()

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.t + seconds)


class WallClock:
    """The wall clock as a ``Clock``, for a store opened outside a trio run (tools, tests)."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        import trio

        await trio.sleep(max(0.0, when - time.time()))

    async def sleep(self, seconds: float) -> None:
        import trio

        await trio.sleep(seconds)


def wall_clock() -> float:
    """Wall time for code that runs outside the daemon (the CLI's "5s ago"); the daemon's own
    decisions read ``Context.clock`` instead."""
    return time.time()
