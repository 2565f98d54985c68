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

import html
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
    kind = req.query.get("type") or None
    caller = board.caller_of(session, req.caller.address, req.query.get("org"))
    since = await board.control.ctx.store.call(event_store.last_id)
    feed = await board.control.events.follow(caller, project=project, service=service,
                                             types=(kind,) if kind else (), since=since)
    row = board.templates.env.get_template("event_row.html")
    ctx = board.control.ctx

    async def produce(send: Write) -> None:
        changed = trio.Event()
        one_at_a_time = trio.Lock()

        async def write(chunk: bytes) -> None:
            """Two tasks write (the events as they come, the coalesced change): one TLS stream
            takes one ``send_all`` at a time, and a second while the first waits on a slow client
            is trio's BusyResourceError, which ended the stream (seen with 50 clients on 2 cores)."""
            async with one_at_a_time:
                await send(chunk)

        async def follow_events() -> None:
            async for e in feed:
                changed.set()
                named = (await ctx.projects.current()).by_id.get(e.get("project_id") or "")
                names = {named.id: named.name} if named is not None else {}
                await write(message("event", row.render(e=e, names=names)))

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


TAIL = 1000  # lines a log view shows first
TAIL_LINES_READ = 10_000  # lines read for that tail at most, over all the service's instances


def log_lines(lines: list[dict]) -> str:
    """Log records as the log view's HTML: one block per line, escaped, naming its instance."""
    return "".join(f'<span class="log-line"><span class="who">{html.escape(r["name"])}</span> '
                   f'{html.escape(r["line"])}</span>' for r in lines)


async def logs(board: Dashboard, req: Request) -> Response:
    """``/ui/logs?project=P&service=S[&instance=I]``: the service's last ``TAIL`` lines as one
    ``event: logtail`` (the whole ``#log-lines``), then each new batch of lines as an ``event:
    log`` to append, following the service through
    restarts and replacements (control/logs.py). Only tails are read, never a whole log: each
    instance's last ``TAIL`` lines (fewer each when there are many instances, at most
    ``TAIL_LINES_READ`` in all), merged by time, the newest ``TAIL`` kept."""
    from mariposa.ui.app import COOKIE

    session = board.sessions.get(cookie_of(req, COOKIE))
    if session is None:
        return Response.text("sign in first\n", "text/plain; charset=utf-8", status=401)
    project, service = req.query.get("project"), req.query.get("service")
    if not project or not service:
        return Response.text("project and service are required\n", "text/plain; charset=utf-8", status=400)
    instance = req.query.get("instance") or None
    caller = board.caller_of(session, req.caller.address, req.query.get("org"))
    services = board.control.services
    count = 1 if instance else max(1, (await services.get(caller, project, service))["instances"])
    per = min(TAIL, max(1, TAIL_LINES_READ // count))
    first = await services.logs(caller, project, service, tail=per, instance=instance)  # a refusal is a 403 here

    async def produce(write: Write) -> None:
        await write(b": mariposa\n\n")
        lines: list[dict] = []

        async def keep(batch: list[dict]) -> None:
            lines.extend(batch)

        await first.run(keep)
        lines.sort(key=lambda r: r["time"])
        last: dict[str, float] = {}  # what following skips: each instance's lines up to here were read
        for r in lines:
            last[r["instance"]] = r["time"]
        lines = lines[-TAIL:]
        # the tail replaces the view's lines (event: logtail), so a stream the browser opens
        # again after a break shows them once, not twice; new lines are appended (event: log)
        await write(message("logtail", f'<pre id="log-lines" class="log" sse-swap="log" hx-swap="beforeend">'
                                        f'{log_lines(lines)}</pre>'))
        follow = await services.logs(caller, project, service, tail=per, instance=instance, follow=True)

        async def send(batch: list[dict]) -> None:
            new = [r for r in batch if r["time"] > last.get(r["instance"], float("-inf"))]
            if new:
                await write(message("log", log_lines(new)))

        await follow.run(send)

    return Response(200, produce=produce, content_type=CONTENT_TYPE, headers=SECURITY)
