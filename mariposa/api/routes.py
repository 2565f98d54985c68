"""The control socket's endpoints (after ``rfd36/implementation/rfd79`` and ``rfd80``): a table
of (method, path) → one control-layer call, with the conversion of path, query and JSON body
into plain arguments and nothing else. Every rule lives in ``mariposa.control``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mariposa.api.http import Request, Response, Router
from mariposa.api.router import Write
from mariposa.control import Control
from mariposa.control.base import Feed
from mariposa.errors import BadRequest, MariposaError
from mariposa.metrics.exposition import CONTENT_TYPE

PROJECT_ACTIONS = "start, stop, revert, diff or copy"
SERVICE_ACTIONS = "scale, start, stop, thaw, reprovision, revert or runs"
_ENCODER = json.JSONEncoder(default=str)  # one encoder: json.dumps(default=...) builds one per call


JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}


def _text(req: Request, key: str, default: str | None = None) -> Any:
    """A string field of the body (absent, null or "" is the default). Any other type is refused
    here: str() of it would pass for text, and '{"name": 1.5}' once made a project named '1.5'."""
    value = req.json().get(key)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string, not {JSON_TYPES.get(type(value), type(value).__name__)}")
    return value


def _version(req: Request) -> str | None:
    """A version id or prefix, or its number (a JSON integer is taken as the number, as if_version is)."""
    value = req.json().get("version")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(req, "version")


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


def _flag(req: Request, key: str) -> bool:
    return req.query.get(key) in ("1", "true", "yes")


def _feed_response(feed: Feed) -> Response:
    """A feed as newline-delimited JSON, one line per item, each batch in one chunk. An error
    after the headers are gone is the stream's last line, ``{"error": ..., "message": ...}``."""

    async def produce(write: Write) -> None:
        async def send(batch: list) -> None:
            await write("".join(_ENCODER.encode(item) + "\n" for item in batch).encode())

        try:
            await feed.run(send)
        except MariposaError as exc:
            await write((json.dumps(exc.to_json()) + "\n").encode())

    return Response(200, produce=produce)


def _with_progress(req: Request, call: Callable[..., Awaitable[Any]]) -> Awaitable[Any]:
    """A change that may pull images. Asked with ``?progress=1`` it answers as a stream: a line
    ``{"pull": {...}}`` per step of progress, then ``{"result": ...}`` (or the error line), so a
    waiting CLI shows the pull as it happens and the connection never sits silent through a long
    one. Without it, the plain JSON answer once all is done. The body's types are checked by the
    caller before this, so a wrong type is still a 400 either way."""
    if not _flag(req, "progress"):
        return call()

    async def produce(write: Write) -> None:
        async def report(item: dict) -> None:
            await write((_ENCODER.encode(item) + "\n").encode())

        try:
            result = await call(report=report)
        except MariposaError as exc:
            await write((json.dumps(exc.to_json()) + "\n").encode())
            return
        await write((_ENCODER.encode({"result": result}) + "\n").encode())

    async def respond() -> Response:
        return Response(200, produce=produce)

    return respond()


def _unknown(kind: str, choices: str) -> Callable[[Request], Awaitable[Any]]:
    async def refuse(req: Request) -> Any:
        raise BadRequest(f"unknown {kind} action '{req.params['action']}' ({choices})")

    return refuse


def build_router(control: Control) -> Router:
    r = Router()
    projects, services, instances, queue, events, volumes, registry, secrets, meta = (
        control.projects, control.services, control.instances, control.queue, control.events, control.volumes,
        control.registry, control.secrets, control.meta)
    access = control.access
    P = "/v1/projects/{project}"
    S = P + "/services/{service}"

    def events_args(req: Request) -> dict:
        return {"project": req.query.get("project"), "service": req.query.get("service"),
                "types": _list(req, "type"), "since": _int(req, "since", 0)}

    def logs_args(req: Request) -> dict:
        return {"follow": _flag(req, "follow"), "since": req.query.get("since"), "tail": req.query.get("tail")}

    async def service_logs(req: Request) -> Response:
        return _feed_response(await services.logs(
            req.caller, req.params["project"], req.params["service"], instance=req.query.get("instance"),
            **logs_args(req)))

    async def run_logs(req: Request) -> Response:
        return _feed_response(await control.runs.logs(req.caller, req.params["run"], follow=_flag(req, "follow")))

    async def instance_logs(req: Request) -> Response:
        return _feed_response(await instances.logs(req.caller, req.params["instance"], **logs_args(req)))

    async def list_or_follow_events(req: Request) -> Any:
        if req.query.get("follow") in ("1", "true"):
            return Response(200, stream=_ndjson(await events.follow(req.caller, **events_args(req))))
        return await events.list(req.caller, **events_args(req))

    async def list_or_follow_tasks(req: Request) -> Any:
        if req.query.get("follow") in ("1", "true"):
            return Response(200, stream=_ndjson(await queue.follow(req.caller, _list(req, "ids"))))
        return await queue.list(req.caller, req.query.get("project"), _list(req, "state") or None,
                                _int(req, "limit", 200))

    def add_project(q: Request) -> Awaitable[Any]:
        args = (q.caller, _text(q, "name", ""), _text(q, "manifest"), _text(q, "filename", "<manifest>"))
        body = q.json()
        return _with_progress(q, lambda **more: projects.add(
            *args, env_files=body.get("env_files"), base_dir=body.get("base_dir"), meta=body.get("meta"), **more))

    def update_project(q: Request) -> Awaitable[Any]:
        args = (q.caller, q.params["project"], _text(q, "manifest"), _text(q, "filename", "<manifest>"))
        body, rollout = q.json(), _rollout(q)
        return _with_progress(q, lambda **more: projects.update(
            *args, rolling=rollout["rolling"], count=rollout["count"], if_version=body.get("if_version"),
            env_files=body.get("env_files"), base_dir=body.get("base_dir"), **more))

    def add_service(q: Request) -> Awaitable[Any]:
        args = (q.caller, q.params["project"], _text(q, "name", ""), _text(q, "manifest"),
                _text(q, "filename", "<section>"))
        return _with_progress(q, lambda **more: services.add(*args, **more))

    def update_service(q: Request) -> Awaitable[Any]:
        args = (q.caller, q.params["project"], q.params["service"], _text(q, "manifest"),
                _text(q, "filename", "<section>"))
        rollout = _rollout(q)
        return _with_progress(q, lambda **more: services.update(
            *args, rolling=rollout["rolling"], count=rollout["count"], **more))

    async def scrape(req: Request) -> Response:
        return Response.text(await control.metrics.exposition(req.caller), CONTENT_TYPE)

    table: list[tuple[str, str, Callable[[Request], Awaitable[Any]]]] = [
        ("GET", "/v1/ping", lambda q: control.system.ping(q.caller)),
        # metrics (mariposa/metrics/): Prometheus' text format, top's rows, a service's window
        ("GET", "/metrics", scrape),
        ("GET", "/v1/top", lambda q: control.metrics.top(q.caller, q.query.get("project") or None,
                                                         q.query.get("service") or None)),
        # projects
        ("GET", "/v1/projects", lambda q: projects.list(q.caller)),
        ("POST", "/v1/projects", add_project),
        ("GET", P, lambda q: projects.get(q.caller, q.params["project"])),
        ("PUT", P, update_project),
        ("DELETE", P, lambda q: projects.delete(q.caller, q.params["project"],
                                                purge_volumes=q.query.get("purge_volumes") in ("1", "true"))),
        ("GET", P + "/volumes", lambda q: volumes.list(q.caller, q.params["project"])),
        ("GET", P + "/networks", lambda q: projects.networks(q.caller, q.params["project"])),
        ("DELETE", P + "/volumes/{volume}", lambda q: volumes.remove(q.caller, q.params["project"],
                                                                     q.params["volume"])),
        ("GET", P + "/versions", lambda q: projects.versions(q.caller, q.params["project"])),
        ("GET", P + "/versions/{version}",
         lambda q: projects.version(q.caller, q.params["project"], q.params["version"])),
        ("GET", "/v1/versions/{version}", lambda q: projects.version(q.caller, None, q.params["version"])),
        ("GET", P + "/instances", lambda q: projects.instances(q.caller, q.params["project"])),
        ("POST", P + "/start", lambda q: projects.start(q.caller, q.params["project"])),
        ("POST", P + "/stop", lambda q: projects.stop(q.caller, q.params["project"])),
        ("POST", P + "/revert", lambda q: projects.revert(
            q.caller, q.params["project"], _version(q), **_rollout(q))),
        ("POST", P + "/diff", lambda q: projects.diff(
            q.caller, q.params["project"], _text(q, "manifest"), _text(q, "filename", "<manifest>"), **_rollout(q),
            env_files=q.json().get("env_files"), base_dir=q.json().get("base_dir"))),
        # secrets: the value comes in a body (from the CLI's stdin), and leaves only by reveal
        ("GET", P + "/secrets", lambda q: secrets.list(q.caller, q.params["project"])),
        ("PUT", P + "/secrets/{name}", lambda q: secrets.set(
            q.caller, q.params["project"], q.params["name"], _text(q, "value", ""))),
        ("DELETE", P + "/secrets/{name}", lambda q: secrets.remove(q.caller, q.params["project"], q.params["name"])),
        ("POST", P + "/secrets/{name}/reveal", lambda q: secrets.reveal(
            q.caller, q.params["project"], q.params["name"])),
        ("POST", "/v1/secrets/rotate-key", lambda q: secrets.rotate_key(q.caller)),
        # public triggers: the listing masks tokens; reveal shows those never shown, once
        ("GET", P + "/triggers", lambda q: control.triggers.list(q.caller, q.params["project"])),
        ("POST", P + "/triggers/reveal", lambda q: control.triggers.reveal(q.caller, q.params["project"])),
        ("POST", P + "/triggers/{name}/rotate", lambda q: control.triggers.rotate(
            q.caller, q.params["project"], q.params["name"])),
        # outgoing webhooks: the deliveries, and one queued again (same id)
        ("GET", P + "/webhooks/deliveries", lambda q: control.webhooks.deliveries(
            q.caller, q.params["project"], failed=_flag(q, "failed"), limit=_int(q, "limit", 100))),
        ("POST", P + "/webhooks/deliveries/{delivery}/redeliver", lambda q: control.webhooks.redeliver(
            q.caller, q.params["project"], q.params["delivery"])),
        # before the catch-all below, which "/services" would match too
        ("POST", P + "/services", add_service),
        ("POST", P + "/copy", lambda q: projects.copy(
            q.caller, q.params["project"], _text(q, "name", ""), with_meta=q.json().get("with_meta", False),
            with_secrets=q.json().get("with_secrets", False))),
        # exports (mariposa/export/): files for another engine and the conversion report
        ("POST", P + "/export", lambda q: control.exports.export(
            q.caller, q.params["project"], _text(q, "to", ""), strict=q.json().get("strict", False),
            with_secret_values=q.json().get("with_secret_values", False))),
        # project meta; POST .../meta imports a meta manifest
        ("GET", P + "/meta", lambda q: meta.list(q.caller, q.params["project"])),
        ("POST", P + "/meta", lambda q: meta.import_(
            q.caller, q.params["project"], _text(q, "manifest"), _text(q, "filename", "<meta>"),
            force=q.json().get("force", False))),
        ("GET", P + "/meta/{key}", lambda q: meta.get(q.caller, q.params["project"], q.params["key"])),
        ("PUT", P + "/meta/{key}", lambda q: meta.set(
            q.caller, q.params["project"], q.params["key"], q.json().get("value"), cas=q.json().get("cas"))),
        ("DELETE", P + "/meta/{key}", lambda q: meta.remove(
            q.caller, q.params["project"], q.params["key"], cas=q.query.get("cas"))),
        ("POST", P + "/meta/{key}/increment", lambda q: meta.increment(
            q.caller, q.params["project"], q.params["key"], q.json().get("by", 1))),
        ("POST", P + "/move", lambda q: projects.move(q.caller, q.params["project"], _text(q, "to_org"))),
        ("POST", P + "/{action}", _unknown("project", PROJECT_ACTIONS)),
        # services
        ("GET", P + "/services", lambda q: services.list(q.caller, q.params["project"])),
        ("GET", S, lambda q: services.get(q.caller, q.params["project"], q.params["service"])),
        ("PUT", S, update_service),
        ("DELETE", S, lambda q: services.delete(q.caller, q.params["project"], q.params["service"])),
        ("GET", S + "/instances", lambda q: services.instances(q.caller, q.params["project"], q.params["service"])),
        ("GET", S + "/versions", lambda q: services.versions(q.caller, q.params["project"], q.params["service"])),
        ("GET", S + "/versions/{version}", lambda q: services.version(
            q.caller, q.params["project"], q.params["service"], q.params["version"])),
        ("GET", S + "/health", lambda q: services.health(q.caller, q.params["project"], q.params["service"])),
        ("GET", S + "/logs", service_logs),
        ("GET", S + "/stats", lambda q: control.metrics.service_stats(
            q.caller, q.params["project"], q.params["service"], since=q.query.get("since"))),
        ("POST", S + "/scale", lambda q: services.scale(
            q.caller, q.params["project"], q.params["service"], q.json().get("scale"))),
        ("POST", S + "/start", lambda q: services.start(q.caller, q.params["project"], q.params["service"])),
        ("POST", S + "/stop", lambda q: services.stop(q.caller, q.params["project"], q.params["service"])),
        ("POST", S + "/thaw", lambda q: services.thaw(q.caller, q.params["project"], q.params["service"])),
        ("POST", S + "/reprovision", lambda q: services.reprovision(
            q.caller, q.params["project"], q.params["service"], version=_version(q),
            image=_text(q, "image"), instance=_text(q, "instance"), **_rollout(q))),
        ("POST", S + "/revert", lambda q: services.revert(
            q.caller, q.params["project"], q.params["service"], _version(q), **_rollout(q))),
        # runs of scheduled and event services
        ("POST", S + "/runs", lambda q: control.runs.start(
            q.caller, q.params["project"], q.params["service"], env=q.json().get("env"),
            idempotency_key=_text(q, "idempotency_key"))),
        ("GET", S + "/runs", lambda q: control.runs.list(
            q.caller, q.params["project"], q.params["service"], state=q.query.get("state"),
            limit=_int(q, "limit", 100))),
        ("GET", S + "/next", lambda q: control.runs.next(
            q.caller, q.params["project"], q.params["service"], count=_int(q, "count", 5))),
        ("POST", S + "/{action}", _unknown("service", SERVICE_ACTIONS)),
        # instances
        ("GET", "/v1/instances/{instance}", lambda q: instances.get(q.caller, q.params["instance"])),
        ("DELETE", "/v1/instances/{instance}", lambda q: instances.remove(q.caller, q.params["instance"])),
        ("GET", "/v1/instances/{instance}/logs", instance_logs),
        # runs
        ("GET", "/v1/runs/{run}", lambda q: control.runs.get(q.caller, q.params["run"])),
        ("GET", "/v1/runs/{run}/logs", run_logs),
        ("POST", "/v1/runs/{run}/stop", lambda q: control.runs.stop(q.caller, q.params["run"])),
        # queue and events
        ("GET", "/v1/queue", list_or_follow_tasks),
        ("GET", "/v1/queue/{task}", lambda q: queue.get(q.caller, q.params["task"])),
        ("DELETE", "/v1/queue/{task}", lambda q: queue.stop(q.caller, q.params["task"], q.query.get("project"))),
        ("GET", "/v1/events", list_or_follow_events),
        # registry logins (the password only ever comes in)
        ("GET", "/v1/registries", lambda q: registry.list(q.caller)),
        ("POST", "/v1/registries", lambda q: registry.login(
            q.caller, _text(q, "host", ""), _text(q, "username", ""), _text(q, "password", ""))),
        ("DELETE", "/v1/registries/{host}", lambda q: registry.logout(q.caller, q.params["host"])),
        # users, organisations, roles, bindings and the questions about them (control/access.py)
        ("GET", "/v1/whoami", lambda q: access.whoami(q.caller)),
        ("POST", "/v1/ui/signin", lambda q: control.dashboard.signin(q.caller)),
        ("GET", "/v1/users", lambda q: access.user_list(q.caller)),
        ("POST", "/v1/users", lambda q: access.user_add(q.caller, _text(q, "name", ""), q.json().get("uids"))),
        ("GET", "/v1/users/{user}", lambda q: access.user_get(q.caller, q.params["user"])),
        ("DELETE", "/v1/users/{user}", lambda q: access.user_remove(q.caller, q.params["user"])),
        ("GET", "/v1/orgs", lambda q: access.org_list(q.caller)),
        ("POST", "/v1/orgs", lambda q: access.org_add(q.caller, _text(q, "name", ""))),
        ("DELETE", "/v1/orgs/{name}", lambda q: access.org_remove(q.caller, q.params["name"])),
        ("GET", "/v1/roles", lambda q: access.role_list(q.caller)),
        ("POST", "/v1/roles", lambda q: access.role_define(q.caller, _text(q, "text"), _text(q, "filename", "<role>"))),
        ("GET", "/v1/roles/{role}", lambda q: access.role_get(q.caller, q.params["role"])),
        ("POST", "/v1/grants", lambda q: access.grant(
            q.caller, _text(q, "user", ""), _text(q, "role", ""), org=_text(q, "org"), project=_text(q, "project"))),
        ("POST", "/v1/denies", lambda q: access.deny(
            q.caller, _text(q, "user", ""), _text(q, "capability", ""), org=_text(q, "org"),
            project=_text(q, "project"))),
        ("POST", "/v1/revoke", lambda q: access.revoke(
            q.caller, _text(q, "user"), _text(q, "what"), org=_text(q, "org"), project=_text(q, "project"),
            binding=_text(q, "id"))),
        ("GET", "/v1/can-i", lambda q: access.can_i(
            q.caller, q.query.get("project") or None, q.query.get("action") or "", as_user=q.query.get("as") or None)),
        ("GET", "/v1/who-can", lambda q: access.who_can(
            q.caller, q.query.get("project") or None, q.query.get("action") or "")),
        ("GET", "/v1/audit", lambda q: access.audit(
            q.caller, user=q.query.get("user") or None, denied=_flag(q, "denied"), limit=_int(q, "limit", 200))),
        # API tokens of the remote listener (the token itself only ever goes out, once, from POST)
        ("GET", "/v1/tokens", lambda q: control.tokens.list(q.caller, q.query.get("user") or None)),
        ("POST", "/v1/tokens", lambda q: control.tokens.create(
            q.caller, _text(q, "user"), q.json().get("expires"), _text(q, "name"))),
        ("DELETE", "/v1/tokens/{token}", lambda q: control.tokens.revoke(q.caller, q.params["token"])),
    ]
    for method, path, handler in table:
        r.add(method, path, handler)
    return r
