"""An ASGI application (the dashboard's starlette app) behind the listener's own connections.

Why a bridge, not hypercorn: the remote listener already is the daemon's one TLS front, with
its limits on bodies, times and connections, its failure limit and its hang-up watch; a second
server on a second port would need all of them again. The bridge turns one of our ``Request``s
into an ASGI ``http`` scope, runs the app to the end of its answer, and hands back one
``Response``. Pages are small (a list is a page of 100 rows), so the answer is gathered whole;
the one stream the dashboard has, its server-sent events, is written by the listener itself
(ui/stream.py), which ends a stream as soon as its client hangs up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from mariposa.api.router import Request, Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})


def scope_of(req: Request, client: str | None) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": req.method,
        "scheme": "https",
        "path": req.path,
        "raw_path": req.path.encode("utf-8", "surrogateescape"),
        "query_string": req.query_string,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in req.headers],
        "client": (client, 0) if client else None,
        "server": None,
        "state": {},
    }


async def call(app: App, req: Request, client: str | None = None) -> Response:
    """The app's whole answer to ``req``; an app that answers nothing is a 500."""
    sent_body = False
    answered = trio.Event()

    async def receive() -> Message:
        """The body once; then, as ASGI has it, wait for the client to go: here, for the end of the
        answer (starlette's responses listen for a disconnect while they send, and cancel the send
        when one comes)."""
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": req.body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    status, headers, body, content_type = 500, [], bytearray(), "text/plain; charset=utf-8"

    async def send(message: Message) -> None:
        nonlocal status, content_type
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", ()):
                name = bytes(name).lower()
                if name == b"content-type":
                    content_type = bytes(value).decode("latin-1")
                elif name not in HOP_BY_HOP:
                    headers.append((name.decode("latin-1"), bytes(value).decode("latin-1")))
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    await app(scope_of(req, client), receive, send)
    return Response(status, bytes(body), content_type=content_type, headers=tuple(headers))
