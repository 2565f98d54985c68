"""The triggers' TCP listener (``triggers_listen = "HOST:PORT"``): the control socket's HTTP code
(api/http.py ``Connection``: h11, bounded bodies, times and connections) with one route, the
trigger app's, and the client's address for its failure limit. The control API is never served
here: it stays on the unix socket, where the kernel says who the caller is.

A request that breaks a limit or HTTP itself is answered (when it can be) and its connection
closed; nothing a client sends ends the listener. Cancelling the daemon's nursery stops it.
"""

from __future__ import annotations

import structlog
import trio

from mariposa.api.http import BodyBudget, Connection, Limits, serve_capped
from mariposa.api.router import Request, Response, Router
from mariposa.control.caller import Caller
from mariposa.errors import MariposaError
from mariposa.triggers.app import TriggerApp

log = structlog.get_logger()

# A trigger's POST has no body worth reading: small limits, and fewer connections than the
# control socket's (the public side of the daemon).
LIMITS = Limits(max_body=16 * 1024, max_bodies=1024 * 1024, small_body=16 * 1024, request_timeout=10.0,
                idle_timeout=30.0, max_connections=256)


class ListenError(MariposaError):
    kind = "invalid-config"


def parse_listen(text: str, key: str = "triggers_listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8787`` for IPv6) as (host, port); ``ValueError`` (naming ``key``) otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{key} must be HOST:PORT (e.g. \"127.0.0.1:8787\"), not {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


async def bind(text: str, key: str = "triggers_listen") -> tuple[trio.SocketListener, str]:
    """The listening socket for ``triggers_listen`` (or another ``key``'s) and the base of its URLs
    (``http://HOST:PORT``, with the port the kernel gave when 0 was asked)."""
    host, port = parse_listen(text, key)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ListenError(f"{key} {text}: cannot listen there: {exc.strerror or exc}") from None
    for extra in listeners[1:]:
        await extra.aclose()
    listener = listeners[0]
    bound = listener.socket.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return listener, f"http://{shown}:{bound[1]}"


class _PeerRoutes(Router):
    """The one route, for one connection: the app sees the client's address."""

    def __init__(self, app: TriggerApp, peer: str) -> None:
        super().__init__()
        self.app, self.peer = app, peer

    async def dispatch(self, req: Request) -> Response:
        return await self.app.handle(req.method, req.path, self.peer)


async def _connection(app: TriggerApp, stream: trio.SocketStream, budget: BodyBudget) -> None:
    peer = stream.socket.getpeername()[0]
    await Connection(_PeerRoutes(app, peer), stream, Caller(transport="trigger-http"), LIMITS, budget).serve()


async def serve(app: TriggerApp, listener: trio.SocketListener, *,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Accept connections until cancelled; over the connection cap a newcomer is hung up on."""
    async def connection(stream: trio.SocketStream, budget: BodyBudget) -> None:
        await _connection(app, stream, budget)

    await serve_capped(listener, LIMITS, connection, "trigger listener", task_status)
