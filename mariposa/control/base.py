"""What every control method shares: authorize first, translate every exception once, redact
what leaves. ``@operation`` does the three, so an area's method holds only its own logic.

Authorizing needs to know where an action lands: ``@operation`` names the argument that says so
and what kind of thing it names (a project, a task, an instance, a run, the host), and resolves
it to a ``Scope`` (an organisation and a project) before ``authorize``. A listing asked with no
project is allowed to whoever may read somewhere and its items (``each`` names their project id)
are then filtered to the projects the caller may read, in the organisation it chose with -o.

The model is supervisor's ``rpcinterface.py``: the whole control API as classes with no
transport in them, raising errors with stable codes, tested without HTTP.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from mariposa.access.model import ALL_ORGS, ANYWHERE, DEFAULT_ORG, HOST, ROOT, Scope
from mariposa.control.authorize import Policy, authorize
from mariposa.control.caller import Caller
from mariposa.control.redact import redact, redact_stream
from mariposa.errors import NotFound, translate
from mariposa.store import goal as goal_store
from mariposa.store import runs as run_store
from mariposa.store import tasks as task_store
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

    async def _access_scope(self, caller: Caller, kind: str, what: Any) -> Scope:
        """Where an action on ``what`` (a ``kind`` of thing) lands, for authorizing it."""
        if kind == "host":
            return HOST
        if kind == "binding":  # (org, project): where a grant, deny or revoke lands
            org, project = what
            if project is None:
                return HOST if org in (None, ALL_ORGS) else Scope(org=str(org))
            kind, what = "project", project
        if what is None:
            return Scope(org=caller.org, anywhere=True) if caller.org else ANYWHERE
        ref = str(what)
        if caller.org is None and self.policy.is_root(caller):
            return Scope(ref=ref)  # root may do anything anywhere: no need to look it up
        if kind == "project":
            return self.project_scope(caller, await self._project(ref))
        if kind == "new-project":
            try:
                return self.project_scope(caller, await self._project(ref))
            except NotFound:
                return Scope(org=caller.org or DEFAULT_ORG, project=ref)
        if kind == "task":
            project_id = (await self.ctx.store.call(task_store.get, ref)).project_id
        elif kind == "run":
            project_id = (await self.ctx.store.call(run_store.get, ref)).project_id
        elif kind == "instance":
            from mariposa.control.views import find_instance  # views imports this module

            project_id = (await find_instance(self.ctx, ref)).project_id
        else:
            raise AssertionError(f"no such target kind: {kind}")
        row = (await self.ctx.projects.current()).by_id.get(project_id)
        if row is None:  # a task or run of a deleted project: only bindings on every organisation cover it
            return Scope(org="", project=ref)
        return self.project_scope(caller, row)

    @staticmethod
    def project_scope(caller: Caller, row: ProjectRow) -> Scope:
        if caller.org is not None and row.org != caller.org:
            raise NotFound(f"no project '{row.name}' in organisation '{caller.org}'")
        return _scope_of(row)

    def _may_see(self, caller: Caller, action: str, row: ProjectRow | None) -> bool:
        """Whether a listing's item of project ``row`` (None: of no project, or a deleted one) is
        the caller's to see."""
        if row is None:
            return caller.org is None and self.policy.is_root(caller)
        if caller.org is not None and row.org != caller.org:
            return False
        return self.policy.decide(caller, action, _scope_of(row)).allowed


def _scope_of(row: ProjectRow) -> Scope:
    return Scope(org=row.org, project=row.name, project_id=row.id)


def operation(action: str, target: str | tuple[str, str] | None = None, *, kind: str = "project",
              each: str | None = None) -> Callable[[F], F]:
    """Mark a control method: ``action`` names it for authorization (``project.update``);
    ``target`` names the argument that says what it acts on, a ``kind`` of thing: "project" (a
    project ref), "new-project" (a name that may be new), "task", "run", "instance", "host", or
    "binding" (``target`` names two arguments, the organisation and the project a binding is on:
    an organisation's admin manages the bindings of that organisation, a host admin all of them).
    ``each`` names the key of a listing's items that holds their project id: such a listing,
    asked with no target, is filtered to what the caller may see."""

    def wrap(fn: F) -> F:
        names = list(inspect.signature(fn).parameters)
        # Where the target argument sits after (self, caller), found once: binding the signature
        # on every call cost more than the rest of a small request's control layer.
        targets = () if target is None else (target,) if isinstance(target, str) else target
        spots = [(names.index(t) - 2, t) for t in targets]

        def one(args: tuple, kwargs: dict, at: int, name: str) -> Any:
            """An argument as given (None when left to its default, as binding said)."""
            return args[at] if at < len(args) else kwargs.get(name)

        def target_of(args: tuple, kwargs: dict) -> Any:
            if not spots:
                return None
            if len(spots) == 1:
                return one(args, kwargs, *spots[0])
            return tuple(one(args, kwargs, at, name) for at, name in spots)

        @functools.wraps(fn)
        async def method(self: Area, caller: Caller, *args: Any, **kwargs: Any) -> Any:
            what = target_of(args, kwargs)
            try:
                scope = await self._access_scope(caller, kind, what)
            except Exception as exc:
                raise translate(exc, action) from exc
            decision = authorize(self.policy, caller, action, scope, self.ctx.audit)
            if caller.user is None and decision.user not in (None, ROOT):
                caller = attrs.evolve(caller, user=decision.user)  # what it signs (events, versions) with
            try:
                result = await fn(self, caller, *args, **kwargs)
            except Exception as exc:
                raise translate(exc, action) from exc
            if each is not None and scope.anywhere and (caller.org is not None or not self.policy.is_root(caller)):
                result = await _filtered(self, caller, action, each, result)
            if isinstance(result, AsyncIterator):
                return _translated(redact_stream(result), action)
            if isinstance(result, Feed):
                return _translated_feed(result, action)
            return redact(result)

        method.action = action  # type: ignore[attr-defined]
        return method  # type: ignore[return-value]

    return wrap


async def _filtered(area: Area, caller: Caller, action: str, each: str, result: Any) -> Any:
    """A listing's items the caller may see (a list, or a stream as it comes). A list is judged on
    one copy of the projects table, once per project however many items it has."""
    if isinstance(result, list):
        by_id = (await area.ctx.projects.current()).by_id
        judged: dict[str | None, bool] = {}

        def sees(project_id: str | None) -> bool:
            if project_id not in judged:
                judged[project_id] = area._may_see(caller, action, by_id.get(project_id or ""))
            return judged[project_id]

        return [item for item in result if sees(item.get(each))]
    if isinstance(result, AsyncIterator):
        return _filtered_stream(area, caller, action, each, result)
    return result


async def _filtered_stream(area: Area, caller: Caller, action: str, each: str,
                           items: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in items:
        if not isinstance(item, dict) or area._may_see(
                caller, action, (await area.ctx.projects.current()).by_id.get(item.get(each) or "")):
            yield item


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
