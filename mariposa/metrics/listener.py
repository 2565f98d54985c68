"""``metrics_listen = "HOST:PORT"``: a TCP listener serving ``GET /metrics`` and nothing else, for
a Prometheus, which cannot scrape the control socket (a unix socket). The control socket's HTTP
code (api/http.py ``Connection``) with a one-route table; its callers may read the metrics and do
nothing else (control/authorize.py ``SCRAPER``). It is bound before anything starts, so a port
already taken refuses the start, as ``triggers_listen`` does.
"""

from __future__ import annotations

import trio

from mariposa.api.http import BodyBudget, Connection, Limits, serve_capped
from mariposa.api.router import Request, Response, Router
from mariposa.control import Control
from mariposa.control.authorize import SCRAPER
from mariposa.control.caller import Caller
from mariposa.metrics.exposition import CONTENT_TYPE
from mariposa.triggers.listener import bind as bind_tcp

# A scrape has no body; a few scrapers at once.
LIMITS = Limits(max_body=4096, max_bodies=64 * 1024, small_body=4096, request_timeout=10.0, idle_timeout=60.0,
                max_connections=64)


async def bind(text: str) -> tuple[trio.SocketListener, str]:
    return await bind_tcp(text, "metrics_listen")


def router(control: Control) -> Router:
    r = Router()

    async def scrape(req: Request) -> Response:
        return Response.text(await control.metrics.exposition(req.caller), CONTENT_TYPE)

    r.add("GET", "/metrics", scrape)
    return r


async def serve(control: Control, listener: trio.SocketListener, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    routes = router(control)

    async def connection(stream: trio.SocketStream, budget: BodyBudget) -> None:
        await Connection(routes, stream, Caller(transport=SCRAPER), LIMITS, budget).serve()

    await serve_capped(listener, LIMITS, connection, "metrics listener", task_status)
