"""The dashboard's sign-in, sessions and security rules, without a browser (issue 19): one-time
codes and idle sessions on a fake clock, the ASGI bridge's whole answers, the headers on every
answer (a CSP with no inline script), the cookie's flags, CSRF on every POST, the remote
listener's split (a token for /v1/, a cookie for /ui/), and ``mariposa ui``'s control operation.

The dashboard's app is driven through the bridge the listener uses (api/asgi.py ``call``), so
what is tested is what the listener serves."""

from __future__ import annotations

import types
from http.cookies import SimpleCookie

import pytest
import trio

from mariposa.access import tokens as book
from mariposa.access.model import AccessState, Binding, User
from mariposa.access.policy import REMOTE
from mariposa.api import asgi
from mariposa.api.remote import Authenticator
from mariposa.api.router import Request, Response, Router
from mariposa.control import Caller
from mariposa.errors import BadRequest, Forbidden
from mariposa.ui import app as dashboard
from mariposa.ui.app import COOKIE
from mariposa.ui.paths import STATIC
from mariposa.ui.security import CSP
from mariposa.ui.sessions import SIGNIN_TTL, Sessions
from tests.unit.conftest import ROOT
from tests.unit.tlspair import ask_once, tls_contexts


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- sessions ------------------------------------------------------------------------------------


def test_a_sign_in_code_works_once():
    sessions = Sessions(FakeClock())
    code = sessions.issue_code("alice")
    assert sessions.redeem(code) == "alice"
    assert sessions.redeem(code) is None
    assert sessions.redeem("not-a-code") is None
    other = sessions.issue_code("bob")
    assert sessions.redeem(other + "x") is None
    assert sessions.redeem(other) == "bob"  # a wrong guess does not spend the right code


def test_a_sign_in_code_expires_after_300_s():
    assert SIGNIN_TTL == 300
    clock = FakeClock()
    sessions = Sessions(clock)
    late, just_in_time = sessions.issue_code("alice"), sessions.issue_code("alice")
    clock.t += 299.9
    assert sessions.redeem(just_in_time) == "alice"
    clock.t += 0.1
    assert sessions.redeem(late) is None


def test_a_session_ends_after_its_idle_time_and_each_request_restarts_the_clock():
    clock = FakeClock()
    sessions = Sessions(clock, idle=600)
    cookie, session = sessions.open("alice")
    assert session.csrf and session.csrf != cookie
    for _ in range(5):  # busy for 50 minutes: never idle 10
        clock.t += 590
        assert sessions.get(cookie) is session
    clock.t += 600.5
    assert sessions.get(cookie) is None
    assert sessions.get(cookie) is None  # gone, not just refused once
    assert len(sessions) == 0
    assert sessions.get(None) is None and sessions.get("") is None


def test_the_csrf_check_wants_the_session_s_own_token():
    sessions = Sessions(FakeClock())
    _, a = sessions.open("alice")
    _, b = sessions.open("alice")
    assert a.csrf_ok(a.csrf)
    assert not a.csrf_ok(b.csrf) and not a.csrf_ok(None) and not a.csrf_ok("") and not a.csrf_ok("é")


# -- the app, through the listener's ASGI bridge -------------------------------------------------


def request(method: str, path: str, *, cookie: str | None = None, query: bytes = b"", body: bytes = b"",
            headers: tuple[tuple[bytes, bytes], ...] = ()) -> Request:
    hs: list[tuple[bytes, bytes]] = [(b"host", b"mariposa.test")]
    if cookie is not None:
        hs.append((b"cookie", f"{COOKIE}={cookie}".encode()))
    if body:
        hs += [(b"content-type", b"application/x-www-form-urlencoded"), (b"content-length", str(len(body)).encode())]
    return Request(method=method, path=path, query={}, body=body, params={},
                   caller=Caller(transport=REMOTE, address="10.0.0.7"), headers=(*hs, *headers), query_string=query)


def header(response: Response, name: str) -> list[str]:
    return [v for k, v in response.headers if k.lower() == name]


def board_of(control, clock: FakeClock | None = None, idle: float = 1800.0):
    sessions = Sessions(clock or FakeClock(), idle=idle)
    return dashboard.build(control, sessions), sessions


async def call(board, req: Request) -> Response:
    return await asgi.call(board.app, req, "10.0.0.7")


def users(core, *names: str) -> None:
    """The store's users ``names``, each a viewer on the default organisation."""
    bindings = [Binding(id=f"b-{n}", user=n, effect="grant", org="default", role="viewer") for n in names]
    core.control.policy.state = AccessState.build([User(n) for n in names], [], bindings, ["default"])


async def sign_in(board, sessions: Sessions, user: str = "root") -> tuple[str, str]:
    """(the cookie, the session's CSRF token), through the one-time link."""
    code = sessions.issue_code(user)
    r = await call(board, request("GET", "/ui/signin", query=b"code=" + code.encode()))
    assert r.status == 303 and header(r, "location") == ["/ui/"]
    jar: SimpleCookie = SimpleCookie()
    jar.load(header(r, "set-cookie")[0])
    cookie = jar[COOKIE].value
    session = sessions.get(cookie)
    assert session is not None and session.user == user
    return cookie, session.csrf


async def test_the_bridge_returns_a_static_file_whole(core):
    """Regression: the bridge once answered a static file with 0 bytes."""
    board, _ = board_of(core.control)
    for path in ["vendor/htmx-2.0.11.min.js", "vendor/htmx-ext-sse-2.2.4.min.js", "app.css", "app.js"]:
        r = await call(board, request("GET", f"/ui/static/{path}"))
        expected = (STATIC / path).read_bytes()
        assert r.status == 200, path
        assert len(r.body) == len(expected) and r.body == expected, path
        assert not header(r, "content-length") and not header(r, "transfer-encoding")  # the listener's to set
    for path in ["/ui/static/../app.py", "/ui/static/%2e%2e/app.py", "/ui/static/vendor/../../paths.py"]:
        r = await call(board, request("GET", path))
        assert r.status == 404 and b"import" not in r.body, path  # the package's source stays out of reach


async def test_the_bridge_gathers_a_body_sent_in_many_chunks(tmp_path):
    """A file bigger than starlette's chunk (64 KiB), so its answer comes in many messages."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    big = bytes(range(256)) * 4096 + b"end"  # 1 MiB and a bit
    (tmp_path / "big.bin").write_bytes(big)
    app = Starlette(routes=[Mount("/ui/static", app=StaticFiles(directory=str(tmp_path)))])
    r = await asgi.call(app, request("GET", "/ui/static/big.bin"), "10.0.0.7")
    assert r.status == 200 and r.body == big


def assert_secure_headers(r: Response, what: str) -> None:
    csp = header(r, "content-security-policy")
    assert csp == [CSP], f"{what}: {csp}"
    directives = dict((d.split(" ", 1) + [""])[:2] for d in (x.strip() for x in CSP.split(";")) if d)
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'", f"{what}: {directives}"
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP and "unsafe-hashes" not in CSP
    assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert header(r, "x-content-type-options") == ["nosniff"], what
    assert header(r, "x-frame-options") == ["DENY"], what
    assert header(r, "referrer-policy") == ["no-referrer"], what


async def test_every_dashboard_answer_carries_the_csp_and_the_security_headers(core):
    board, sessions = board_of(core.control)
    cookie, csrf = await sign_in(board, sessions)
    answers = {
        "sign-in form": await call(board, request("GET", "/ui/signin")),
        "used code": await call(board, request("GET", "/ui/signin", query=b"code=nope")),
        "not signed in": await call(board, request("GET", "/ui/")),
        "overview": await call(board, request("GET", "/ui/", cookie=cookie)),
        "static file": await call(board, request("GET", "/ui/static/app.css")),
        "no such page": await call(board, request("GET", "/ui/no/such/page", cookie=cookie)),
        "no such file": await call(board, request("GET", "/ui/static/nope.js")),
        "csrf refused": await call(board, request("POST", "/ui/signout", cookie=cookie, body=b"x=1")),
        "token refused": await call(board, request("POST", "/ui/signin", body=b"token=mrp_nope")),
    }
    assert answers["overview"].status == 200 and answers["not signed in"].status == 303
    assert answers["csrf refused"].status == 403
    for what, r in answers.items():
        assert_secure_headers(r, what)
        if what not in ("static file", "no such file"):
            assert header(r, "cache-control") == ["no-store"], what
    page = answers["overview"].body.decode()
    assert "<script>" not in page and " style=" not in page and " onclick=" not in page
    assert csrf in page  # the forms' and htmx's token


async def test_pages_declare_their_icon_so_a_browser_never_asks_outside_ui(core):
    """A browser asks /favicon.ico of a page that names no icon: outside /ui/ that is an API call
    without a token, which the listener counts against the address (ten in a minute and even a
    right token, the dashboard's token sign-in too, is refused for a minute)."""
    board, sessions = board_of(core.control)
    cookie, _ = await sign_in(board, sessions)
    for req in [request("GET", "/ui/signin"), request("GET", "/ui/", cookie=cookie)]:
        page = (await call(board, req)).body.decode()
        assert '<link rel="icon" href="/ui/static/icon.svg"' in page
    icon = await call(board, request("GET", "/ui/static/icon.svg"))
    assert icon.status == 200 and icon.content_type.startswith("image/svg+xml") and icon.body.startswith(b"<svg")


async def test_the_session_cookie_is_httponly_secure_and_samesite_strict(core):
    board, sessions = board_of(core.control)
    code = sessions.issue_code("root")
    r = await call(board, request("GET", "/ui/signin", query=b"code=" + code.encode()))
    [set_cookie] = header(r, "set-cookie")
    jar: SimpleCookie = SimpleCookie()
    jar.load(set_cookie)
    morsel = jar[COOKIE]
    assert morsel["httponly"] is True and morsel["secure"] is True
    assert morsel["samesite"].lower() == "strict" and morsel["path"] == "/ui"
    assert not morsel["max-age"] and not morsel["expires"]  # a browser-session cookie; the server's idle clock ends it
    # the same link again: refused, and no cookie
    again = await call(board, request("GET", "/ui/signin", query=b"code=" + code.encode()))
    assert again.status == 401 and not header(again, "set-cookie")


async def test_a_post_without_the_session_s_csrf_token_is_refused(core):
    board, sessions = board_of(core.control)
    cookie, csrf = await sign_in(board, sessions)
    _, other = sessions.open("root")
    for body, headers in [(b"x=1", ()), (b"csrf=", ()), (b"csrf=" + other.csrf.encode(), ()),
                          (b"x=1", ((b"x-csrf-token", other.csrf.encode()),)), (b"", ())]:
        r = await call(board, request("POST", "/ui/signout", cookie=cookie, body=body, headers=headers))
        assert r.status == 403, (body, headers)
        assert sessions.get(cookie) is not None  # nothing ran: still signed in
    r = await call(board, request("POST", "/ui/signout", cookie=cookie,
                                  headers=((b"x-csrf-token", csrf.encode()),)))  # htmx's way
    assert r.status == 303 and sessions.get(cookie) is None
    cookie, csrf = await sign_in(board, sessions)
    r = await call(board, request("POST", "/ui/signout", cookie=cookie, body=b"csrf=" + csrf.encode()))  # a form's
    assert r.status == 303 and sessions.get(cookie) is None


async def test_a_removed_user_s_session_ends(core):
    board, sessions = board_of(core.control)
    users(core, "alice", "bob")
    alice, _ = await sign_in(board, sessions, "alice")
    bob, _ = await sign_in(board, sessions, "bob")
    assert (await call(board, request("GET", "/ui/", cookie=alice))).status == 200
    users(core, "bob")  # alice removed
    r = await call(board, request("GET", "/ui/", cookie=alice))
    assert r.status == 303 and header(r, "location") == ["/ui/signin"]
    assert sessions.get(alice) is None
    users(core, "alice", "bob")  # made again: the old session does not come back
    assert (await call(board, request("GET", "/ui/", cookie=alice))).status == 303
    assert (await call(board, request("GET", "/ui/", cookie=bob))).status == 200


async def test_an_idle_session_is_sent_to_sign_in(core):
    clock = FakeClock()
    board, sessions = board_of(core.control, clock, idle=60)
    cookie, _ = await sign_in(board, sessions)
    clock.t += 59
    assert (await call(board, request("GET", "/ui/", cookie=cookie))).status == 200
    clock.t += 61
    r = await call(board, request("GET", "/ui/", cookie=cookie))
    assert r.status == 303 and header(r, "location") == ["/ui/signin"]
    r = await call(board, request("GET", "/ui/", cookie=cookie, headers=((b"hx-request", b"true"),)))
    assert r.status == 401 and header(r, "hx-redirect") == ["/ui/signin"]  # htmx is told where to go


# -- the remote listener: a token for the API, a cookie for the dashboard -------------------------


async def test_the_remote_listener_wants_a_token_for_v1_and_not_for_ui():
    from mariposa.api import remote
    from mariposa.ui.front import Front

    server_ctx, client_ctx = tls_contexts()
    tokens = book.TokenBook()
    token_id, token, hashed = book.new_token()
    tokens.add({"id": token_id, "user": "alice", "name": None, "hash": hashed, "created": 1000.0, "expires": None,
                "revoked": None, "last_used": None, "author": "uid=0"})
    router = Router()

    async def pong(req):
        return Response(200, {"you": req.caller.user})

    router.add("GET", "/v1/ping", pong)
    auth = Authenticator(tokens, lambda: {"alice"}, lambda: 1100.0)
    # no page here reaches the control layer: the sign-in form, static files, and redirects to sign in
    board = dashboard.build(types.SimpleNamespace(policy=None), Sessions(FakeClock()), auth)
    listener, _ = await remote.bind("127.0.0.1:0")
    port = listener.socket.getsockname()[1]

    async def ask(target: str, authorization: str | None = None) -> tuple[int, bytes]:
        head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if authorization:
            head += f"Authorization: {authorization}\r\n"
        answer = await ask_once(port, client_ctx, (head + "\r\n").encode())
        status = int(answer.split(b" ", 2)[1])
        return status, answer

    async with trio.open_nursery() as nursery:
        await nursery.start(remote.serve, Front(router, board), listener, server_ctx, auth)
        with trio.fail_after(30):
            assert (await ask("/v1/ping"))[0] == 401
            assert (await ask("/v1/ping", "Bearer mrp_wrong"))[0] == 401
            status, answer = await ask("/v1/ping", "Bearer " + token)
            assert status == 200 and b"alice" in answer
            status, answer = await ask("/ui/signin")  # no token: the page a browser signs in on
            assert status == 200 and b'id="token"' in answer
            assert CSP.encode() in answer
            status, answer = await ask("/ui/")
            assert status == 303 and b"location: /ui/signin" in answer.lower()
            status, answer = await ask("/ui/static/app.css")
            assert status == 200 and answer.endswith((STATIC / "app.css").read_bytes())
            # what only looks like the dashboard is the API's, and wants a token
            assert (await ask("/uiv1/ping"))[0] == 401
            assert (await ask("/ui/../v1/ping"))[0] != 200
            # what a browser asks of any site on its own is a 404, and never a failed token:
            # twelve of them (over the limit of ten) and the right token still gets in
            for _ in range(12):
                assert (await ask("/favicon.ico"))[0] == 404
            assert (await ask("/v1/ping", "Bearer " + token))[0] == 200
        nursery.cancel_scope.cancel()


# -- mariposa ui ---------------------------------------------------------------------------------


async def test_mariposa_ui_is_refused_while_there_is_no_listener_and_links_once_when_there_is(core):
    assert core.ctx.dashboard_base is None
    with pytest.raises(BadRequest, match="remote listener"):
        await core.control.dashboard.signin(ROOT)
    core.ctx.dashboard_base = "https://127.0.0.1:8443"
    r = await core.control.dashboard.signin(ROOT)
    assert r["user"] == "root" and r["expires_in"] == 300
    prefix = "https://127.0.0.1:8443/ui/signin?code="
    assert r["url"].startswith(prefix)
    code = r["url"][len(prefix):]
    assert core.ctx.sessions.redeem(code) == "root"
    assert core.ctx.sessions.redeem(code) is None
    with pytest.raises(Forbidden):  # a uid nobody mapped is no user to sign in
        await core.control.dashboard.signin(Caller(transport="unix", uid=4321, gid=4321, pid=1))
