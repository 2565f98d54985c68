"""Part 3 of the fault-injection suite: a hostile client against a live daemon.

A real ``mariposa daemon`` process (on real Docker) runs one project. Its store is fingerprinted,
then, all at once, it is sent: malformed HTTP, bodies that are not JSON objects and JSON of the
wrong types on every route of ``mariposa/api/routes.py`` (the table itself is walked, so a new
route is abused the day it is added), a 50 MB body, 64 KB of headers, hundreds of connections at
once, slowloris connections (one byte a second), names with ``/``, ``..``, NUL, 10 KB and unicode,
and unknown routes and methods. Meanwhile another process (``sampler.py``) times ``project list``
and reads the daemon's RSS.

What must hold: every abusive request is answered 4xx or hung up on (never a 5xx, never left
hanging), ``project list`` keeps answering within 200 ms, RSS stays under 150 MB, the daemon is
still there, and the store is exactly as it was (a refused request changes nothing).

The client is one trio program speaking raw bytes: an HTTP library would refuse to send most of
this. ``run(tmp, scale)`` returns the figures; ``scale`` multiplies every count for the long run
(tests/bench/bench_faults.py).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import attrs
import trio

from mariposa.api.http import Limits
from tests.integration.harness import IMAGE, ROOT, Daemon, wait_until

PROJECT, SERVICE = "abuse", "web"
MANIFEST = f"""services:
  {SERVICE}:
    image: {IMAGE}
    command: sleep 1000000
    scale: 2
"""
LIST_BOUND_MS = 200
RSS_BOUND_MB = 150
BIG_BODY = 50 * 1024 * 1024
CROWD = 500  # connections open at once
BIG_AT_ONCE = 8  # bodies just under the limit (16 MiB), sent together
BASELINE = 2.0  # seconds of project list sampled before the abuse: what the machine's own load costs
ANSWER_TIMEOUT = 60.0  # past the daemon's own request/idle timeouts: an answer later than this is a hang
STORE_TABLES = ("meta", "projects", "versions", "version_images", "services", "tasks", "events",
                "instances", "manifest_files")

# Bad names, for path segments and for the body's "name": each must be refused, never matched to
# the real project (the '%' ones are LIKE wildcards, the '\n' one once slipped past a '$' regex).
BAD_NAMES = ["a/b", "..", "../..", "./abuse", "abuse\x00", "\x00", "x" * 10240, "ünïcödé", "日本語",
             "abuse\n", "%", "%%%%", "_", "abuse/..", " abuse", "ABUSE", "\u202eesuba", "🦋" * 100]

# Bodies that are not a JSON object: each must be a 400 on every route, whatever the route reads.
NOT_OBJECTS = [b"{", b"null", b"[]", b"1", b'"abuse"', b"NaN", b'{"a": NaN}', b'{"a": Infinity}',
               b"\xff\xfe\x00", b'{"a": 1} {"b": 2}', b"[" * 100_000 + b"]" * 100_000,
               b'{"scale": ' + b"9" * 5000 + b"}", b'{"a": "\\ud800"', b"\x00" * 64]

# Wrong types for the keys a route reads: truthy, since routes take a falsy value as absent.
WRONG_TEXT = [[1], {"a": 1}, 1.5, True]
WRONG_NUMBER = [[1], {"a": 1}, 1.5, True, "many", -1, 0.0001, "1e400"]
KEYS = {"name": WRONG_TEXT, "manifest": WRONG_TEXT, "filename": WRONG_TEXT, "version": WRONG_TEXT,
        "image": WRONG_TEXT, "instance": WRONG_TEXT, "if_version": WRONG_TEXT + [10 ** 30],
        "scale": WRONG_NUMBER + [10 ** 30, "+" + "9" * 40], "rolling": WRONG_NUMBER, "count": WRONG_NUMBER,
        "canary": WRONG_NUMBER,
        # the env files read beside a manifest (path: text or {"error": why}) and its directory
        "env_files": [[1], 1.5, True, {"a": 1}, {"a": {"oops": "x"}}, {"a": "x" * 300_000}],
        "base_dir": [[1], 1.5, True, "relative/dir", "/a\u0000b"],
        # registry logins: a wrong type of any of the three is refused before the registry is asked
        "host": WRONG_TEXT + ["not a host", "a/b"], "username": WRONG_TEXT, "password": WRONG_TEXT,
        # a secret's value: text only, not empty, bounded; a meta value text (or null) of at most 64 KiB
        "value": WRONG_TEXT + ["x" * 600_000],
        # project meta: a CAS id is text, a step a whole number (negative decrements)
        "cas": WRONG_TEXT + ["c" * 100],
        "by": [[1], {"a": 1}, 1.5, True, "many", "1e400", 10 ** 30], "force": [[1], {"a": 1}, 1.5, "yes", 1],
        "meta": WRONG_TEXT + ["- not\n- a map\n"],
        "with_meta": [[1], {"a": 1}, 1.5, "yes", 1], "with_secrets": [[1], {"a": 1}, 1.5, "yes", 1],
        # an export: its target by name, and two flags
        "to": WRONG_TEXT + ["helm", "compose\u0000"], "strict": [[1], {"a": 1}, 1.5, "yes", 1],
        "with_secret_values": [[1], {"a": 1}, 1.5, "yes", 1],
        # a run asked for: env as KEY=VALUE strings or an object, a key of at most 200 characters
        "env": [1.5, True, "A=1", [1], ["no equals"], {"A": 1}, {"bad name": "x"}, ["A=\u0000"],
                [f"K{i}=v" for i in range(200)]],
        "idempotency_key": WRONG_TEXT + ["k" * 300],
        # an API token: its user's name, and a duration
        "expires": [[1], {"a": 1}, True, "soon", -1, 0, "30x"],
        # users, organisations, roles and bindings (control/access.py): names are checked, uids are
        # whole numbers other than 0, a role file is text whose errors name its field
        "uids": [1.5, True, "1000", {"a": 1}, [0], [-1], [2 ** 40], ["x"], [1.5], [[1]]],
        "text": WRONG_TEXT + ["name: x\ncapabilities: [nope]\n", "[", "x" * 100_000],
        "user": WRONG_TEXT + ["Bad Name"], "role": WRONG_TEXT + ["nope"],
        "capability": WRONG_TEXT + ["nope", "nope:*"], "org": WRONG_TEXT + ["Bad Org"],
        "project": WRONG_TEXT, "what": WRONG_TEXT, "id": WRONG_TEXT + ["%", "____"], "to_org": WRONG_TEXT + ["nope"]}
ROLLOUT = {"rolling", "count", "canary"}
P, S = "/v1/projects/{project}", "/v1/projects/{project}/services/{service}"
# The JSON keys each route reads. Every route of the table must be here (run() checks), so a new
# route gets its wrong types the day it is added; routes that read no body map to nothing.
BODY_KEYS: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/projects"): {"name", "manifest", "filename", "env_files", "base_dir", "meta"},
    ("PUT", P): {"manifest", "filename", "if_version", "env_files", "base_dir"} | ROLLOUT,
    ("POST", P + "/revert"): {"version"} | ROLLOUT,
    ("POST", P + "/diff"): {"manifest", "filename", "env_files", "base_dir"} | ROLLOUT,
    ("POST", P + "/services"): {"name", "manifest", "filename"},
    ("PUT", S): {"manifest", "filename"} | ROLLOUT,
    ("POST", S + "/scale"): {"scale"},
    ("POST", S + "/reprovision"): {"version", "image", "instance"} | ROLLOUT,
    ("POST", S + "/revert"): {"version"} | ROLLOUT,
    ("POST", "/v1/registries"): {"host", "username", "password"},
    ("PUT", P + "/secrets/{name}"): {"value"},
    ("POST", P + "/meta"): {"manifest", "filename", "force"},
    ("POST", P + "/copy"): {"name", "with_meta", "with_secrets"},
    ("POST", P + "/export"): {"to", "strict", "with_secret_values"},
    ("PUT", P + "/meta/{key}"): {"value", "cas"},
    ("POST", P + "/meta/{key}/increment"): {"by"},
    ("POST", S + "/runs"): {"env", "idempotency_key"},
    ("POST", P + "/move"): {"to_org"},
    ("POST", "/v1/users"): {"name", "uids"},
    ("POST", "/v1/orgs"): {"name"},
    ("POST", "/v1/roles"): {"text", "filename"},
    ("POST", "/v1/grants"): {"user", "role", "org", "project"},
    ("POST", "/v1/denies"): {"user", "capability", "org", "project"},
    ("POST", "/v1/revoke"): {"user", "what", "org", "project", "id"},
    ("POST", "/v1/tokens"): {"user", "expires", "name"},
}

MALFORMED = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS hello
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x00" * 4096 + b"\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /v1/ping\r\n\r\n",
    b"GET  /v1/ping  HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET /v1/p\xffng HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\n\r\n",  # no Host
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\nHost: n\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\nno colon here\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\nBad Name: x\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\nX: a\x00b\r\n\r\n",
    b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nContent-Length: 1e3\r\n\r\n",
    b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nContent-Length: " + b"9" * 100 + b"\r\n\r\n",
    b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
    b"2\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}xx0\r\n\r\n",
    b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\n{}\r\n",
    b"GET http://[/ HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET http://[::1 HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET http:// HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET //// HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: m\r\n\r\n",
    b"CONNECT m:80 HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET /v1/projects/%ff%fe HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET /v1/queue?limit=abc HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET /v1/queue?limit=" + b"9" * 5000 + b" HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET /v1/events?since=-1e9999 HTTP/1.1\r\nHost: m\r\n\r\n",
]

# Odd but servable (h11 is lenient here, as RFC 9112 lets a server be): any answer but a 5xx.
LENIENT = [
    b"GET /v1/ping HTTP/9.9\r\nHost: m\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\n folded: x\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\nHost: m\n\n\x00",
    b"GET /v1/queue?%zz=%zz&&&== HTTP/1.1\r\nHost: m\r\n\r\n",
]

UNKNOWN = [("GET", "/"), ("GET", "/v2/ping"), ("GET", "/v1"), ("GET", "/v1/"), ("GET", "/v1/ping/"),
           ("GET", "/v1/projects/abuse/services/web/instances/x/y"), ("BREW", "/v1/ping"),
           ("PATCH", "/v1/projects"), ("PATCH", f"/v1/projects/{PROJECT}"), ("OPTIONS", "/v1/ping"),
           ("TRACE", "/v1/ping"), ("get", "/v1/ping"), ("DELETE", "/v1/projects"),
           ("DELETE", f"/v1/projects/{PROJECT}/services/{SERVICE}"), ("POST", f"/v1/projects/{PROJECT}/selfdestruct"),
           ("POST", f"/v1/projects/{PROJECT}/services/{SERVICE}/explode"), ("PUT", "/v1/ping"),
           ("X" * 1000, "/v1/ping"), ("POST", "/v1/ping"), ("DELETE", "/v1/queue"), ("PUT", "/v1/events")]


@attrs.define
class Tally:
    """Every abusive request's outcome: an answer's status, or a hang-up; anything else fails."""

    kinds: Counter = attrs.Factory(Counter)
    statuses: Counter = attrs.Factory(Counter)
    hangups: int = 0
    busy: int = 0  # 503 "too many connections": the cap at work, not an error
    failures: list[str] = attrs.Factory(list)

    def record(self, kind: str, what: str, answer: bytes | None) -> None:
        self.kinds[kind] += 1
        if answer is None:
            self.failures.append(f"{kind}: no answer and no hang-up within {ANSWER_TIMEOUT:g}s: {what[:200]}")
            return
        if not answer:
            self.hangups += 1
            return
        try:
            status = int(answer.split(b" ", 2)[1])
        except (IndexError, ValueError):
            self.failures.append(f"{kind}: not an HTTP answer {answer[:100]!r}: {what[:200]}")
            return
        self.statuses[status] += 1
        if status == 503 and b'"busy"' in answer:
            self.busy += 1
        elif not 400 <= status < 500 and not (kind == "lenient" and status < 500):
            self.failures.append(f"{kind}: {status} for {what[:200]}: {answer[-300:]!r}")


def response_complete(data: bytes) -> bool:
    """A whole answer (the daemon sends Content-Length), so a kept-alive connection need not idle out."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


async def exchange(path: str, raw: bytes, pace: float = 0.0) -> bytes | None:
    """Send ``raw`` (a byte every ``pace`` seconds, if set) and read: the answer, b"" for a
    hang-up with no answer, None when neither came in time."""
    data = bytearray()
    stream = await trio.open_unix_socket(path)
    try:
        with trio.move_on_after(ANSWER_TIMEOUT + len(raw) * pace) as waited:
            async with trio.open_nursery() as nursery:

                async def send() -> None:
                    try:
                        if pace:
                            for i in range(len(raw)):
                                await stream.send_all(raw[i:i + 1])
                                await trio.sleep(pace)
                        else:
                            await stream.send_all(raw)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass  # the daemon answered early (413) and hung up

                nursery.start_soon(send)
                try:
                    while not response_complete(data) and (chunk := await stream.receive_some(65536)):
                        data += chunk
                except (trio.BrokenResourceError, OSError):
                    pass
                nursery.cancel_scope.cancel()
        if waited.cancelled_caught:
            return None
        return bytes(data)
    finally:
        await stream.aclose()


def request(method: str, target: str, body: bytes | None = None, headers: str = "") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n{headers}"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + (body or b"")


BODY_READERS = {"json", "_text", "_rollout"}  # what a handler in routes.py calls to read the body


def route_table() -> list[tuple[str, str]]:
    """(method, path template) of every route the daemon serves, read from the router itself.
    A route whose handler reads the body must be in BODY_KEYS, so its keys get wrong types."""
    from mariposa.api.routes import build_router

    control = types.SimpleNamespace(projects=None, services=None, instances=None, queue=None, events=None,
                                    system=None, volumes=None, registry=None, secrets=None, meta=None,
                                    runs=None, triggers=None, webhooks=None, metrics=None, tokens=None,
                                    access=None, exports=None)
    router = build_router(control)  # type: ignore[arg-type]  # only the table is read, nothing is called
    table = []
    for method, regex, handler in router.routes:
        template = regex.pattern.removeprefix("^").removesuffix("$").replace("[^/]+)", ")")
        template = template.replace("(?P<", "{").replace(">)", "}")
        reads = bool(BODY_READERS & set(handler.__code__.co_names))
        if reads != ((method, template) in BODY_KEYS):
            raise AssertionError(f"{method} {template}: BODY_KEYS must list the keys of exactly the routes that "
                                 "read a body")
        table.append((method, template))
    return table


def fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", quote(value, safe=""))
    return template


def route_abuse(table: list[tuple[str, str]], real: dict[str, str]) -> Iterator[tuple[str, bytes]]:
    """(kind, raw request) for every route: bodies that are not objects at the real targets (a
    route that reads no body must refuse one too: a DELETE with garbage is not a DELETE), wrong
    types at the real targets of the routes that read them, and bad names in every path slot."""
    for method, template in table:
        target = fill(template, **real)
        for body in NOT_OBJECTS:
            yield "not-an-object", request(method, target, body, "Content-Type: application/json\r\n")
        for key in BODY_KEYS.get((method, template), ()):
            for wrong in KEYS[key]:
                body = {key: wrong}
                if key != "manifest" and "manifest" in BODY_KEYS[(method, template)]:
                    body["manifest"] = MANIFEST
                if key != "name" and "name" in BODY_KEYS[(method, template)]:
                    body["name"] = "fresh"
                yield "wrong-type", request(method, target, json.dumps(body).encode())
        slots = [s for s in ("project", "service", "version", "instance", "task", "action", "delivery")
                 if "{" + s + "}" in template]
        for slot in slots:
            for name in BAD_NAMES:
                yield "bad-name", request(method, fill(template, **{**real, slot: name}),
                                          None if method in ("GET", "DELETE") else b"{}")


def name_abuse() -> Iterator[tuple[str, bytes]]:
    for name in BAD_NAMES:
        body = json.dumps({"name": name, "manifest": MANIFEST}).encode()
        yield "bad-name", request("POST", "/v1/projects", body)
    for name in BAD_NAMES:  # a valid project, a bad service name in its manifest
        manifest = MANIFEST.replace(f"  {SERVICE}:", f"  {json.dumps(name)}:")
        yield "bad-name", request("POST", "/v1/projects", json.dumps({"name": "fresh", "manifest": manifest}).encode())


def malformed_abuse() -> Iterator[tuple[str, bytes]]:
    for raw in MALFORMED:
        yield "malformed", raw
    for raw in LENIENT:
        yield "lenient", raw
    for method, target in UNKNOWN:
        yield "unknown-route", request(method, target, None if method in ("GET", "OPTIONS", "TRACE") else b"{}")
    yield "big-headers", request("GET", "/v1/projects", None, "X-Big: " + "a" * 65536 + "\r\n")
    yield "big-headers", request("GET", "/v1/projects", None, "".join(f"X-{i}: {'b' * 60}\r\n" for i in range(1000)))
    yield "big-headers", b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: m\r\n\r\n"


def big_bodies() -> Iterator[tuple[str, bytes]]:
    """50 MB, declared up front and chunked (the daemon must stop reading at its limit)."""
    body = b"{" + b" " * (BIG_BODY - 2) + b"}"
    yield "big-body", request("POST", "/v1/projects", body)
    chunk = b"x" * (1024 * 1024)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(BIG_BODY // len(chunk)))
    yield "big-body", (b"POST /v1/projects HTTP/1.1\r\nHost: m\r\nConnection: close\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
    yield "big-body", request("PUT", f"/v1/projects/{PROJECT}", body)


def store_fingerprint(db: Path) -> dict[str, str]:
    """A digest of every row of the store's tables, read-only beside the running daemon."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        out = {}
        for table in STORE_TABLES:
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            out[table] = f"{len(rows)} rows " + hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
        return out
    finally:
        conn.close()


def api_view(daemon: Daemon) -> dict:
    """What the API says of the project, its versions and services, the queue and the events."""
    import httpx

    paths = ["/v1/projects", f"/v1/projects/{PROJECT}/versions", f"/v1/projects/{PROJECT}/services",
             "/v1/queue?limit=10000", "/v1/events"]
    with httpx.Client(transport=httpx.HTTPTransport(uds=daemon.socket), base_url="http://m", timeout=30) as c:
        return {path: (r.status_code, r.json()) for path in paths for r in [c.get(path)]}


def quiet(daemon: Daemon) -> bool:
    """Converged and idle: every instance running, no task queued or active."""
    tasks = daemon.api("/v1/queue?state=queued,active")
    return not tasks and len(daemon.running(SERVICE)) == 2


async def abuse(path: str, scale: int, table: list[tuple[str, str]], real: dict[str, str], tally: Tally) -> None:
    batch = [*route_abuse(table, real), *name_abuse(), *malformed_abuse()] * scale
    limiter = trio.CapacityLimiter(4)

    async def one(kind: str, raw: bytes, pace: float = 0.0) -> None:
        try:
            answer = await exchange(path, raw, pace)
        except OSError as exc:  # could not even connect
            tally.failures.append(f"{kind}: connect failed: {exc}")
            return
        tally.record(kind, raw[:200].decode("latin-1"), answer)

    async def limited(kind: str, raw: bytes) -> None:
        async with limiter:
            await one(kind, raw)

    async def crowd(n: int) -> None:
        """n connections open at once, each then asks for a project that is not there."""
        streams: list[trio.SocketStream] = []
        try:
            for _ in range(n):
                try:
                    streams.append(await trio.open_unix_socket(path))
                except OSError as exc:
                    tally.failures.append(f"crowd: connect {len(streams) + 1} of {n} failed: {exc}")
            async with trio.open_nursery() as nursery:
                for i, stream in enumerate(streams):
                    nursery.start_soon(crowd_one, stream, i)
        finally:
            for stream in streams:
                await stream.aclose()

    async def crowds() -> None:
        """Waves of CROWD, one after another: the waves grow with ``scale`` in number, not in
        size, since past the daemon's connection cap (1,024) a newcomer, project list too, is
        rightly told to come back."""
        for _ in range(scale):
            await crowd(CROWD)

    async def crowd_one(stream: trio.SocketStream, i: int) -> None:
        data = bytearray()
        with trio.move_on_after(ANSWER_TIMEOUT) as waited:
            try:
                await stream.send_all(request("GET", f"/v1/projects/crowd-{i}"))
                while not response_complete(data) and (chunk := await stream.receive_some(65536)):
                    data += chunk
            except (trio.BrokenResourceError, OSError):
                pass
        tally.record("crowd", f"crowd {i}", None if waited.cancelled_caught else bytes(data))

    async def big() -> None:
        """The 50 MB bodies one after another, then bodies just under the daemon's limit, many
        at once: what the daemon holds of them together must stay bounded, and parsing them
        must not stall everyone else."""
        for _ in range(scale):
            for kind, raw in big_bodies():
                await one(kind, raw)
        under = request("POST", "/v1/projects", b"{" + b" " * (Limits().max_body - 2) + b"}")
        async with trio.open_nursery() as nursery:
            for _ in range(BIG_AT_ONCE * scale):
                nursery.start_soon(one, "big-bodies-at-once", under)

    async with trio.open_nursery() as nursery:
        for i in range(50 * scale):  # slowloris: a whole, tiny request, one byte a second
            nursery.start_soon(one, "slowloris", f"GET /s{i % 10} HTTP/1.1\r\nHost:m\r\n\r\n".encode(), 1.0)
        nursery.start_soon(crowds)
        nursery.start_soon(big)
        for kind, raw in batch:
            nursery.start_soon(limited, kind, raw)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def run(tmp: Path, scale: int = 1) -> dict:
    """Abuse a live daemon; return the figures, with ``failures`` naming whatever did not hold."""
    t0 = time.monotonic()
    daemon = Daemon(tmp).start()
    try:
        manifest = tmp / "abuse.yaml"
        manifest.write_text(MANIFEST)
        daemon.cli("project", "add", PROJECT, str(manifest), "--wait")
        wait_until(lambda: quiet(daemon), timeout=60, what="the project to settle")
        version = daemon.api(f"/v1/projects/{PROJECT}/versions")[0]["id"]
        task = daemon.api("/v1/queue")[0]["id"]
        instance = daemon.api(f"/v1/projects/{PROJECT}/instances")[0]["id"]
        real = {"project": PROJECT, "service": SERVICE, "version": version, "instance": instance,
                "task": task, "action": "start",
                "delivery": "0" * 32}  # no webhooks in the project: a redelivery of it is a 404 that changes nothing
        db = daemon.state_dir / "mariposa.db"
        before, before_api = store_fingerprint(db), api_view(daemon)

        assert daemon.proc is not None
        pid = daemon.proc.pid
        sampler = subprocess.Popen([sys.executable, "-m", "tests.faults.sampler", daemon.socket, str(pid)],
                                   cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        tally = Tally()
        time.sleep(BASELINE)
        t_abuse = time.monotonic()
        trio.run(abuse, daemon.socket, scale, route_table(), real, tally)
        t_end = time.monotonic()
        samples = json.loads(sampler.communicate(timeout=60)[0])

        failures = list(tally.failures)
        if daemon.proc.poll() is not None:
            failures.append(f"the daemon exited with {daemon.proc.returncode}")
        else:
            daemon.api("/v1/ping")
            after, after_api = store_fingerprint(db), api_view(daemon)
            failures += [f"store table {t} changed: {before[t]} -> {after[t]}" for t in before if before[t] != after[t]]
            failures += [f"API view {k} changed" for k in before_api if before_api[k] != after_api[k]]
        failures += [f"project list: {e}" for e in samples["errors"]]
        rss = samples["rss_mb"]
        idle = [ms for t, ms in zip(samples["t"], samples["latency_ms"], strict=True) if t < t_abuse]
        latency = [ms for t, ms in zip(samples["t"], samples["latency_ms"], strict=True) if t_abuse <= t <= t_end]
        return {
            "requests": sum(tally.kinds.values()), "by_kind": dict(sorted(tally.kinds.items())),
            "4xx": sum(n for s, n in tally.statuses.items() if 400 <= s < 500),
            "5xx": sum(n for s, n in tally.statuses.items() if s >= 500), "busy_503": tally.busy,
            "hangups": tally.hangups, "statuses": dict(sorted(tally.statuses.items())),
            "list_samples": len(latency), "list_max_ms": max(latency, default=0.0),
            "list_p95_ms": percentile(latency, 95), "list_idle_p95_ms": percentile(idle, 95),
            "rss_max_mb": max(rss, default=0.0),
            "abuse_seconds": round(t_end - t_abuse, 1), "seconds": round(time.monotonic() - t0, 1),
            "failures": failures,
        }
    finally:
        daemon.cleanup()
