"""The thin HTTP layer: the route table maps each (method, path) to one control method with the
right arguments, and every error leaves with its status. No control logic runs here."""

from __future__ import annotations

import json
import os
import socket

import h11
import pytest
import trio

from mariposa.api.http import Request, Response, serve_connection
from mariposa.api.routes import build_router
from mariposa.control import Caller
from mariposa.control.base import Feed
from mariposa.errors import Forbidden, InvalidManifest, NotFound, RuntimeUnavailable

ME = Caller(transport="unix", uid=0, gid=0, pid=1)


class Recorder:
    """Stands in for the control layer: each area method records its call and returns it."""

    def __init__(self, area: str, calls: list, fail: Exception | None = None):
        self.area, self.calls, self.fail = area, calls, fail

    def __getattr__(self, name: str):
        async def method(caller, *args, **kwargs):
            self.calls.append((f"{self.area}.{name}", caller, args, kwargs))
            if self.fail is not None:
                raise self.fail
            if name == "follow":
                async def events():
                    yield {"id": 1}
                return events()
            if name == "logs":
                async def run(send):
                    await send([{"name": "web-1", "line": "hello"}, {"name": "web-2", "line": "world"}])
                    if self.area == "instances":
                        raise RuntimeUnavailable("runtime unavailable: docker went away")
                return Feed(run)
            return {"called": f"{self.area}.{name}"}

        return method


class FakeControl:
    def __init__(self, fail: Exception | None = None):
        self.calls: list = []
        for area in ("system", "projects", "services", "instances", "queue", "events", "volumes", "registry",
                     "secrets", "meta", "runs", "triggers", "webhooks", "metrics", "tokens", "access", "dashboard",
                     "exports"):
            setattr(self, area, Recorder(area, self.calls, fail))


def request(method: str, path: str, body: dict | None = None, query: dict | None = None) -> Request:
    return Request(method, path, query or {}, json.dumps(body).encode() if body is not None else b"", {}, ME)


MANIFEST = {"manifest": "services: {}", "filename": "x.yaml"}
CASES = [
    ("GET", "/v1/ping", None, None, "system.ping", (), {}),
    ("GET", "/v1/top", None, {"project": "p", "service": "web"}, "metrics.top", ("p", "web"), {}),
    ("GET", "/v1/projects/p/services/web/stats", None, {"since": "6h"}, "metrics.service_stats", ("p", "web"),
     {"since": "6h"}),
    ("POST", "/v1/projects/p/services/job/runs", {"env": ["A=1"], "idempotency_key": "k1"}, None, "runs.start",
     ("p", "job"), {"env": ["A=1"], "idempotency_key": "k1"}),
    ("GET", "/v1/projects/p/services/job/runs", None, {"state": "failed", "limit": "5"}, "runs.list", ("p", "job"),
     {"state": "failed", "limit": 5}),
    ("GET", "/v1/projects/p/services/job/next", None, {"count": "3"}, "runs.next", ("p", "job"), {"count": 3}),
    ("GET", "/v1/runs/abc", None, None, "runs.get", ("abc",), {}),
    ("POST", "/v1/runs/abc/stop", None, None, "runs.stop", ("abc",), {}),
    ("GET", "/v1/projects/p/triggers", None, None, "triggers.list", ("p",), {}),
    ("POST", "/v1/projects/p/triggers/reveal", None, None, "triggers.reveal", ("p",), {}),
    ("POST", "/v1/projects/p/triggers/deploy-hook/rotate", None, None, "triggers.rotate", ("p", "deploy-hook"), {}),
    ("GET", "/v1/projects/p/webhooks/deliveries", None, {"failed": "1", "limit": "5"}, "webhooks.deliveries",
     ("p",), {"failed": True, "limit": 5}),
    ("GET", "/v1/projects/p/webhooks/deliveries", None, None, "webhooks.deliveries", ("p",),
     {"failed": False, "limit": 100}),
    ("POST", "/v1/projects/p/webhooks/deliveries/d1234/redeliver", None, None, "webhooks.redeliver",
     ("p", "d1234"), {}),
    ("GET", "/v1/projects", None, None, "projects.list", (), {}),
    ("POST", "/v1/projects", {"name": "p", **MANIFEST, "env_files": {"a.env": "A=1"}}, None, "projects.add",
     ("p", "services: {}", "x.yaml"), {"env_files": {"a.env": "A=1"}, "base_dir": None, "meta": None}),
    ("GET", "/v1/projects/p", None, None, "projects.get", ("p",), {}),
    ("PUT", "/v1/projects/p", {**MANIFEST, "rolling": 2, "canary": 1, "if_version": "abc"}, None, "projects.update",
     ("p", "services: {}", "x.yaml"), {"rolling": 2, "count": 1, "if_version": "abc", "env_files": None,
                                          "base_dir": None}),
    ("DELETE", "/v1/projects/p", None, None, "projects.delete", ("p",), {"purge_volumes": False}),
    ("DELETE", "/v1/projects/p", None, {"purge_volumes": "1"}, "projects.delete", ("p",), {"purge_volumes": True}),
    ("GET", "/v1/projects/p/volumes", None, None, "volumes.list", ("p",), {}),
    ("GET", "/v1/projects/p/networks", None, None, "projects.networks", ("p",), {}),
    ("DELETE", "/v1/projects/p/volumes/data", None, None, "volumes.remove", ("p", "data"), {}),
    ("GET", "/v1/projects/p/versions", None, None, "projects.versions", ("p",), {}),
    ("GET", "/v1/projects/p/versions/3", None, None, "projects.version", ("p", "3"), {}),
    ("GET", "/v1/versions/abcd", None, None, "projects.version", (None, "abcd"), {}),
    ("GET", "/v1/projects/p/instances", None, None, "projects.instances", ("p",), {}),
    ("POST", "/v1/projects/p/start", None, None, "projects.start", ("p",), {}),
    ("POST", "/v1/projects/p/stop", None, None, "projects.stop", ("p",), {}),
    ("POST", "/v1/projects/p/revert", {"version": 2}, None, "projects.revert", ("p", "2"),
     {"rolling": None, "count": None}),
    ("POST", "/v1/projects/p/diff", MANIFEST, None, "projects.diff", ("p", "services: {}", "x.yaml"),
     {"rolling": None, "count": None, "env_files": None, "base_dir": None}),
    ("GET", "/v1/projects/p/services", None, None, "services.list", ("p",), {}),
    ("GET", "/v1/projects/p/services/web", None, None, "services.get", ("p", "web"), {}),
    ("POST", "/v1/projects/p/services", {"name": "web", **MANIFEST}, None, "services.add",
     ("p", "web", "services: {}", "x.yaml"), {}),
    ("PUT", "/v1/projects/p/services/web", {**MANIFEST, "rolling": 2, "canary": 1}, None, "services.update",
     ("p", "web", "services: {}", "x.yaml"), {"rolling": 2, "count": 1}),
    ("DELETE", "/v1/projects/p/services/web", None, None, "services.delete", ("p", "web"), {}),
    ("GET", "/v1/projects/p/services/web/instances", None, None, "services.instances", ("p", "web"), {}),
    ("GET", "/v1/projects/p/services/web/versions", None, None, "services.versions", ("p", "web"), {}),
    ("GET", "/v1/projects/p/services/web/versions/2", None, None, "services.version", ("p", "web", "2"), {}),
    ("GET", "/v1/projects/p/services/web/health", None, None, "services.health", ("p", "web"), {}),
    ("POST", "/v1/projects/p/services/web/scale", {"scale": "+1"}, None, "services.scale", ("p", "web", "+1"), {}),
    ("POST", "/v1/projects/p/services/web/start", None, None, "services.start", ("p", "web"), {}),
    ("POST", "/v1/projects/p/services/web/stop", None, None, "services.stop", ("p", "web"), {}),
    ("POST", "/v1/projects/p/services/web/thaw", None, None, "services.thaw", ("p", "web"), {}),
    ("POST", "/v1/projects/p/services/web/reprovision", {"version": "2", "count": 1}, None, "services.reprovision",
     ("p", "web"), {"version": "2", "image": None, "instance": None, "rolling": None, "count": 1}),
    ("POST", "/v1/projects/p/services/web/revert", {"version": "1", "rolling": 3}, None, "services.revert",
     ("p", "web", "1"), {"rolling": 3, "count": None}),
    ("GET", "/v1/instances/abcd", None, None, "instances.get", ("abcd",), {}),
    ("DELETE", "/v1/instances/abcd", None, None, "instances.remove", ("abcd",), {}),
    ("GET", "/v1/queue", None, {"project": "p", "state": "queued,active", "limit": "5"}, "queue.list",
     ("p", ("queued", "active"), 5), {}),
    ("GET", "/v1/queue/t1", None, None, "queue.get", ("t1",), {}),
    ("DELETE", "/v1/queue/t1", None, {"project": "p"}, "queue.stop", ("t1", "p"), {}),
    ("GET", "/v1/events", None, {"project": "p", "type": "service,task", "since": "7"}, "events.list", (),
     {"project": "p", "service": None, "types": ("service", "task"), "since": 7}),
    ("GET", "/v1/registries", None, None, "registry.list", (), {}),
    ("GET", "/v1/projects/p/secrets", None, None, "secrets.list", ("p",), {}),
    ("PUT", "/v1/projects/p/secrets/db", {"value": "v"}, None, "secrets.set", ("p", "db", "v"), {}),
    ("DELETE", "/v1/projects/p/secrets/db", None, None, "secrets.remove", ("p", "db"), {}),
    ("POST", "/v1/projects/p/secrets/db/reveal", None, None, "secrets.reveal", ("p", "db"), {}),
    ("POST", "/v1/secrets/rotate-key", None, None, "secrets.rotate_key", (), {}),
    ("POST", "/v1/registries", {"host": "127.0.0.1:5000", "username": "u", "password": "p"}, None, "registry.login",
     ("127.0.0.1:5000", "u", "p"), {}),
    ("DELETE", "/v1/registries/127.0.0.1:5000", None, None, "registry.logout", ("127.0.0.1:5000",), {}),
    ("GET", "/v1/tokens", None, {"user": "bob"}, "tokens.list", ("bob",), {}),
    ("POST", "/v1/tokens", {"user": "bob", "expires": "30d", "name": "ci"}, None, "tokens.create",
     ("bob", "30d", "ci"), {}),
    ("DELETE", "/v1/tokens/0123456789ab", None, None, "tokens.revoke", ("0123456789ab",), {}),
    ("GET", "/v1/projects/p/meta", None, None, "meta.list", ("p",), {}),
    ("POST", "/v1/projects/p/copy", {"name": "q", "with_meta": True}, None, "projects.copy", ("p", "q"),
     {"with_meta": True, "with_secrets": False}),
    ("POST", "/v1/projects/p/export", {"to": "nomad", "strict": True}, None, "exports.export", ("p", "nomad"),
     {"strict": True, "with_secret_values": False}),
    ("POST", "/v1/projects/p/meta", {"manifest": "a: 1", "force": True}, None, "meta.import_",
     ("p", "a: 1", "<meta>"), {"force": True}),
    ("GET", "/v1/projects/p/meta/k", None, None, "meta.get", ("p", "k"), {}),
    ("PUT", "/v1/projects/p/meta/k", {"value": "v", "cas": "c1"}, None, "meta.set", ("p", "k", "v"), {"cas": "c1"}),
    ("DELETE", "/v1/projects/p/meta/k", None, {"cas": "c1"}, "meta.remove", ("p", "k"), {"cas": "c1"}),
    ("POST", "/v1/projects/p/meta/k/increment", {"by": -2}, None, "meta.increment", ("p", "k", -2), {}),
    # users, organisations, roles and bindings
    ("POST", "/v1/projects/p/move", {"to_org": "acme"}, None, "projects.move", ("p", "acme"), {}),
    ("GET", "/v1/whoami", None, None, "access.whoami", (), {}),
    ("POST", "/v1/ui/signin", None, None, "dashboard.signin", (), {}),
    ("GET", "/v1/users", None, None, "access.user_list", (), {}),
    ("POST", "/v1/users", {"name": "ann", "uids": [1001]}, None, "access.user_add", ("ann", [1001]), {}),
    ("GET", "/v1/users/ann", None, None, "access.user_get", ("ann",), {}),
    ("DELETE", "/v1/users/ann", None, None, "access.user_remove", ("ann",), {}),
    ("GET", "/v1/orgs", None, None, "access.org_list", (), {}),
    ("POST", "/v1/orgs", {"name": "acme"}, None, "access.org_add", ("acme",), {}),
    ("DELETE", "/v1/orgs/acme", None, None, "access.org_remove", ("acme",), {}),
    ("GET", "/v1/roles", None, None, "access.role_list", (), {}),
    ("POST", "/v1/roles", {"text": "name: r", "filename": "r.yaml"}, None, "access.role_define",
     ("name: r", "r.yaml"), {}),
    ("GET", "/v1/roles/viewer", None, None, "access.role_get", ("viewer",), {}),
    ("POST", "/v1/grants", {"user": "ann", "role": "viewer", "org": "acme"}, None, "access.grant",
     ("ann", "viewer"), {"org": "acme", "project": None}),
    ("POST", "/v1/denies", {"user": "ann", "capability": "service:scale", "project": "p"}, None, "access.deny",
     ("ann", "service:scale"), {"org": None, "project": "p"}),
    ("POST", "/v1/revoke", {"id": "b123"}, None, "access.revoke", (None, None),
     {"org": None, "project": None, "binding": "b123"}),
    ("GET", "/v1/can-i", None, {"action": "service.scale", "project": "p", "as": "ann"}, "access.can_i",
     ("p", "service.scale"), {"as_user": "ann"}),
    ("GET", "/v1/who-can", None, {"action": "service:scale", "project": "p"}, "access.who_can",
     ("p", "service:scale"), {}),
    ("GET", "/v1/audit", None, {"user": "ann", "denied": "1", "limit": "5"}, "access.audit", (),
     {"user": "ann", "denied": True, "limit": 5}),
]


LOG_CASES = [
    ("GET", "/v1/projects/p/services/web/logs", None, {"follow": "1", "since": "10m", "tail": "5", "instance": "ab"},
     "services.logs", ("p", "web"), {"follow": True, "since": "10m", "tail": "5", "instance": "ab"}),
    ("GET", "/v1/instances/abcd/logs", None, {"tail": "all"}, "instances.logs", ("abcd",),
     {"follow": False, "since": None, "tail": "all"}),
    ("GET", "/v1/runs/abcd/logs", None, {"follow": "1"}, "runs.logs", ("abcd",), {"follow": True}),
]


async def body_of(resp: Response) -> bytes:
    chunks: list[bytes] = []

    async def write(chunk: bytes) -> None:
        chunks.append(chunk)

    assert resp.produce is not None
    await resp.produce(write)
    return b"".join(chunks)


@pytest.mark.parametrize("method,path,body,query,called,args,kwargs", LOG_CASES, ids=[c[1] for c in LOG_CASES])
async def test_logs_stream_ndjson_and_end_with_an_error_line(method, path, body, query, called, args, kwargs):
    control = FakeControl()
    resp = await build_router(control).dispatch(request(method, path, body, query))
    [(name, caller, got_args, got_kwargs)] = control.calls
    assert (name, caller, got_args, got_kwargs) == (called, ME, args, kwargs)
    lines = [json.loads(line) for line in (await body_of(resp)).splitlines()]
    assert lines[:2] == [{"name": "web-1", "line": "hello"}, {"name": "web-2", "line": "world"}]
    if called == "instances.logs":  # an error once the headers are gone is the stream's last line
        assert lines[2:] == [{"error": "runtime-unavailable", "message": "runtime unavailable: docker went away",
                              "details": []}]
    else:
        assert lines[2:] == []


@pytest.mark.parametrize("method,path,body,query,called,args,kwargs", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
async def test_each_route_is_one_control_call(method, path, body, query, called, args, kwargs):
    control = FakeControl()
    resp = await build_router(control).dispatch(request(method, path, body, query))
    assert resp.status == 200 and resp.body == {"called": called}
    [(name, caller, got_args, got_kwargs)] = control.calls
    assert (name, caller, got_args, got_kwargs) == (called, ME, args, kwargs)


async def test_every_route_is_covered_by_the_table_test():
    routes = build_router(FakeControl()).routes
    hit = {next(i for i, (m, regex, _) in enumerate(routes) if m == c[0] and regex.match(c[1]))
           for c in CASES + LOG_CASES + [("GET", "/metrics")]}  # /metrics: test_metrics_is_text_in_...
    untested = [f"{m} {regex.pattern}" for i, (m, regex, _) in enumerate(routes) if i not in hit]
    assert untested == ["POST ^/v1/projects/(?P<project>[^/]+)/(?P<action>[^/]+)$",
                        "POST ^/v1/projects/(?P<project>[^/]+)/services/(?P<service>[^/]+)/(?P<action>[^/]+)$"]


PROGRESS_CASES = [
    ("POST", "/v1/projects", {"name": "p", **MANIFEST}, "projects.add"),
    ("PUT", "/v1/projects/p", MANIFEST, "projects.update"),
    ("POST", "/v1/projects/p/services", {"name": "web", **MANIFEST}, "services.add"),
    ("PUT", "/v1/projects/p/services/web", MANIFEST, "services.update"),
]


@pytest.mark.parametrize("method,path,body,called", PROGRESS_CASES, ids=[f"{c[0]} {c[1]}" for c in PROGRESS_CASES])
async def test_changes_that_may_pull_stream_their_progress_when_asked(method, path, body, called):
    """?progress=1: the control call gets a ``report`` whose lines come out first, then the
    result as the last line; a refusal is the last line instead (with its kind, for the CLI)."""

    class Pulling(Recorder):
        def __getattr__(self, name: str):
            async def method(caller, *args, report=None, **kwargs):
                self.calls.append((f"{self.area}.{name}", caller, args, kwargs))
                await report({"pull": {"image": "x", "status": "Pulling"}})
                if self.fail is not None:
                    raise self.fail
                return {"called": f"{self.area}.{name}"}
            return method

    for fail, last in ((None, {"result": {"called": called}}),
                       (NotFound("no such tag"), {"error": "not-found", "message": "no such tag", "details": []})):
        control = FakeControl()
        control.projects, control.services = (Pulling(a, control.calls, fail) for a in ("projects", "services"))
        resp = await build_router(control).dispatch(request(method, path, body, {"progress": "1"}))
        assert resp.status == 200 and resp.produce is not None
        lines = [json.loads(line) for line in (await body_of(resp)).splitlines()]
        assert lines == [{"pull": {"image": "x", "status": "Pulling"}}, last]
        assert [c[0] for c in control.calls] == [called]


async def test_events_follow_streams_ndjson():
    control = FakeControl()
    resp = await build_router(control).dispatch(request("GET", "/v1/events", query={"follow": "1"}))
    assert isinstance(resp, Response) and resp.stream is not None
    assert [chunk async for chunk in resp.stream] == [b'{"id": 1}\n']
    assert control.calls[0][0] == "events.follow"


@pytest.mark.parametrize("error,status,kind", [
    (NotFound("no project 'x'"), 404, "not-found"),
    (Forbidden("uid=5 may not project.add"), 403, "forbidden"),
    (InvalidManifest("x.yaml: 1 problem", details=[{"line": 1}]), 422, "invalid-manifest"),
    (RuntimeUnavailable("runtime unavailable: docker down"), 503, "runtime-unavailable"),
    (ValueError("a bug with a secret in it"), 500, "internal"),
])
async def test_errors_leave_with_their_status(error, status, kind):
    resp = await build_router(FakeControl(fail=error)).dispatch(request("GET", "/v1/projects"))
    assert resp.status == status and resp.body["error"] == kind
    if status == 500:
        assert "secret" not in resp.body["message"] and "error_id=" in resp.body["message"]


@pytest.mark.parametrize("method,path,body,query,status,message", [
    ("GET", "/v1/nothing", None, None, 404, "no endpoint /v1/nothing"),
    ("PATCH", "/v1/projects", None, None, 405, "PATCH not allowed"),
    ("POST", "/v1/projects/p/explode", None, None, 400, "unknown project action 'explode'"),
    ("POST", "/v1/projects/p/services/web/explode", None, None, 400, "unknown service action 'explode'"),
    ("GET", "/v1/queue", None, {"limit": "lots"}, 400, "'limit' must be a whole number"),
])
async def test_bad_requests_never_reach_the_control_layer(method, path, body, query, status, message):
    control = FakeControl()
    resp = await build_router(control).dispatch(request(method, path, body, query))
    assert resp.status == status and message in resp.body["message"]
    assert control.calls == []


async def test_a_body_that_is_not_json_is_refused():
    control = FakeControl()
    req = Request("POST", "/v1/projects", {}, b"{nope", {}, ME)
    resp = await build_router(control).dispatch(req)
    assert resp.status == 400 and "not JSON" in resp.body["message"] and control.calls == []


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/v1/projects/p"), ("POST", "/v1/projects/p/stop"), ("POST", "/v1/projects/p/services/web/thaw"),
    ("DELETE", "/v1/instances/i"), ("DELETE", "/v1/queue/t"), ("GET", "/v1/projects"),
])
@pytest.mark.parametrize("body", [b"[]", b'"p"', b"null", b"{nope", b'{"a": NaN}'])
async def test_a_route_that_reads_no_body_refuses_one_that_is_not_an_object(method, path, body):
    """The API abuse suite (tests/faults/abuse.py) found 'DELETE /v1/projects/p' with the body
    '[]' deleting the project: a client that sends garbage is confused, and acting on it is wrong."""
    control = FakeControl()
    resp = await build_router(control).dispatch(Request(method, path, {}, body, {}, ME))
    assert resp.status == 400 and control.calls == []


@pytest.mark.parametrize("method,path,body,key", [
    ("POST", "/v1/projects", {"name": 1.5, "manifest": "services: {}"}, "name"),
    ("POST", "/v1/projects", {"name": "p", "manifest": "services: {}", "filename": [1]}, "filename"),
    ("POST", "/v1/projects", {"name": "p", "manifest": {"services": {}}}, "manifest"),
    ("PUT", "/v1/projects/p", {"manifest": "services: {}", "filename": {"a": 1}}, "filename"),
    ("POST", "/v1/projects/p/revert", {"version": [1]}, "version"),
    ("POST", "/v1/projects/p/services/web/reprovision", {"image": True}, "image"),
    ("POST", "/v1/projects/p/services/web/reprovision", {"instance": 1.5}, "instance"),
])
async def test_a_text_field_of_another_type_is_refused(method, path, body, key):
    """'{"name": 1.5}' created a project named '1.5' (the route str()-ed it), and a list filename
    was stored as the version's filename."""
    control = FakeControl()
    resp = await build_router(control).dispatch(request(method, path, body))
    assert resp.status == 400 and f"'{key}' must be" in resp.body["message"] and control.calls == []


async def _exchange(admits) -> bytes:
    """One request over a real unix socket pair, through the connection handler."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server, client = trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.socket.from_stdlib_socket(b)
    seen = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, build_router(FakeControl()), server, lambda c: seen.append(c) or admits(c))
        conn = h11.Connection(h11.CLIENT)
        data = b""
        try:
            await client.send(conn.send(h11.Request(method="GET", target="/v1/ping",
                                                    headers=[("host", "m"), ("connection", "close")])))
            await client.send(conn.send(h11.EndOfMessage()))
            while chunk := await client.recv(65536):
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass  # hung up on us
    client.close()
    [caller] = seen
    assert (caller.uid, caller.pid, caller.transport) == (os.getuid(), os.getpid(), "unix")  # the kernel's word
    return data


async def test_the_connection_gate_uses_peer_credentials():
    assert (await _exchange(lambda c: True)).startswith(b"HTTP/1.1 200")
    refused = await _exchange(lambda c: False)
    assert refused.startswith(b"HTTP/1.1 403") and b"permission denied: uid=" in refused


async def test_metrics_is_text_in_prometheus_format():
    """GET /metrics answers text with Prometheus' content type; the HTTP layer sends it as it is."""
    control = FakeControl()

    class Scrape(Recorder):
        def __getattr__(self, name: str):
            async def method(caller, *args, **kwargs):
                self.calls.append((f"{self.area}.{name}", caller, args, kwargs))
                return '# HELP m x\n# TYPE m gauge\nm{a="b"} 1\n'
            return method

    control.metrics = Scrape("metrics", control.calls)
    resp = await build_router(control).dispatch(request("GET", "/metrics"))
    assert resp.status == 200 and resp.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert resp.body.endswith('m{a="b"} 1\n') and [c[0] for c in control.calls] == ["metrics.exposition"]
    from mariposa.api.http import _encode

    assert _encode(resp) == resp.body.encode()
