"""Level-triggered nudges between trio tasks. ``Wakeup``: many ``set()`` calls while nobody waits
collapse into one wake-up, and a waiter never misses a ``set()`` made before it started waiting.
``Changes``: the same promise to any number of waiters."""

from __future__ import annotations

import trio


class Wakeup:
    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """True when woken, False on timeout; either way the next wait needs a new ``set()``."""
        woken = True
        if timeout is None:
            await self._event.wait()
        else:
            with trio.move_on_after(timeout):
                await self._event.wait()
            woken = self._event.is_set()
        self._event = trio.Event()
        return woken


class Broadcast:
    """Wakes every waiter at once, for watchers of shared state (log followers, `--wait`
    following tasks), where a ``Wakeup`` is one task's. A waiter takes ``event`` (or ``next()``)
    *before* it looks at the world, then waits on it: a ``set()`` made between the look and the
    wait is never missed."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def next(self) -> trio.Event:
        return self._event

    @property
    def event(self) -> trio.Event:
        return self._event

    def set(self) -> None:
        self._event.set()
        self._event = trio.Event()
