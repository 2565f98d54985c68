"""The control socket's endpoints (after ``rfd36/implementation/rfd79`` and ``rfd80``): a table
of (method, path) → one control-layer call, with the conversion of path, query and JSON body
into plain arguments and nothing else. Every rule lives in ``mariposa.control``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mariposa.api.http import Request, Response, Router
from mariposa.control import Control
from mariposa.errors import BadRequest

PROJECT_ACTIONS = "start, stop, revert or diff"
SERVICE_ACTIONS = "scale, start, stop, thaw, reprovision or revert"


def _text(req: Request, key: str, default: str | None = None) -> Any:
    return req.json().get(key) or default


def _rollout(req: Request) -> dict:
    """``rolling`` and ``count`` (``canary`` is the spec's other name for it)."""
    body = req.json()
    return {"rolling": body.get("rolling"), "count": body.get("count", body.get("canary"))}


def _int(req: Request, key: str, default: int) -> int:
    value = req.query.get(key)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        raise BadRequest(f"'{key}' must be a whole number, not '{value}'") from None


def _list(req: Request, key: str) -> tuple[str, ...]:
    return tuple(v for v in (req.query.get(key) or "").split(",") if v)


async def _ndjson(items: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    async for item in items:
        yield (json.dumps(item, default=str) + "\n").encode()


def _unknown(kind: str, choices: str) -> Callable[[Request], Awaitable[Any]]:
    async def refuse(req: Request) -> Any:
        raise BadRequest(f"unknown {kind} action '{req.params['action']}' ({choices})")

    return refuse


def build_router(control: Control) -> Router:
    r = Router()
    projects, services, instances, queue, events = (
        control.projects, control.services, control.instances, control.queue, control.events)
    P = "/v1/projects/{project}"
    S = P + "/services/{service}"

    def events_args(req: Request) -> dict:
        return {"project": req.query.get("project"), "service": req.query.get("service"),
                "types": _list(req, "type"), "since": _int(req, "since", 0)}

    async def list_or_follow_events(req: Request) -> Any:
        if req.query.get("follow") in ("1", "true"):
            return Response(200, stream=_ndjson(await events.follow(req.caller, **events_args(req))))
        return await events.list(req.caller, **events_args(req))

    async def list_or_follow_tasks(req: Request) -> Any:
        if req.query.get("follow") in ("1", "true"):
            return Response(200, stream=_ndjson(await queue.follow(req.caller, _list(req, "ids"))))
        return await queue.list(req.caller, req.query.get("project"), _list(req, "state") or None,
                                _int(req, "limit", 200))

    table: list[tuple[str, str, Callable[[Request], Awaitable[Any]]]] = [
        ("GET", "/v1/ping", lambda q: control.system.ping(q.caller)),
        # projects
        ("GET", "/v1/projects", lambda q: projects.list(q.caller)),
        ("POST", "/v1/projects", lambda q: projects.add(
            q.caller, str(_text(q, "name", "")), _text(q, "manifest"), _text(q, "filename", "<manifest>"),
            env_files=q.json().get("env_files"))),
        ("GET", P, lambda q: projects.get(q.caller, q.params["project"])),
        ("PUT", P, lambda q: projects.update(
            q.caller, q.params["project"], _text(q, "manifest"), _text(q, "filename", "<manifest>"), **_rollout(q),
            if_version=q.json().get("if_version"), env_files=q.json().get("env_files"))),
        ("DELETE", P, lambda q: projects.delete(q.caller, q.params["project"])),
        ("GET", P + "/versions", lambda q: projects.versions(q.caller, q.params["project"])),
        ("GET", P + "/versions/{version}",
         lambda q: projects.version(q.caller, q.params["project"], q.params["version"])),
        ("GET", "/v1/versions/{version}", lambda q: projects.version(q.caller, None, q.params["version"])),
        ("GET", P + "/instances", lambda q: projects.instances(q.caller, q.params["project"])),
        ("POST", P + "/start", lambda q: projects.start(q.caller, q.params["project"])),
        ("POST", P + "/stop", lambda q: projects.stop(q.caller, q.params["project"])),
        ("POST", P + "/revert", lambda q: projects.revert(
            q.caller, q.params["project"], _text(q, "version"), **_rollout(q))),
        ("POST", P + "/diff", lambda q: projects.diff(
            q.caller, q.params["project"], _text(q, "manifest"), _text(q, "filename", "<manifest>"), **_rollout(q),
            env_files=q.json().get("env_files"))),
        ("POST", P + "/{action}", _unknown("project", PROJECT_ACTIONS)),
        # services
        ("GET", P + "/services", lambda q: services.list(q.caller, q.params["project"])),
        ("GET", S, lambda q: services.get(q.caller, q.params["project"], q.params["service"])),
        ("GET", S + "/instances", lambda q: services.instances(q.caller, q.params["project"], q.params["service"])),
        ("GET", S + "/versions", lambda q: services.versions(q.caller, q.params["project"], q.params["service"])),
        ("GET", S + "/versions/{version}", lambda q: services.version(
            q.caller, q.params["project"], q.params["service"], q.params["version"])),
        ("GET", S + "/health", lambda q: services.health(q.caller, q.params["project"], q.params["service"])),
        ("POST", S + "/scale", lambda q: services.scale(
            q.caller, q.params["project"], q.params["service"], q.json().get("scale"))),
        ("POST", S + "/start", lambda q: services.start(q.caller, q.params["project"], q.params["service"])),
        ("POST", S + "/stop", lambda q: services.stop(q.caller, q.params["project"], q.params["service"])),
        ("POST", S + "/thaw", lambda q: services.thaw(q.caller, q.params["project"], q.params["service"])),
        ("POST", S + "/reprovision", lambda q: services.reprovision(
            q.caller, q.params["project"], q.params["service"], version=_text(q, "version"),
            image=_text(q, "image"), instance=_text(q, "instance"), **_rollout(q))),
        ("POST", S + "/revert", lambda q: services.revert(
            q.caller, q.params["project"], q.params["service"], _text(q, "version"), **_rollout(q))),
        ("POST", S + "/{action}", _unknown("service", SERVICE_ACTIONS)),
        # instances
        ("GET", "/v1/instances/{instance}", lambda q: instances.get(q.caller, q.params["instance"])),
        ("DELETE", "/v1/instances/{instance}", lambda q: instances.remove(q.caller, q.params["instance"])),
        # queue and events
        ("GET", "/v1/queue", list_or_follow_tasks),
        ("GET", "/v1/queue/{task}", lambda q: queue.get(q.caller, q.params["task"])),
        ("DELETE", "/v1/queue/{task}", lambda q: queue.stop(q.caller, q.params["task"], q.query.get("project"))),
        ("GET", "/v1/events", list_or_follow_events),
    ]
    for method, path, handler in table:
        r.add(method, path, handler)
    return r
