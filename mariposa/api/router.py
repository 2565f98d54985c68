"""Requests, responses and the route table: the HTTP API with no sockets in it, so the route
table is tested by calling ``dispatch`` (as hypercorn tests its protocol with no server)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import attrs
import trio

from mariposa.control.caller import Caller
from mariposa.errors import BadRequest, translate

PARSE_ON_A_THREAD = 64 * 1024  # bodies this big are parsed off the event loop (16 MiB takes ~0.1-1 s)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_object(body: bytes) -> dict[str, Any]:
    """A body as a JSON object ({} when empty); anything else is the caller's mistake."""
    if not body:
        return {}
    try:
        data = json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(data).__name__}")
    return data


@attrs.frozen
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    params: dict[str, str]
    caller: Caller
    parsed: dict[str, Any] | None = None  # the body, parsed once by Router.dispatch
    headers: tuple[tuple[bytes, bytes], ...] = ()  # h11's (lower-case names); the dashboard reads them
    query_string: bytes = b""  # as sent: the dashboard's forms repeat keys

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> dict[str, Any]:
        """The body as a JSON object ({} when empty); anything else is the caller's mistake."""
        return self.parsed if self.parsed is not None else parse_object(self.body)


Write = Callable[[bytes], Awaitable[None]]
Producer = Callable[[Write], Awaitable[None]]  # writes the body, chunk by chunk, then returns


@attrs.frozen
class Response:
    """A JSON ``body``, or a streamed one (newline-delimited JSON, for --follow and logs): a
    ``stream`` to iterate or a ``produce`` to run with a ``write`` (a stream with tasks of its
    own, see ``control.base.Feed``). With a ``content_type`` the body is text sent as it is
    (``GET /metrics``: Prometheus' text format), see ``text``; a streamed body with one is sent
    in that type (the dashboard's ``text/event-stream``)."""

    status: int = 200
    body: Any = None
    stream: AsyncIterator[bytes] | None = None
    produce: Producer | None = None
    content_type: str | None = None  # None: JSON
    headers: tuple[tuple[str, str], ...] = ()  # more headers (a 401's WWW-Authenticate, a 429's Retry-After)

    @classmethod
    def text(cls, body: str, content_type: str, status: int = 200) -> Response:
        return cls(status, body, content_type=content_type)

    @property
    def streamed(self) -> bool:
        return self.stream is not None or self.produce is not None


Handler = Callable[[Request], Awaitable[Any]]


class Router:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self.routes.append((method, re.compile(f"^{regex}$"), handler))

    async def dispatch(self, req: Request) -> Response:
        """The route's answer; every error leaves as a status and the error's JSON. HEAD is
        answered as GET (the server leaves the body out). A body, on any route, is a JSON object
        or a 400: a client that sent garbage is confused, and a DELETE that came with '[]' must
        not delete."""
        method = "GET" if req.method == "HEAD" else req.method
        allowed = False
        for route_method, regex, handler in self.routes:
            m = regex.fullmatch(req.path)
            if not m:
                continue
            allowed = True
            if route_method != method:
                continue
            params = {k: unquote(v) for k, v in m.groupdict().items()}
            try:
                # Parsed once, here, whether the route reads a body or not: a route that reads
                # none refuses one that is not an object all the same.
                if len(req.body) > PARSE_ON_A_THREAD:
                    parsed = await trio.to_thread.run_sync(parse_object, req.body)
                else:
                    parsed = parse_object(req.body)
                req = attrs.evolve(req, params=params, parsed=parsed)
                result = await handler(req)
            except Exception as exc:
                err = translate(exc, f"{req.method} {req.path}")
                return Response(err.status, err.to_json())
            return result if isinstance(result, Response) else Response(200, result)
        if allowed:
            return Response(405, {"error": "method-not-allowed", "message": f"{req.method} not allowed on {req.path}"})
        return Response(404, {"error": "not-found", "message": f"no endpoint {req.path}"})
