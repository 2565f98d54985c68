"""A small HTTP/1.1 server for the control socket, on h11 and trio.

We keep the server in our hands (rather than an ASGI stack) because the control API needs the
caller's uid/gid from the unix socket's peer credentials, which ASGI servers do not pass through,
and because it keeps the daemon to one event loop and one nursery.

A daemon that keeps other services alive must not be knocked over by its own clients, so every
connection is bounded: a body size, a time to send a whole request, an idle time between
requests on a kept-alive connection, and a cap on connections at once. A connection that breaks
any of them is answered (when it can still be) and closed; no client's mistake ever leaves
``serve_connection``, so none can end the server's nursery.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import structlog
import trio

from mariposa.api import simple
from mariposa.api.router import Request as Request
from mariposa.api.router import Response as Response
from mariposa.api.router import Router as Router
from mariposa.control.caller import Caller
from mariposa.converge.backoff import Backoff
from mariposa.errors import (
    BadRequest,
    Busy,
    Forbidden,
    MariposaError,
    PayloadTooLarge,
    RequestTimeout,
    TooManyFailures,
    Unauthorized,
    translate,
)

log = structlog.get_logger()

Admits = Callable[[Caller], bool]
BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_JSON = json.JSONEncoder(default=str, allow_nan=False)  # one encoder: json.dumps(default=...) makes one a call
ACCEPT_PAUSE = Backoff(base=0.1, factor=2.0, cap=2.0)  # out of descriptors: 0.1 s doubling to 2 s


@attrs.frozen
class Limits:
    max_body: int = 16 * 1024 * 1024
    max_bodies: int = 16 * 1024 * 1024  # held at once, over all connections: parsing one costs ~3x its size
    small_body: int = 64 * 1024  # not held against max_bodies: a 'scale' or a 'stop' never waits on uploads
    request_timeout: float = 30.0  # from the first byte of a request to its end
    idle_timeout: float = 60.0  # a kept-alive connection waiting for its next request
    max_connections: int = 1024


def peer_caller(sock: socket.socket | trio.socket.SocketType) -> Caller:
    """Who is at the other end, as the kernel says (``SO_PEERCRED``: a syscall that never waits).
    Without credentials the caller has no uid, and every policy refuses it."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return Caller(transport="unix")
    pid, uid, gid = struct.unpack("3i", raw)
    return Caller.from_peer(pid, uid, gid)


# Linux 4.13+; 59 where the architecture takes the generic socket options (the others, and other
# systems, read the groups from /proc in a worker thread as before)
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59 if sys.platform == "linux" and platform.machine() in (
    "x86_64", "aarch64", "i686", "armv7l", "riscv64") else None)


def peer_groups(sock: socket.socket | trio.socket.SocketType) -> frozenset[int] | None:
    """The peer's supplementary groups as the kernel recorded them when it connected
    (``SO_PEERGROUPS``): a syscall that never waits, where reading /proc/PID/status took a
    worker thread per connection (~0.2 ms of CPU here), and no race with the pid's reuse. None
    when the kernel cannot say, or not in the 1 KiB Python reads at most (over 256 groups)."""
    if SO_PEERGROUPS is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
    except OSError:  # ERANGE: more groups than fit; ENOPROTOOPT: a kernel before 4.13
        return None
    return frozenset(struct.unpack(f"{len(raw) // 4}I", raw[:len(raw) // 4 * 4]))


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _encode(resp: Response) -> bytes:
    """The body's bytes: JSON, or text as it is when the response has a content type of its own."""
    if resp.content_type is not None:
        return resp.body.encode() if isinstance(resp.body, str) else bytes(resp.body or b"")
    return _JSON.encode(resp.body).encode()


def _error(exc: MariposaError) -> Response:
    if isinstance(exc, TooManyFailures):
        return Response(exc.status, exc.to_json(), headers=(("retry-after", str(exc.retry_after)),))
    if isinstance(exc, Unauthorized):
        return Response(exc.status, exc.to_json(), headers=(("www-authenticate", 'Bearer realm="mariposa"'),))
    return Response(exc.status, exc.to_json())


def _authorization(request: h11.Request) -> bytes | None:
    values = [v for k, v in request.headers if k == b"authorization"]
    return values[0] if len(values) == 1 else None


def _has_body(request: h11.Request) -> bool:
    headers = dict(request.headers)
    return b"transfer-encoding" in headers or headers.get(b"content-length", b"0").strip() not in (b"0", b"")


class BodyBudget:
    """Bytes of request bodies held at once, over every connection of one server. Each body is
    bounded by ``max_body``, but a thousand connections each near it would be gigabytes: past
    ``max_bodies`` a newcomer is told to come back (503) rather than the daemon swelling."""

    def __init__(self, total: int):
        self.total, self.used = total, 0

    def take(self, n: int) -> bool:
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class Connection:
    """One client connection: h11 in, the router, h11 out, within the limits."""

    def __init__(self, router: Router, stream: trio.SocketStream, caller: Caller, limits: Limits,
                 budget: BodyBudget | None = None):
        self.router, self.stream, self.caller, self.limits = router, stream, caller, limits
        self.budget = budget or BodyBudget(limits.max_bodies)
        self.held = 0  # of the budget, by the request being read or served
        self.conn = h11.Connection(h11.SERVER)
        self.simple: simple.Head | None = None  # this cycle's request, when simple.py read it (not h11)

    def _hold(self, size: int) -> None:
        """Hold the request's body, ``size`` bytes so far, against the budget. Small bodies are
        free (their memory is bounded by max_connections x small_body), so a client that holds
        the budget with a slow upload stops other uploads, never a 'scale' or a 'stop'."""
        if size <= self.limits.small_body or size <= self.held:
            return
        if not self.budget.take(size - self.held):
            raise Busy("the daemon is reading other large requests; try again")
        self.held = size

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0

    async def send(self, resp: Response, head_only: bool = False, close: bool = False) -> None:
        """Write ``resp``; ``close``: say ``Connection: close`` (the connection ends after it)."""
        body = b"" if resp.streamed else _encode(resp)
        if self.simple is not None:
            await self._send_simple(resp, body, head_only, self.simple.close or close)
            return
        if resp.streamed:
            headers = [("content-type", resp.content_type or "application/x-ndjson"), ("transfer-encoding", "chunked")]
        else:
            headers = [("content-type", resp.content_type or "application/json"), ("content-length", str(len(body)))]
        headers += resp.headers
        if close:
            headers.append(("connection", "close"))
        head = self.conn.send(h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status)))
        if resp.streamed and not head_only:
            await self.stream.send_all(head)
            if not await self._stream_body(resp):
                return  # the client hung up: nothing more to say
            await self.stream.send_all(self.conn.send(h11.EndOfMessage()))
            return
        # One write for a whole answer: a system call costs 0.2 ms here, a third of a small request.
        whole = [head, self.conn.send(h11.Data(data=body)) if body and not head_only else b"",
                 self.conn.send(h11.EndOfMessage())]
        await self.stream.send_all(b"".join(whole))

    async def _send_simple(self, resp: Response, body: bytes, head_only: bool, close: bool) -> None:
        """What ``send`` writes through h11, written by simple.py, for a request it read."""
        if resp.streamed:
            # spelled as h11 spells it
            headers = [(b"content-type", (resp.content_type or "application/x-ndjson").encode()),
                       (b"Transfer-Encoding", b"chunked")]
        else:
            headers = [(b"content-type", (resp.content_type or "application/json").encode()),
                       (b"content-length", b"%d" % len(body))]
        headers += [(k.encode(), v.encode()) for k, v in resp.headers]
        head = simple.response_head(resp.status, _reason(resp.status), headers, close)
        if resp.streamed and not head_only:
            await self.stream.send_all(head)
            if await self._stream_body(resp, simple.chunk):
                await self.stream.send_all(simple.LAST_CHUNK)
            return
        await self.stream.send_all(head if head_only else head + body)

    def _h11_chunk(self, chunk: bytes) -> bytes:
        return self.conn.send(h11.Data(data=chunk))

    async def _stream_body(self, resp: Response, frame: Callable[[bytes], bytes] | None = None) -> bool:
        """Write a streamed body while watching the connection: a follower waits for lines that
        may never come, so a client that hangs up (end of file on the socket) cancels the stream
        at once, with every task it had, instead of when the next line would fail to send.
        False when the client hung up."""
        framed = frame or self._h11_chunk

        async def write(chunk: bytes) -> None:
            await self.stream.send_all(framed(chunk))

        async def iterate(write) -> None:
            assert resp.stream is not None
            async for chunk in resp.stream:
                await write(chunk)

        produce = resp.produce or iterate
        hung_up = False

        async def watch(scope: trio.CancelScope) -> None:
            nonlocal hung_up
            try:
                while await self.stream.receive_some(4096):
                    pass  # nothing more is expected from a client that asked for a stream
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                pass
            hung_up = True
            scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, nursery.cancel_scope)
                await produce(write)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            hung_up = True  # it hung up while we wrote
        return not hung_up

    async def next_request(self) -> tuple[h11.Request | simple.Head, bytes] | None:
        """The next whole request; None when the client is done, or idle for too long. The
        idle timeout runs until a request's first byte, the request timeout from then on (a
        client sending its headers a byte at a time gets no more than the request timeout).
        A simple request read whole at the start of a cycle is simple.py's, not h11's."""
        request, body, begun = None, bytearray(), False
        deadline = trio.current_time() + self.limits.idle_timeout
        self.simple = None
        may_be_simple = self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                with trio.move_on_at(deadline):
                    data = await self.stream.receive_some(65536)
                    if data and not begun:
                        begun, deadline = True, trio.current_time() + self.limits.request_timeout
                    if may_be_simple:
                        may_be_simple = False
                        self.simple = simple.parse(data)
                        if self.simple is not None:
                            self.on_head(self.simple.authorization, False, self.simple.target)
                            return self.simple, b""
                    self.conn.receive_data(data)
                    continue
                if request is None:
                    return None  # idle (or never finished its headers): hang up quietly
                raise RequestTimeout(f"the request was not complete within {self.limits.request_timeout:g}s")
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                request = event
                self.on_head(_authorization(event), _has_body(event), event.target)  # before its body is read
                if not begun:  # pipelined: it was already in h11's buffer
                    begun, deadline = True, trio.current_time() + self.limits.request_timeout
                length = dict(event.headers).get(b"content-length")
                if length is not None and length.isdigit():
                    if int(length) > self.limits.max_body:
                        raise self._too_large()
                    self._hold(int(length))  # all of it at once: of several at once, some finish
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body:
                    raise self._too_large()
                self._hold(len(body))  # chunked: held as it comes
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)

    def on_head(self, authorization: bytes | None, has_body: bool, target: bytes) -> None:
        """A request's head has come, with its ``Authorization`` (None: none, or several): the
        remote listener's connection authenticates it here (api/remote.py), before its body is
        read or held, and raises to refuse it and close the connection. The control socket's
        callers are the kernel's."""

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body too large: the limit is {self.limits.max_body // (1024 * 1024)} MiB")

    def request_of(self, request: h11.Request | simple.Head, body: bytes) -> Request:
        try:
            target = urlsplit(request.target.decode("ascii"))
            query = {k: v[-1] for k, v in parse_qs(target.query).items()}
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"bad request target: {exc}") from None
        caller = self.caller
        if query.get("org"):  # -o ORG: every request may carry it; it narrows what the caller names and sees
            caller = attrs.evolve(caller, org=query.pop("org"))
        if isinstance(request, simple.Head):
            return Request(request.method.decode("ascii"), target.path, query, body, {}, caller)
        return Request(request.method.decode("ascii"), target.path, query, body, {}, caller,
                       headers=tuple(request.headers), query_string=target.query.encode("ascii"))

    async def serve(self) -> None:
        try:
            while await self.serve_one():
                if self.simple is None:  # h11 read it; after simple.py's, h11 is still idle
                    self.conn.start_next_cycle()
        finally:
            self.release()

    async def serve_one(self) -> bool:
        """One request and its answer (its body held against the budget until then); whether
        the connection goes on."""
        try:
            try:
                got = await self.next_request()
            except MariposaError as exc:  # too large, too slow or busy: answer, then hang up (the rest is unread)
                if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self.send(_error(exc), close=True)  # a kept-alive client must not send more
                return False
            if got is None:
                return False
            request, body = got
            head_only = request.method == b"HEAD"
            try:
                resp = await self.router.dispatch(self.request_of(request, body))
            except MariposaError as exc:
                resp = _error(exc)
            del body
            await self.send(resp, head_only)
            if self.simple is not None:
                return not resp.streamed and not self.simple.close
            return not resp.streamed and self.conn.our_state is not h11.MUST_CLOSE
        finally:
            self.release()


async def serve_connection(router: Router, stream: trio.SocketStream, admits: Admits,
                           limits: Limits = Limits(), budget: BodyBudget | None = None) -> None:
    """A caller the policy refuses everything is told so, and nothing else."""
    try:
        caller = peer_caller(stream.socket)
        if caller.needs_groups:
            groups = peer_groups(stream.socket)
            if groups is not None:
                caller = attrs.evolve(caller, groups=groups)
            else:
                caller = await trio.to_thread.run_sync(caller.with_groups)
        connection = Connection(router, stream, caller, limits, budget)
        if not admits(caller):
            log.warning("control socket: caller refused", uid=caller.uid, gid=caller.gid)
            with trio.move_on_after(1):
                await connection.send(_error(_refused(caller)))
            return
        await connection.serve()
    except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        return
    except Exception as exc:  # a stream that failed mid-way: its headers are gone, so hang up
        translate(exc, "serving a connection")
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _refused(caller: Caller) -> MariposaError:
    who = "a caller whose credentials the kernel did not give" if caller.uid is None else caller.author
    return Forbidden(f"permission denied: {who} is not root, the daemon's user or a member of the control "
                     "socket's group (socket_group in /etc/mariposa/mariposa.toml)")


def bind_unix_socket(path: str, mode: int = 0o660, group: int | None = None) -> trio.socket.SocketType:
    """Bind the control socket. The caller holds the state-dir lock, so a stale socket file left
    by a killed daemon can be replaced without stealing a live daemon's socket."""
    if os.path.exists(path):
        os.unlink(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock._sock.bind(path)  # type: ignore[attr-defined]  # bind() is async in trio; this is start-up
    finally:
        os.umask(old)
    if group is not None:
        os.chown(path, -1, group)
    os.chmod(path, mode)
    sock.listen(BACKLOG)
    return sock


async def serve(router: Router, sock, admits: Admits, limits: Limits = Limits(), *,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Accept connections for ever. Over ``max_connections`` a newcomer is told to come back
    (503) instead of starving the others; when the process runs out of descriptors, accepting
    pauses (0.1 s, doubling to 2 s) with one log line per episode, not one a tick."""
    listener = trio.SocketListener(sock)
    slots = trio.Semaphore(limits.max_connections)
    budget = BodyBudget(limits.max_bodies)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await serve_connection(router, stream, admits, limits, budget)
        finally:
            slots.release()

    async def turn_away(stream: trio.SocketStream) -> None:
        try:
            connection = Connection(router, stream, Caller(transport="unix"), limits)
            with trio.move_on_after(1):
                await connection.send(_error(Busy("too many connections; try again")))
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, h11.ProtocolError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    await accept_connections(listener, slots, handle, turn_away, "control socket", task_status)


async def serve_capped(listener: trio.SocketListener, limits: Limits,
                       connection: Callable[[trio.SocketStream, BodyBudget], Awaitable[None]], what: str,
                       task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A TCP listener of ours (triggers, metrics, the remote API) until cancelled: each stream to
    ``connection`` with the listener's shared body budget, within ``limits.max_connections``;
    a newcomer over the cap is hung up on (on a public port, answering it would cost more). A
    client's mistake ends its connection only; a bug is logged with an id, and hangs up too."""
    slots = trio.Semaphore(limits.max_connections)
    budget = BodyBudget(limits.max_bodies)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await connection(stream, budget)
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError):
            pass
        except Exception as exc:
            translate(exc, f"serving a connection of the {what}")
        finally:
            slots.release()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def hang_up(stream: trio.SocketStream) -> None:
        with trio.CancelScope(shield=True):
            await stream.aclose()

    async with listener:
        await accept_connections(listener, slots, handle, hang_up, what, task_status)


async def accept_connections(listener: trio.SocketListener, slots: trio.Semaphore,
                             handle: Callable[[trio.SocketStream], Awaitable[None]],
                             turn_away: Callable[[trio.SocketStream], Awaitable[None]], what: str,
                             task_status=trio.TASK_STATUS_IGNORED) -> None:
    """The accept loop of every listener of ours: a stream within the cap (``slots``, which
    ``handle`` releases) goes to ``handle``, one over it to ``turn_away``; out of descriptors,
    accepting pauses (0.1 s, doubling to 2 s) with one log line per episode, not one a tick; a
    connection aborted before it was accepted is passed over."""
    async with trio.open_nursery() as nursery:
        task_status.started()
        failures = 0
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                if exc.errno not in ACCEPT_ERRNOS:
                    raise
                if not failures:
                    log.error(f"{what}: out of file descriptors; pausing accepts", error=os.strerror(exc.errno))
                failures += 1
                await trio.sleep(ACCEPT_PAUSE.delay(failures))
                continue
            failures = 0
            if slots.value == 0:
                nursery.start_soon(turn_away, stream)
                continue
            slots.acquire_nowait()
            nursery.start_soon(handle, stream)
