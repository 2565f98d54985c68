"""A small HTTP/1.1 server for the control socket, on h11 and trio.

We keep the server in our hands (rather than an ASGI stack) because the control API needs the
caller's uid/gid from the unix socket's peer credentials, which ASGI servers do not pass through,
and because it keeps the daemon to one event loop and one nursery.
"""

from __future__ import annotations

import json
import os
from http import HTTPStatus
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import h11
import structlog
import trio

from mariposa.control.caller import Caller
from mariposa.errors import MariposaError, translate

log = structlog.get_logger()
MAX_BODY = 16 * 1024 * 1024


@attrs.frozen
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    params: dict[str, str]
    caller: Caller

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise MariposaError(f"request body is not JSON: {exc}") from None


@attrs.frozen
class Response:
    status: int = 200
    body: Any = None
    stream: AsyncIterator[bytes] | None = None  # newline-delimited JSON, for --follow


Handler = Callable[[Request], Awaitable[Response | dict | list]]


class Router:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self.routes.append((method, re.compile(f"^{regex}$"), handler))

    def route(self, method: str, pattern: str):
        def wrap(fn: Handler) -> Handler:
            self.add(method, pattern, fn)
            return fn

        return wrap

    async def dispatch(self, req: Request) -> Response:
        allowed = False
        for method, regex, handler in self.routes:
            m = regex.match(req.path)
            if not m:
                continue
            allowed = True
            if method != req.method:
                continue
            req = attrs.evolve(req, params={k: unquote(v) for k, v in m.groupdict().items()})
            try:
                result = await handler(req)
            except Exception as exc:
                err = translate(exc, f"{req.method} {req.path}")
                return Response(err.status, err.to_json())
            return result if isinstance(result, Response) else Response(200, result)
        if allowed:
            return Response(405, {"error": "method-not-allowed", "message": f"{req.method} not allowed on {req.path}"})
        return Response(404, {"error": "not-found", "message": f"no endpoint {req.path}"})


def peer_caller(sock: socket.socket) -> Caller:
    """Who is at the other end, as the kernel says (``SO_PEERCRED``); blocking (it reads the
    peer's supplementary groups from /proc). Without credentials the caller has no uid, and
    every policy refuses it."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return Caller(transport="unix")
    pid, uid, gid = struct.unpack("3i", raw)
    return Caller.from_peer(pid, uid, gid)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def _send_json(conn: h11.Connection, stream: trio.SocketStream, resp: Response) -> None:
    body = json.dumps(resp.body, default=str).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    await stream.send_all(conn.send(h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status))))
    await stream.send_all(conn.send(h11.Data(data=body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def _send_stream(conn: h11.Connection, stream: trio.SocketStream, resp: Response) -> None:
    headers = [("content-type", "application/x-ndjson"), ("transfer-encoding", "chunked")]
    await stream.send_all(conn.send(h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status))))
    async for chunk in resp.stream:
        await stream.send_all(conn.send(h11.Data(data=chunk)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request, bytes] | None:
    request, body = None, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise MariposaError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)


Admits = Callable[[Caller], bool]


async def serve_connection(router: Router, stream: trio.SocketStream, admits: Admits) -> None:
    """A caller the policy would refuse everything is turned away before it says a word."""
    caller = await trio.to_thread.run_sync(peer_caller, stream.socket)
    if not admits(caller):
        log.warning("control socket: caller refused", uid=caller.uid, gid=caller.gid)
        await stream.aclose()
        return
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            try:
                got = await _read_request(conn, stream)
            except MariposaError as exc:  # too large: answer, then hang up (the rest is unread)
                await _send_json(conn, stream, Response(exc.status, exc.to_json()))
                return
            if got is None:
                return
            request, body = got
            target = urlsplit(request.target.decode())
            query = {k: v[-1] for k, v in parse_qs(target.query).items()}
            req = Request(request.method.decode(), target.path, query, body, {}, caller)
            resp = await router.dispatch(req)
            if resp.stream is not None:
                await _send_stream(conn, stream, resp)
                return
            await _send_json(conn, stream, resp)
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError,
            ConnectionError):
        return
    except Exception as exc:  # a stream that failed mid-way: its headers are gone, so hang up
        translate(exc, "streaming a response")
        return
    finally:
        await stream.aclose()


def bind_unix_socket(path: str, mode: int = 0o660, group: int | None = None) -> trio.socket.SocketType:
    """Bind the control socket. The caller holds the state-dir lock, so a stale socket file left
    by a killed daemon can be replaced without stealing a live daemon's socket."""
    if os.path.exists(path):
        os.unlink(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock._sock.bind(path)
    finally:
        os.umask(old)
    if group is not None:
        os.chown(path, -1, group)
    os.chmod(path, mode)
    sock.listen(256)
    return sock


async def serve(router: Router, sock, admits: Admits, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    listener = trio.SocketListener(sock)
    await trio.serve_listeners(
        lambda stream: serve_connection(router, stream, admits), [listener], task_status=task_status
    )
