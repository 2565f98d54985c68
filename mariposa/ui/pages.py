"""The dashboard's pages: each one control-layer call (or a few), rendered.

Lists are paged on the server, ``PAGE`` rows at a time (``?page=N``): a project of 10,000
instances renders its first page as fast as one of ten. A page asks the control layer a bounded
number of times, never once per instance: the overview's health and open tasks are one listing
each, counted here; the project page shows counts only; the service page renders its one page of
instances. Each live part of a page has a fragment route (``/ui/fragments/...``) that renders it
alone, which htmx fetches again on the stream's ``change`` (ui/stream.py).
"""

from __future__ import annotations

import difflib
import functools
import html
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

import trio
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mariposa.errors import Forbidden
from mariposa.store.rows import ProjectRow, row_to
from mariposa.ui.allowed import allowed

if TYPE_CHECKING:
    from jinja2 import Environment

    from mariposa.control.caller import Caller
    from mariposa.ui.app import Dashboard

PAGE = 100
HIGHLIGHT_ON_LOOP = 32 * 1024  # bytes of manifest highlighted on the event loop; more go to a thread
EVENTS_SHOWN = 500  # the newest events a feed pages through (events.list's own limit)
TASKS_SHOWN = 500
SPARK_WINDOW = "15m"  # the metrics history a sparkline draws
# A service of more instances shows no sparklines and no health per check on its page: those
# come in one control call for all of its instances (metrics history, health), not per page
DETAIL_LIMIT = 1000
SPARK_W, SPARK_H = 80, 18
T = TypeVar("T")


def pager_of(request: Request, total: int, size: int = PAGE, param: str = "page") -> dict:
    """What the pager shows for ``total`` rows, at the page ``?{param}=N`` asks for (kept in range)."""
    try:
        number = max(1, int(request.query_params.get(param, "1")))
    except ValueError:
        number = 1
    pages = max(1, -(-total // size))
    number = min(number, pages)
    return {"number": number, "pages": pages, "total": total, "param": param, "offset": (number - 1) * size,
            "size": size}


def page_of(request: Request, rows: list, size: int = PAGE, param: str = "page") -> tuple[list, dict]:
    """One page of ``rows`` and what the pager shows."""
    pager = pager_of(request, len(rows), size, param)
    return rows[pager["offset"]: pager["offset"] + size], pager


def ago(ts: float | None) -> str:
    if not ts:
        return "—"
    seconds = max(0, int(time.time() - ts))
    return duration(seconds)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "—"


def href(path: str, **params: Any) -> str:
    """``path`` (its parts quoted) with the query ``params`` that have a value (``org`` passes through)."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return quote(path, safe="/") + (f"?{query}" if query else "")


def pager_href(pager: dict, number: int, base: str, **params: Any) -> str:
    return href(base, **{**params, pager.get("param", "page"): number})


def add_filters(env: Environment) -> None:
    env.filters["ago"] = ago
    env.filters["when"] = when
    env.filters["duration"] = duration
    env.globals["href"] = href
    env.globals["pager_href"] = pager_href


# --- what pages compute -------------------------------------------------------------------------

NO_HEALTH = {"healthy": 0, "unhealthy": 0, "unknown": 0}


def health_counts(rows: list[dict], key: str) -> dict[str, dict[str, int]]:
    """``project.health``'s rows (per service) summed by ``row[key]``: healthy / unhealthy /
    unknown (no verdict yet, or no checks) running instances."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        counts = out.setdefault(r[key], dict(NO_HEALTH))
        for k in NO_HEALTH:
            counts[k] += r[k]
    return out


def side_by_side(a: str, b: str) -> list[dict]:
    """Two texts' lines, paired as a side-by-side diff shows them: rows of (left number, left
    text, right number, right text, kind), kind one of equal, replace, delete, insert."""
    left, right = a.splitlines(), b.splitlines()
    rows: list[dict] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, left, right, autojunk=False).get_opcodes():
        span = max(i2 - i1, j2 - j1)
        for k in range(span):
            li, rj = i1 + k, j1 + k
            rows.append({"kind": tag,
                         "ln": li + 1 if li < i2 else None, "left": left[li] if li < i2 else None,
                         "rn": rj + 1 if rj < j2 else None, "right": right[rj] if rj < j2 else None})
    return rows


def highlight(text: str) -> Markup:
    """The manifest as pygments' YAML spans (classes only: static/pygments.css colours them)."""
    from pygments import highlight as pyg  # type: ignore[import-untyped]
    from pygments.formatters.html import HtmlFormatter  # type: ignore[import-untyped]
    from pygments.lexers.data import YamlLexer  # type: ignore[import-untyped]

    return Markup(pyg(text, YamlLexer(), HtmlFormatter(nowrap=True)))


def sparkline(values: list[float], cls: str, label: str) -> Markup:
    """A small inline SVG of ``values`` (oldest first), drawn on the server; no style attributes."""
    if len(values) < 2:
        return Markup("")
    top = max(values) or 1.0
    step = SPARK_W / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{SPARK_H - 1 - (v / top) * (SPARK_H - 2):.1f}" for i, v in enumerate(values))
    return Markup(f'<svg class="spark {cls}" width="{SPARK_W}" height="{SPARK_H}" viewBox="0 0 {SPARK_W} {SPARK_H}" '
                  f'role="img" aria-label="{html.escape(label)}"><polyline fill="none" points="{points}"/></svg>')


async def optional(call: Awaitable[T]) -> T | None:
    """A section the user's role may not read (meta, secrets, logs): None instead of a 403 page."""
    try:
        return await call
    except Forbidden:
        return None


def project_row(project: dict) -> ProjectRow:
    return row_to(ProjectRow, project)


# --- routes -------------------------------------------------------------------------------------

def routes(board: Dashboard) -> list[Route]:
    control = board.control

    def handler(fn: Callable[[Request, Any, Caller], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def run(request: Request) -> Response:
            session, caller = await board.signed_in(request)
            return await fn(request, session, caller)
        return run

    def org_of(request: Request) -> str | None:
        return request.query_params.get("org") or None

    # overview

    async def overview_data(caller: Caller) -> dict:
        """Everything the overview shows, in four control calls whatever the number of instances
        (plus one for each project none of the newest events is of)."""
        projects = await control.projects.list(caller)
        projects.sort(key=lambda p: (p.get("org") or "", p["name"]))
        health = health_counts(await control.projects.health(caller), "project_id")
        tasks: dict[str, int] = {}
        for t in await control.queue.list(caller, None, ("queued", "active"), 10_000):
            tasks[t["project_id"]] = tasks.get(t["project_id"], 0) + 1
        last: dict[str, dict] = {}
        for e in await control.events.list(caller):
            if e.get("project_id"):
                last[e["project_id"]] = e  # oldest first: the last one written wins
        for p in projects:
            if p["id"] not in last:
                mine = await control.events.list(caller, p["id"])
                if mine:
                    last[p["id"]] = mine[-1]
        orgs: dict[str, list[dict[str, Any]]] = {}
        for p in projects:
            p["health"] = health.get(p["id"], NO_HEALTH)
            p["open_tasks"] = tasks.get(p["id"], 0)
            p["last_event"] = last.get(p["id"])
            orgs.setdefault(p.get("org") or "default", []).append(p)
        return {"orgs": orgs}

    @handler
    async def overview(request: Request, session: Any, caller: Caller) -> Response:
        return board.render(request, "overview.html", session, **await overview_data(caller))

    @handler
    async def overview_fragment(request: Request, session: Any, caller: Caller) -> Response:
        return board.render(request, "_overview.html", session, **await overview_data(caller))

    # project

    async def project_services(caller: Caller, name: str, org: str | None) -> dict:
        project = await control.projects.get(caller, name)
        health = health_counts(await control.projects.health(caller, name), "service")
        for s in project["services"]:
            s["health"] = health.get(s["name"], NO_HEALTH)
        can = allowed(control, caller, project_row(project))
        return {"project": project, "services": project["services"], "can": can, "org": org}

    @handler
    async def project_page(request: Request, session: Any, caller: Caller) -> Response:
        name = request.path_params["project"]
        data = await project_services(caller, name, org_of(request))
        versions = await control.projects.versions(caller, name)
        versions.sort(key=lambda v: v["seq"], reverse=True)
        meta = await optional(control.meta.list(caller, name))
        secrets = await optional(control.secrets.list(caller, name))
        text = data["project"]["version"]["manifest"]
        # a big manifest is highlighted off the event loop (pygments: ~1 s a megabyte)
        manifest = highlight(text) if len(text) < HIGHLIGHT_ON_LOOP else await trio.to_thread.run_sync(highlight, text)
        return board.render(request, "project.html", session, **data, versions=versions, meta=meta,
                            secrets=None if secrets is None else [s["name"] for s in secrets], manifest=manifest)

    @handler
    async def services_fragment(request: Request, session: Any, caller: Caller) -> Response:
        data = await project_services(caller, request.path_params["project"], org_of(request))
        return board.render(request, "_services.html", session, **data)

    @handler
    async def diff_page(request: Request, session: Any, caller: Caller) -> Response:
        name = request.path_params["project"]
        project = await control.projects.get(caller, name)
        current = str(project["version"]["seq"])
        a = request.query_params.get("a") or current
        b = request.query_params.get("b") or current
        va = await control.projects.version(caller, name, a)
        vb = await control.projects.version(caller, name, b)
        versions = await control.projects.versions(caller, name)
        versions.sort(key=lambda v: v["seq"], reverse=True)
        # a worker thread: difflib is quadratic in the worst case, and manifests may be megabytes
        rows = await trio.to_thread.run_sync(side_by_side, va["manifest"], vb["manifest"])
        return board.render(request, "diff.html", session, project=project, a=va, b=vb, versions=versions,
                            rows=rows, org=org_of(request),
                            can=allowed(control, caller, project_row(project)))

    # service

    async def instances_data(request: Request, caller: Caller, name: str, svc: dict) -> dict:
        """One page of the service's instances: only its records are built (services.instances'
        offset and limit), whatever the service's size."""
        service = svc["name"]
        pager = pager_of(request, svc["instances"])
        shown = await control.services.instances(caller, name, service, pager["offset"], pager["size"])
        detail = bool(shown) and svc["instances"] <= DETAIL_LIMIT
        checks = {h["instance"]: h for h in await control.services.health(caller, name, service)} if detail else {}
        seqs = {v["id"]: v["seq"] for v in await control.projects.versions(caller, name)}
        spark: dict[str, dict] = {}
        if detail:
            stats = await control.metrics.service_stats(caller, name, service, SPARK_WINDOW)
            wanted = {i["id"] for i in shown}
            for s in stats["instances"]:
                if s["id"] in wanted:
                    samples = s["samples"]
                    spark[s["id"]] = {
                        "cpu": sparkline([x["cpu"] for x in samples], "cpu", f"CPU over {SPARK_WINDOW}"),
                        "memory": sparkline([x["memory"] for x in samples], "memory", f"memory over {SPARK_WINDOW}"),
                        "cpu_now": samples[-1]["cpu"] if samples else None,
                        "memory_now": samples[-1]["memory"] if samples else None}
        now = control.ctx.clock.now()
        for i in shown:
            i["checks"] = (checks.get(i["id"]) or {}).get("checks", [])
            i["version_seq"] = seqs.get(i["version_id"])
            started = i.get("started_at") or i.get("created")
            i["age"] = now - started if started and i["state"] == "running" else None
            i["spark"] = spark.get(i["id"])
        return {"instances": shown, "pager": pager, "detail": svc["instances"] <= DETAIL_LIMIT}

    @handler
    async def service_page(request: Request, session: Any, caller: Caller) -> Response:
        name, service = request.path_params["project"], request.path_params["service"]
        project = await control.projects.get(caller, name)
        svc = await control.services.get(caller, name, service)
        data = await instances_data(request, caller, name, svc)
        runs = None
        if svc.get("service_type") in ("scheduled", "event"):
            runs = await control.runs.list(caller, name, service, None, 100)
        return board.render(request, "service.html", session, project=project, service=svc, runs=runs,
                            can=allowed(control, caller, project_row(project)), org=org_of(request), **data)

    @handler
    async def instances_fragment(request: Request, session: Any, caller: Caller) -> Response:
        name, service = request.path_params["project"], request.path_params["service"]
        svc = await control.services.get(caller, name, service)
        data = await instances_data(request, caller, name, svc)
        return board.render(request, "_instances.html", session, project={"name": name}, service=svc,
                            org=org_of(request), **data)

    # feed

    async def feed_tasks(request: Request, caller: Caller) -> dict:
        project = request.query_params.get("project") or None
        service = request.query_params.get("service") or None
        kind = request.query_params.get("type") or None
        projects = {p["id"]: p for p in await control.projects.list(caller)}
        tasks = await control.queue.list(caller, project, None, TASKS_SHOWN)
        tasks = [t for t in tasks if (service is None or t["service"] == service)
                 and (kind is None or t["kind"] == kind or t["kind"].startswith(kind + "."))]
        shown, pager = page_of(request, tasks, param="tasks_page")
        cans = {pid: allowed(control, caller, project_row(p)) for pid, p in projects.items()
                if any(t["project_id"] == pid for t in shown)}
        return {"tasks": shown, "tasks_pager": pager, "cans": cans,
                "names": {pid: p["name"] for pid, p in projects.items()},
                "filters": {"project": project, "service": service, "type": kind, "org": org_of(request)}}

    @handler
    async def feed_page(request: Request, session: Any, caller: Caller) -> Response:
        data = await feed_tasks(request, caller)
        f = data["filters"]
        events = await control.events.list(caller, f["project"], f["service"], (f["type"],) if f["type"] else ())
        events.reverse()  # newest first
        shown, pager = page_of(request, events)
        return board.render(request, "feed.html", session, events=shown, events_pager=pager, **data)

    @handler
    async def tasks_fragment(request: Request, session: Any, caller: Caller) -> Response:
        return board.render(request, "_tasks.html", session, **await feed_tasks(request, caller))

    return [
        Route("/ui/", overview, methods=["GET"]),
        Route("/ui", overview, methods=["GET"]),
        Route("/ui/fragments/overview", overview_fragment, methods=["GET"]),
        Route("/ui/p/{project}", project_page, methods=["GET"]),
        Route("/ui/p/{project}/diff", diff_page, methods=["GET"]),
        Route("/ui/fragments/p/{project}/services", services_fragment, methods=["GET"]),
        Route("/ui/p/{project}/s/{service}", service_page, methods=["GET"]),
        Route("/ui/fragments/p/{project}/s/{service}/instances", instances_fragment, methods=["GET"]),
        Route("/ui/feed", feed_page, methods=["GET"]),
        Route("/ui/fragments/feed/tasks", tasks_fragment, methods=["GET"]),
    ]
