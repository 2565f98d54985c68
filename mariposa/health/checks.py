"""One health probe: ``run_check(check, instance) -> CheckResult``.

The daemon runs about a thousand of these a second on a small host, so the HTTP probe is a
few dozen lines straight on a non-blocking socket rather than httpx (or even trio's
``SocketStream``): one request, headers read into one buffer, the status line parsed, and the
body read only when the check asks for a substring. On this project's 2-core reference host a
plain probe costs less than half the CPU it does through ``open_tcp_stream`` and ``SocketStream``.

Every failure of the target is a ``CheckResult(ok=False)`` with a detail short enough for a
table cell; deadlines are trio cancel scopes; a cancel from outside propagates untouched.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

import attrs
import trio

from mariposa.clock import wall_clock
from mariposa.model import HealthCheck, Instance

ExecFn = Callable[[Instance, list[str], float, str | None], Awaitable[tuple[int, bytes]]]

HEADER_CAP = 16 * 1024
BODY_CAP = 64 * 1024
OUTPUT_EXCERPT = 200

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
    errno.EADDRNOTAVAIL: "address not available",
}


@attrs.frozen
class CheckResult:
    ok: bool
    detail: str  # short, for people: "HTTP 200 in 3 ms", "connection refused"
    duration: float  # seconds
    at: float  # when the check finished, by the clock the caller gave (epoch seconds)


class _Failed(Exception):
    """A probe's verdict on a bad answer, turned into a result in one place."""


@functools.cache
def _ssl_context(verify: bool) -> ssl.SSLContext:
    """Loading the CA bundle takes milliseconds: two contexts for the whole process."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@functools.lru_cache(maxsize=4096)
def _numeric_family(host: str) -> int | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return family
        except OSError:
            pass
    return None


# Set by the health monitor in the probe loop of an instance whose address is not on the host's
# networks (a Swarm task on its overlay: swarm/netns.py): it makes the probe's socket.
SOCKETS: contextvars.ContextVar[Callable[[int], Awaitable[socket.socket]] | None] = contextvars.ContextVar(
    "mariposa_probe_sockets", default=None)


async def _connect_one(family: int, sockaddr: tuple) -> socket.socket:
    make = SOCKETS.get()
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK) if make is None else await make(family)
    try:
        err = sock.connect_ex(sockaddr)
        if err == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        else:
            await trio.lowlevel.checkpoint()
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket. Addresses are tried in turn rather than raced the way
    ``open_tcp_stream`` does: a probe has one deadline for everything, and the race's nursery
    and tasks cost a third of a probe."""
    family = _numeric_family(host)
    if family is not None:
        return await _connect_one(family, (host, port))
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"no address for {host}")
    for family, _, _, _, sockaddr in infos:
        try:
            return await _connect_one(family, sockaddr)
        except OSError as exc:
            error = exc
    raise error


class _Conn:
    """The three stream calls a plain HTTP probe makes, straight on the socket: about half the
    checkpoints and bookkeeping of ``trio.SocketStream``, whose conflict detectors and
    double checkpoints per call are most of a probe's CPU at a thousand probes a second."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)

    async def receive_some(self, max_bytes: int) -> bytes:
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                return self.sock.recv(max_bytes)
            except BlockingIOError:
                pass


_Stream = _Conn | trio.SSLStream


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _one_line(data: bytes, limit: int = OUTPUT_EXCERPT) -> str:
    return " ".join(data.decode("utf-8", "replace").split())[:limit]


def _describe(exc: BaseException, host: str) -> str:
    """The root cause of a connection error in a few words."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__  # SSLStream wraps the SSLError or OSError that broke it
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason
        return f"TLS: certificate verify failed: {why}" if why else "TLS: certificate verify failed"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {(exc.reason or str(exc)).replace('_', ' ').lower()}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[exc.errno]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, trio.BrokenResourceError):
        return "connection broken"
    return str(exc) or type(exc).__name__


def _dechunk(data: bytes | bytearray) -> bytes:
    """Chunked transfer coding, tolerant of a body cut short by the cap."""
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            break
        try:
            size = int(data[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            break
        if size <= 0:
            break
        start = eol + 2
        out += data[start : start + size]
        pos = start + size + 2
        if pos >= len(data):
            break
    return bytes(out)


def _status_code(head: bytes) -> int:
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(None, 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and len(parts[1]) == 3 and parts[1].isdigit():
        return int(parts[1])
    raise _Failed(f"bad status line: {_one_line(line, 60)!r}" if line.strip() else "bad status line")


def _framing(head: bytes) -> tuple[int | None, bool]:
    """(Content-Length, chunked) from the header block."""
    length, chunked = None, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                pass
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


async def _read_head(stream: _Stream) -> tuple[bytes, bytearray]:
    buf = bytearray()
    while True:
        chunk = await stream.receive_some(HEADER_CAP)
        if not chunk:
            raise _Failed("empty response" if not buf else "connection closed mid-headers")
        start = max(0, len(buf) - 3)
        buf += chunk
        end = buf.find(b"\r\n\r\n", start)
        if end >= 0:
            return bytes(buf[:end]), buf[end + 4 :]
        if len(buf) > HEADER_CAP:
            raise _Failed(f"response headers over {HEADER_CAP // 1024} KiB")


async def _read_body(stream: _Stream, body: bytearray, head: bytes, needle: bytes) -> bool:
    """Whether ``needle`` is in the first BODY_CAP bytes; stops reading as soon as it is."""
    length, chunked = _framing(head)
    limit = BODY_CAP if length is None else min(length, BODY_CAP)
    if not chunked and body.find(needle, 0, limit) >= 0:
        return True
    while len(body) < limit:
        chunk = await stream.receive_some(limit - len(body))
        if not chunk:
            break
        start = max(0, len(body) - len(needle) + 1)
        body += chunk
        if not chunked and body.find(needle, start) >= 0:
            return True
    data = _dechunk(body) if chunked else body
    return needle in data[:limit]


def _request(check: HealthCheck, host: str, port: int, keep_alive: bool = False) -> bytes:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    close = "" if keep_alive else "Connection: close\r\n"
    return (
        f"{check.method} {check.path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mariposa-health\r\n{close}\r\n"
    ).encode("latin-1", "replace")


REUSE_FOR = 30.0  # seconds one connection serves a probe loop before a fresh one is made


@attrs.define
class KeepAlive:
    """One probe loop's HTTP connection, reused between polls.

    A fresh TCP connection per probe is most of a probe's cost (connect and close are a third
    of the daemon's CPU at a thousand probes a second), so plain-HTTP probes keep theirs open.
    It is dropped on any error, timeout or non-reusable answer, and replaced every
    ``REUSE_FOR`` seconds, so a server that stopped accepting new connections is noticed.
    """

    sock: socket.socket | None = None
    target: tuple[str, int] | None = None
    since: float = 0.0

    def take(self, host: str, port: int) -> socket.socket | None:
        if self.sock is not None and (self.target != (host, port) or time.monotonic() - self.since > REUSE_FOR):
            self.drop()
        return self.sock

    def keep(self, sock: socket.socket, host: str, port: int) -> None:
        if self.sock is not sock:
            self.drop()
            self.sock, self.target, self.since = sock, (host, port), time.monotonic()

    def drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


async def _read_whole_body(stream: _Conn, body: bytearray, head: bytes) -> bytes | None:
    """The complete body when its framing lets the connection be reused, else None."""
    length, chunked = _framing(head)
    if chunked:
        while not body.endswith(b"0\r\n\r\n"):
            if len(body) > BODY_CAP:
                return None
            chunk = await stream.receive_some(BODY_CAP)
            if not chunk:
                return None
            body += chunk
        return _dechunk(bytes(body))
    if length is None or length > BODY_CAP:
        return None
    while len(body) < length:
        chunk = await stream.receive_some(length - len(body))
        if not chunk:
            return None
        body += chunk
    return bytes(body[:length])


async def _http_kept(check: HealthCheck, host: str, port: int, t0: float, keep: KeepAlive) -> str:
    """Plain HTTP on the loop's kept connection (or a new one), reusable when the answer allows."""
    for attempt in (0, 1):
        sock = keep.take(host, port)
        reused = sock is not None
        if sock is None:
            sock = await _connect(host, port)
        stream = _Conn(sock)
        try:
            await stream.send_all(_request(check, host, port, keep_alive=True))
            head, rest = await _read_head(stream)
        except (_Failed, OSError, trio.BrokenResourceError) as exc:
            keep.drop() if reused else sock.close()
            if reused and attempt == 0 and (not isinstance(exc, _Failed) or "empty response" in str(exc)):
                continue  # the server closed an idle kept connection: once more, fresh
            raise
        except BaseException:
            keep.drop() if reused else sock.close()
            raise
        try:
            code = _status_code(head)
            body = await _read_whole_body(stream, rest, head)
            reusable = body is not None and b"connection: close" not in head.lower()
        except BaseException:
            keep.drop() if reused else sock.close()
            raise
        if reusable:
            keep.keep(sock, host, port)
        else:
            keep.drop() if reused else sock.close()
        lo, hi = check.status
        if not lo <= code <= hi:
            expected = str(lo) if lo == hi else f"{lo}-{hi}"
            raise _Failed(f"HTTP {code} (expected {expected})")
        if check.body and (body is None or check.body.encode() not in body[:BODY_CAP]):
            raise _Failed(f"body lacks {check.body!r}")
        return f"HTTP {code} in {(time.perf_counter() - t0) * 1000:.0f} ms"
    raise _Failed("connection closed")  # not reached: the second attempt returns or raises


async def _http(check: HealthCheck, host: str, port: int, t0: float) -> str:
    sock = await _connect(host, port)
    stream: _Stream = _Conn(sock)
    try:
        if check.type == "https":
            stream = trio.SSLStream(
                trio.SocketStream(trio.socket.from_stdlib_socket(sock)),
                _ssl_context(check.tls_verify),
                server_hostname=host,
                https_compatible=True,
            )
        await stream.send_all(_request(check, host, port))
        head, rest = await _read_head(stream)
        code = _status_code(head)
        lo, hi = check.status
        if not lo <= code <= hi:
            expected = str(lo) if lo == hi else f"{lo}-{hi}"
            raise _Failed(f"HTTP {code} (expected {expected})")
        if check.body and not await _read_body(stream, rest, head, check.body.encode()):
            raise _Failed(f"body lacks {check.body!r}")
    finally:
        if isinstance(stream, _Conn):
            stream.sock.close()
        else:  # forcefully: no waiting on a TLS close_notify from a peer we are done with
            await trio.aclose_forcefully(stream)
    return f"HTTP {code} in {(time.perf_counter() - t0) * 1000:.0f} ms"


async def _tcp(host: str, port: int, t0: float) -> str:
    (await _connect(host, port)).close()
    return f"connected in {(time.perf_counter() - t0) * 1000:.0f} ms"


async def _command(check: HealthCheck, inst: Instance, exec_fn: ExecFn | None, t0: float) -> str:
    if exec_fn is None:
        raise _Failed("command checks need a driver with exec")
    try:
        code, output = await exec_fn(inst, list(check.command or ()), check.timeout, check.user)
    except trio.TooSlowError:
        raise _Failed(f"timed out after {_seconds(check.timeout)}") from None
    except Exception as exc:  # DriverError and anything else the runtime throws: a failed check
        raise _Failed(str(exc) or type(exc).__name__) from None
    excerpt = _one_line(output)
    if code != 0:
        raise _Failed(f"exit code {code}: {excerpt}" if excerpt else f"exit code {code}")
    return f"exit code 0 in {(time.perf_counter() - t0) * 1000:.0f} ms"


async def run_check(
    check: HealthCheck,
    inst: Instance,
    exec_fn: ExecFn | None = None,
    *,
    host: str | None = None,
    keep: KeepAlive | None = None,
    now: Callable[[], float] = wall_clock,
) -> CheckResult:
    """Probe ``inst`` once; ``host`` overrides the instance's address (e.g. a published port);
    ``keep`` lets a probe loop reuse its HTTP connection between polls; ``now`` stamps the
    result (the daemon passes its clock: the grace period is judged by it)."""
    t0 = time.perf_counter()
    ok, detail = False, ""
    with trio.move_on_after(check.timeout) as scope:
        try:
            if check.type == "command":
                detail = await _command(check, inst, exec_fn, t0)
            elif check.type in ("http", "https", "tcp"):
                target = host or inst.address
                if not target:
                    raise _Failed("instance has no address")
                port = check.target_port
                if check.type == "tcp":
                    detail = await _tcp(target, port, t0)
                elif check.type == "http" and keep is not None:
                    detail = await _http_kept(check, target, port, t0, keep)
                else:
                    detail = await _http(check, target, port, t0)
            else:
                raise _Failed(f"unknown check type {check.type!r}")
            ok = True
        except _Failed as exc:
            detail = str(exc)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            detail = _describe(exc, host or inst.address or "")
    if scope.cancelled_caught:
        ok, detail = False, f"timed out after {_seconds(check.timeout)}"
    return CheckResult(ok=ok, detail=detail, duration=time.perf_counter() - t0, at=now())
