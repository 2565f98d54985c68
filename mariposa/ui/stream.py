"""The dashboard's live updates: server-sent events, written by the listener itself.

One stream per open page (``/ui/stream?project=P&service=S``). It follows the event log through
the control layer as the signed-in user (``events.follow``: what the user may not read never
reaches the stream), and also wakes on the daemon's task and health broadcasts, whose changes
(a task's progress, a check turning red) write no event. Each wake sends ``event: change``,
on which htmx re-fetches the parts of the page that listen (``hx-trigger="sse:change"``),
coalesced to at most one every ``COALESCE`` seconds; each event is also sent rendered, as
``event: event``, for the events feed to prepend. A comment every ``HEARTBEAT`` seconds keeps
proxies from closing an idle stream. The stream ends when the browser goes away (the listener's
hang-up watch cancels it) or the session ends.
"""

from __future__ import annotations

import json
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING

import trio

from mariposa.api.router import Request, Response, Write
from mariposa.store import events as event_store

if TYPE_CHECKING:
    from mariposa.ui.app import Dashboard

CONTENT_TYPE = "text/event-stream; charset=utf-8"
HEARTBEAT = 15.0
COALESCE = 0.2
SECURITY = (("cache-control", "no-store"), ("x-content-type-options", "nosniff"))


def cookie_of(req: Request, name: str) -> str | None:
    raw = req.header(b"cookie")
    if raw is None:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def message(event: str, data: str) -> bytes:
    """One SSE message; every line of ``data`` gets its own ``data:`` field."""
    lines = "".join(f"data: {line}\n" for line in (data.splitlines() or [""]))
    return f"event: {event}\n{lines}\n".encode()


async def stream(board: Dashboard, req: Request) -> Response:
    from mariposa.ui.app import COOKIE

    session = board.sessions.get(cookie_of(req, COOKIE))
    if session is None:
        return Response.text("sign in first\n", "text/plain; charset=utf-8", status=401)
    project = req.query.get("project") or None
    service = req.query.get("service") or None
    caller = board.caller_of(session, req.caller.address, req.query.get("org"))
    since = await board.control.ctx.store.call(event_store.last_id)
    feed = await board.control.events.follow(caller, project=project, service=service, since=since)
    row = board.templates.env.get_template("event_row.html")
    ctx = board.control.ctx

    async def produce(write: Write) -> None:
        changed = trio.Event()

        async def follow_events() -> None:
            async for e in feed:
                changed.set()
                await write(message("event", row.render(e=e)))

        async def watch(broadcast) -> None:
            while True:
                await broadcast.next().wait()
                changed.set()

        async def announce() -> None:
            nonlocal changed
            await write(b": mariposa\n\n")
            while True:
                with trio.move_on_after(HEARTBEAT) as idle:
                    await changed.wait()
                if idle.cancelled_caught:
                    if board.sessions.get(cookie_of(req, COOKIE)) is None:
                        return  # signed out or expired: the stream ends with the session
                    await write(b": heartbeat\n\n")
                    continue
                await trio.sleep(COALESCE)
                changed = trio.Event()
                await write(message("change", json.dumps({"project": project, "service": service})))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow_events)
            nursery.start_soon(watch, ctx.task_changes)
            nursery.start_soon(watch, ctx.health_changes)
            nursery.start_soon(watch, ctx.run_changes)
            await announce()
            nursery.cancel_scope.cancel()

    return Response(200, produce=produce, content_type=CONTENT_TYPE, headers=SECURITY)
