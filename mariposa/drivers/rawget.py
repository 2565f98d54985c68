"""One HTTP/1.0 GET whose body is read raw, in large pieces, until the server closes it: how
the Docker driver reads log streams.

Why not httpx here (every other call uses it): the Engine answers an HTTP/1.1 log request with
one chunk per log message, and httpcore and h11 handle each chunk as an event of its own. On the
2-core CI machine that cost about 0.35 ms a line: ``--tail 1000`` of 10 instances took 3.5 s in
the driver alone, where ``docker logs`` takes 0.2 s an instance. Asked in HTTP/1.0, the Engine
(Go's net/http) sends the body unchunked and closes the connection at its end, so one read
brings hundreds of lines and framing is the Engine's own 8-byte headers, parsed in bulk.
Each stream is its own connection, so a follower never holds a pooled one that the
reconciler's calls need.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable

import trio

READ_SIZE = 65536
MAX_HEAD = 64 * 1024  # a status line and headers longer than this are not an Engine's
MAX_ERROR_BODY = 64 * 1024


class BadStatus(Exception):
    """The server answered with an error status; ``message`` is its JSON ``message`` or text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class BrokenResponse(Exception):
    """The server's answer was not HTTP, or the connection broke before the headers ended."""


Connect = Callable[[], Awaitable[trio.abc.Stream]]


async def get(connect: Connect, target: str, *, host: str = "docker",
              read_timeout: float | None = None) -> AsyncGenerator[bytes | bytearray, None]:
    """The body of ``GET target`` as it comes. Raises ``BadStatus`` (before yielding anything)
    for a status of 400 or more, ``BrokenResponse`` for an answer that is not HTTP, and
    ``trio.TooSlowError`` when a read waits longer than ``read_timeout``; ``OSError`` and trio's
    resource errors pass through. Closing the generator closes the connection."""
    stream = await connect()
    try:
        await stream.send_all(f"GET {target} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mariposa\r\n\r\n".encode())
        head = bytearray()
        while (end := head.find(b"\r\n\r\n")) < 0:
            chunk = await _read(stream, read_timeout)
            if not chunk:
                raise BrokenResponse("the connection closed before the response's headers ended")
            head += chunk
            if len(head) > MAX_HEAD and head.find(b"\r\n\r\n") < 0:
                raise BrokenResponse("response headers too long")
        status = _status(bytes(head[:end]))
        rest = bytes(head[end + 4:])
        if status >= 400:
            body = bytearray(rest)
            while len(body) < MAX_ERROR_BODY and (chunk := await _read(stream, read_timeout)):
                body += chunk
            raise BadStatus(status, _message(bytes(body)))
        if rest:
            yield rest
        while chunk := await _read(stream, read_timeout):
            yield chunk
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _read(stream: trio.abc.Stream, timeout: float | None) -> bytes | bytearray:
    if timeout is None:
        return await stream.receive_some(READ_SIZE)
    with trio.fail_after(timeout):
        return await stream.receive_some(READ_SIZE)


def _status(head: bytes) -> int:
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise BrokenResponse(f"not an HTTP response: {line[:80]!r}")
    return int(parts[1])


def _message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500] or "(no message)"
    return str(data.get("message") or text)[:500] if isinstance(data, dict) else text[:500]
