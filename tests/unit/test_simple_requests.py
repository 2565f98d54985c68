"""Simple requests read and answered without h11 (api/simple.py): the same bytes as h11 writes,
on the same connection as h11's requests, and anything not plainly simple left to h11."""

from __future__ import annotations

import pytest
import trio

from mariposa.api import simple
from mariposa.api.http import Request, Response, Router, bind_unix_socket, serve
from tests.unit.test_http_server import LIMITS, connect, exchange


def router() -> Router:
    r = Router()

    async def ping(req: Request):
        return {"ok": True, "query": req.query, "caller": req.caller.uid is not None}

    async def echo(req: Request):
        return req.json()

    async def lines(req: Request):
        async def stream():
            for i in range(3):
                yield b'{"line": %d}\n' % i
                yield b""  # nothing to send: no chunk (an empty one would end the body)

        return Response(200, stream=stream())

    async def missing(req: Request):
        from mariposa.errors import NotFound

        raise NotFound(f"no project '{req.params['name']}'")

    r.add("GET", "/v1/ping", ping)
    r.add("POST", "/v1/echo", echo)
    r.add("GET", "/v1/lines", lines)
    r.add("GET", "/v1/projects/{name}", missing)
    return r


@pytest.fixture
async def server(tmp_path, nursery):
    path = str(tmp_path / "s.sock")
    await nursery.start(serve, router(), bind_unix_socket(path, 0o600), lambda caller: True, LIMITS)
    return path


def request(target: str, method: str = "GET", close: bool = True, extra: str = "") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: m\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}"
            f"{extra}\r\n").encode()


ASKED = [
    request("/v1/ping"),
    request("/v1/ping?a=1&a=2&b=%20x", extra="Accept: */*\r\nUser-Agent: x/1 (y)\r\n"),
    request("/v1/ping", "HEAD"),
    request("/v1/projects/crowd-1"),
    request("/v1/projects/%00..%2F"),
    request("/v1/nowhere"),
    request("/v1/ping", "DELETE"),
    request("/v1/echo", "POST"),
    request("/v1/lines"),
    request("/v1/lines", "HEAD"),
    request("/v1/ping", extra="Connection: keep-alive, Close\r\n"),
]


@pytest.mark.parametrize("raw", ASKED)
async def test_the_answer_is_what_h11_writes(server, raw, monkeypatch):
    taken = []
    parse = simple.parse
    monkeypatch.setattr(simple, "parse", lambda data: taken.append(parse(data)) or taken[-1])
    fast = await exchange(server, raw)
    assert taken and taken[0] is not None  # simple.py read it
    monkeypatch.setattr(simple, "parse", lambda data: None)
    assert fast == await exchange(server, raw)  # byte for byte what h11 answered


async def read_answer(stream: trio.SocketStream) -> bytes:
    """One answer with a Content-Length, whole."""
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
                data.split(b"content-length: ")[1].split(b"\r\n")[0]):
            data += await stream.receive_some(65536)
    return data


async def test_simple_and_h11_requests_take_turns_on_one_kept_alive_connection(server):
    stream = await connect(server)
    asked = [request("/v1/ping", close=False),
             b"POST /v1/echo HTTP/1.1\r\nHost: m\r\nContent-Length: 8\r\n\r\n{\"a\": 1}",
             request("/v1/ping?x=1", close=False),
             request("/v1/projects/p", close=False)]
    answers = []
    for raw in asked:
        await stream.send_all(raw)
        answers.append(await read_answer(stream))
    assert [a.split(b" ")[1] for a in answers] == [b"200", b"200", b"200", b"404"]
    assert answers[1].endswith(b'{"a": 1}') and b'"query": {"x": "1"}' in answers[2]
    assert b"no project 'p'" in answers[3] and not any(b"onnection: close" in a for a in answers)
    await stream.send_all(request("/v1/ping"))  # then one that closes
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close\r\n" in data
    await stream.aclose()


@pytest.mark.parametrize("raw", [
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\n",  # not whole yet
    b"GET /v1/ping HTTP/1.1\r\n\r\n",  # no Host
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\nHost: n\r\n\r\n",
    b"GET /v1/ping HTTP/1.0\r\nHost: m\r\n\r\n",
    b"GET http://m/v1/ping HTTP/1.1\r\nHost: m\r\n\r\n",
    b"get /v1/ping HTTP/1.1\r\nHost: m\r\n\r\n",
    b"PATCH /v1/ping HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n",
    b"POST /v1/echo HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\nExpect: 100-continue\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\nX: a\r\n b\r\n\r\n",  # a folded line
    b"GET /v1/ping HTTP/1.1\nHost: m\n\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\n\r\nGET /v1/ping HTTP/1.1\r\nHost: m\r\n\r\n",  # pipelined
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\n\r\nxyz",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\x00\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost : m\r\n\r\n",
    b"GET /v1/p\x7fing HTTP/1.1\r\nHost: m\r\n\r\n",
    b"GET /v1/ping HTTP/1.1\r\nHost: m\r\nX: " + b"y" * 9000 + b"\r\n\r\n",
])
def test_what_is_not_plainly_simple_is_left_to_h11(raw):
    assert simple.parse(raw) is None


def test_a_simple_request_is_read_as_h11_reads_it():
    assert simple.parse(b"HEAD /v1/x?y=%20 HTTP/1.1\r\nhOsT:m\r\nConnection:\tfoo, CLOSE \r\nX-E:\r\n\r\n") == (
        b"HEAD", b"/v1/x?y=%20", True, None)
    assert simple.parse(b"DELETE / HTTP/1.1\r\nHost: m\r\n\r\n") == (b"DELETE", b"/", False, None)
