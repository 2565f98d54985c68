"""The dashboard's pages: each one control-layer call (or a few), rendered.

Lists are paged on the server, ``PAGE`` rows at a time (``?page=N``): a project of 10,000
instances renders its first page as fast as one of ten.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from jinja2 import Environment

    from mariposa.ui.app import Dashboard

PAGE = 100


def page_of(request: Request, rows: list, size: int = PAGE) -> tuple[list, dict]:
    """One page of ``rows`` and what the pager shows."""
    try:
        number = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        number = 1
    pages = max(1, -(-len(rows) // size))
    number = min(number, pages)
    return rows[(number - 1) * size: number * size], {"number": number, "pages": pages, "total": len(rows)}


def ago(ts: float | None) -> str:
    if not ts:
        return "—"
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "—"


def add_filters(env: Environment) -> None:
    env.filters["ago"] = ago
    env.filters["when"] = when


def routes(board: Dashboard) -> list[Route]:
    async def overview(request: Request) -> Response:
        session, caller = await board.signed_in(request)
        projects = await board.control.projects.list(caller)
        projects.sort(key=lambda p: (p.get("org") or "", p["name"]))
        orgs: dict[str, list[dict[str, Any]]] = {}
        for p in projects:
            orgs.setdefault(p.get("org") or "default", []).append(p)
        return board.render(request, "overview.html", session, orgs=orgs)

    return [Route("/ui/", overview, methods=["GET"]), Route("/ui", overview, methods=["GET"])]
