"""The remote API: the control socket's router over TCP + TLS, for callers with a token.

Why h11 + ``trio.SSLStream`` + the standard library's ``ssl``, not hypercorn + starlette: the
socket's server (api/http.py ``Connection``: h11, its fast path for small requests, bounded
bodies, times and connections, streams that end when the client hangs up) is then the one code
path in front of the control layer for both transports. Only who the caller is differs: the
kernel says it on the socket, the token does here. An ASGI stack would have been a second server
with its own limits, streaming and error mapping to keep in step, and a second event loop
framework's ideas of cancellation in the daemon's one nursery.

Per request, ``Authorization: Bearer TOKEN`` is checked against the in-memory token book
(access/tokens.py) as soon as the head has come, before any body is read: a missing, wrong,
expired or revoked token gets 401. Failures are counted per address (triggers/limit.py's rule:
10 within a minute and the address gets 429 for a minute, right tokens included).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Container

import structlog
import trio

from mariposa.access.policy import REMOTE
from mariposa.access.tokens import TokenBook
from mariposa.api.http import BodyBudget, Connection, Limits, Request, Router, serve_capped
from mariposa.control.caller import Caller
from mariposa.errors import MariposaError, TooManyFailures, Unauthorized
from mariposa.triggers.limit import BLOCK, FailureLimit
from mariposa.ui.paths import is_dashboard

log = structlog.get_logger()

LIMITS = Limits(max_connections=512)  # the socket's, with fewer connections: the public side
HANDSHAKE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 1.0
BEARER = b"bearer "
# What a browser asks of any site on its own: answered 404 without a token, never counted as a
# failed token (ten in a minute would have refused the address's sign-ins and API calls)
BROWSER_ASKS = frozenset({b"/favicon.ico", b"/robots.txt", b"/apple-touch-icon.png"})


class Authenticator:
    """Token to caller, with the failure limit; one per listener."""

    def __init__(self, tokens: TokenBook, users: Callable[[], Container[str]], now: Callable[[], float],
                 failures: FailureLimit | None = None) -> None:
        self.tokens, self.users, self.now = tokens, users, now
        self.failures = failures or FailureLimit()

    def caller(self, authorization: bytes | None, address: str) -> Caller:
        tick = trio.current_time()
        if self.failures.blocked(address, tick):
            raise self._too_many()
        try:
            if authorization is None or authorization[:len(BEARER)].lower() != BEARER:
                raise Unauthorized("unauthorized: a remote call needs 'Authorization: Bearer TOKEN' "
                                   "(mariposa token create makes one)")
            now = self.now()
            row = self.tokens.check(authorization[len(BEARER):].strip().decode("ascii", "replace"), now)
            if row["user"] not in self.users():  # a user removed since: its tokens went with it
                raise Unauthorized(f"unauthorized: the user of token {row['id']} no longer exists")
        except Unauthorized:
            if self.failures.failed(address, tick):
                log.warning("remote: too many bad tokens; refusing the address for a while", address=address)
                raise self._too_many() from None
            raise
        return Caller(transport=REMOTE, user=row["user"], token=row["id"], fresh=self.tokens.is_fresh(row, now),
                      address=address)

    @staticmethod
    def _too_many() -> TooManyFailures:
        return TooManyFailures(f"too many failed requests from this address; try again in {BLOCK:g} s",
                               retry_after=int(BLOCK))


class RemoteConnection(Connection):
    """The socket's connection, with the caller taken from each request's token. A refused
    request without a body is answered on a connection that stays open (a kept-alive client's
    next request must not meet a closed one); one with a body is refused before it is read, and
    the connection closed."""

    def __init__(self, router: Router, stream: trio.abc.Stream, address: str, auth: Authenticator,
                 limits: Limits, budget: BodyBudget) -> None:
        super().__init__(router, stream, Caller(transport=REMOTE, address=address), limits, budget)  # type: ignore[arg-type]
        self.address, self.auth = address, auth
        self.refused: MariposaError | None = None

    def on_head(self, authorization: bytes | None, has_body: bool, target: bytes) -> None:
        self.refused = None
        if is_dashboard(target) or target in BROWSER_ASKS:
            self.caller = Caller(transport=REMOTE, address=self.address)  # the dashboard's cookie says who
            return
        try:
            self.caller = self.auth.caller(authorization, self.address)
        except (Unauthorized, TooManyFailures) as exc:
            if has_body:
                raise
            self.refused = exc

    def request_of(self, request, body: bytes) -> Request:
        if self.refused is not None:
            refused, self.refused = self.refused, None
            raise refused
        return super().request_of(request, body)


def listen_host(text: str) -> str:
    from mariposa.triggers.listener import parse_listen

    return parse_listen(text, "listen")[0]


async def bind(text: str) -> tuple[trio.SocketListener, str]:
    from mariposa.triggers.listener import bind as bind_tcp

    listener, base = await bind_tcp(text, "listen")
    return listener, base.replace("http://", "https://", 1)


async def _connection(router: Router, stream: trio.SocketStream, context: ssl.SSLContext, auth: Authenticator,
                      budget: BodyBudget) -> None:
    tls: trio.SSLStream | None = None
    try:
        address = stream.socket.getpeername()[0]
        tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
        with trio.move_on_after(HANDSHAKE_TIMEOUT) as handshake:
            await tls.do_handshake()
        if handshake.cancelled_caught:  # a client that never finishes its hello holds nothing for long
            return
        connection = RemoteConnection(router, tls, address, auth, LIMITS, budget)
        await connection.serve()
    finally:  # a TLS goodbye, briefly (serve_capped closes the stream below it, and logs any error)
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            if tls is not None:
                await tls.aclose()


async def serve(router: Router, listener: trio.SocketListener, context: ssl.SSLContext, auth: Authenticator, *,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Accept connections until cancelled; over the connection cap a newcomer is hung up on (a
    TLS handshake just to say 503 would cost more than the connection)."""
    async def connection(stream: trio.SocketStream, budget: BodyBudget) -> None:
        await _connection(router, stream, context, auth, budget)

    await serve_capped(listener, LIMITS, connection, "remote listener", task_status)
