"""Concurrent asks for the same answer share one fetch, and every answer is fresher than its ask.

500 clients listing projects at once made 500 identical container listings of the Engine, each
5-10 ms of its time, queued behind each other. A caller that arrives while a fetch for its key is
running does not take that fetch's answer (it began before the caller asked, and may miss a change
the caller has just made); it waits for the *next* fetch, which starts when the running one ends
and is shared by everyone who arrived meanwhile. So at most two fetches per key are ever in the
air, and no caller sees a state older than its question.

The fetch runs in the task of the caller that leads it, inside that caller's nursery; if that
caller is cancelled, the callers waiting on the fetch lead a new one instead of hanging.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import attrs
import trio

T = TypeVar("T")


@attrs.define(eq=False)
class _Fetch:
    number: int
    done: trio.Event = attrs.field(factory=trio.Event)
    value: Any = None
    error: BaseException | None = None
    abandoned: bool = False


class Coalesced(Generic[T]):
    def __init__(self, fetch: Callable[[Any], Awaitable[T]]):
        self._fetch = fetch
        self._running: dict[Hashable, _Fetch] = {}
        self._started: dict[Hashable, int] = {}

    async def __call__(self, key: Hashable) -> T:
        asked = self._started.get(key, 0)  # fetches begun before this ask: their answers are too old
        while True:
            running = self._running.get(key)
            if running is None:
                return await self._lead(key)
            await running.done.wait()
            if running.number > asked and not running.abandoned:
                if running.error is not None:
                    raise running.error
                return running.value

    async def _lead(self, key: Hashable) -> T:
        number = self._started[key] = self._started.get(key, 0) + 1
        fetch = self._running[key] = _Fetch(number)
        try:
            fetch.value = await self._fetch(key)
            return fetch.value
        except trio.Cancelled:
            fetch.abandoned = True
            raise
        except Exception as exc:
            fetch.error = exc
            raise
        finally:
            del self._running[key]
            fetch.done.set()
