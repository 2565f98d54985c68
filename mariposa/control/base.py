"""What every control method shares: authorize first, translate every exception once, redact
what leaves. ``@operation`` does the three, so an area's method holds only its own logic.

The model is supervisor's ``rpcinterface.py``: the whole control API as classes with no
transport in them, raising errors with stable codes, tested without HTTP.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from mariposa.control.authorize import Policy, authorize
from mariposa.control.caller import Caller
from mariposa.control.redact import redact, redact_stream
from mariposa.errors import translate
from mariposa.store import goal as goal_store
from mariposa.store.rows import ProjectRow

if TYPE_CHECKING:
    from mariposa.context import Context
    from mariposa.queue.executor import Executor

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Send = Callable[[list[Any]], Awaitable[None]]


@attrs.frozen
class Feed:
    """A stream that needs tasks of its own (``control/logs.py``: one reader per instance). A
    front end *runs* it, with a ``send`` that takes each batch of items, instead of iterating it:
    trio forbids yielding out of a nursery in an async generator, and this way every task of the
    stream lives and ends inside the front end's call (cancel it and they all stop)."""

    run: Callable[[Send], Awaitable[None]]


class Area:
    """One area of the control API (projects, services ...), sharing the daemon's context."""

    def __init__(self, ctx: Context, policy: Policy, executor: Executor | None = None) -> None:
        self.ctx = ctx
        self.policy = policy
        self.executor = executor

    async def _project(self, ref: str) -> ProjectRow:
        """A project by name, id or unique id prefix (every area names projects the same way),
        from the in-memory copy of the table, which holds every change acknowledged before."""
        if not isinstance(ref, str):
            return await self.ctx.store.call(goal_store.get_project, ref)
        return await self.ctx.projects.project(ref)

    async def _project_id(self, ref: str | None) -> str | None:
        """The project's id, or None when no project is given (a filter left open)."""
        return (await self._project(ref)).id if ref else None


def operation(action: str, target: str | None = None) -> Callable[[F], F]:
    """Mark a control method: ``action`` names it for authorization (``project.update``);
    ``target`` names the argument that says what it acts on (a project or instance ref)."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)
        # Where the target argument sits after (self, caller), found once: binding the signature
        # on every call cost more than the rest of a small request's control layer.
        at = list(signature.parameters).index(target) - 2 if target is not None else None

        def target_of(args: tuple, kwargs: dict) -> Any:
            """The target as given (None when left to its default, as binding said)."""
            if at is None:
                return None
            return args[at] if at < len(args) else kwargs.get(target)

        @functools.wraps(fn)
        async def method(self: Area, caller: Caller, *args: Any, **kwargs: Any) -> Any:
            what = target_of(args, kwargs)
            authorize(self.policy, caller, action, None if what is None else str(what))
            try:
                result = await fn(self, caller, *args, **kwargs)
            except Exception as exc:
                raise translate(exc, action) from exc
            if isinstance(result, AsyncIterator):
                return _translated(redact_stream(result), action)
            if isinstance(result, Feed):
                return _translated_feed(result, action)
            return redact(result)

        method.action = action  # type: ignore[attr-defined]
        return method  # type: ignore[return-value]

    return wrap


async def _translated(items: AsyncIterator[Any], action: str) -> AsyncIterator[Any]:
    """A stream's later errors leave translated too (a follower outlives the call that made it)."""
    try:
        async for item in items:
            yield item
    except Exception as exc:
        raise translate(exc, action) from exc


def _translated_feed(feed: Feed, action: str) -> Feed:
    """A feed's batches leave redacted and its errors translated, as a stream's do."""

    async def run(send: Send) -> None:
        async def redacted(batch: list[Any]) -> None:
            await send(redact(batch))

        try:
            await feed.run(redacted)
        except Exception as exc:
            raise translate(exc, action) from exc

    return Feed(run)
