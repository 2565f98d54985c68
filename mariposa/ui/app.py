"""The dashboard's starlette application: routes, sign-in, and the rules every page shares.

Every handler takes the signed-in user as a ``Caller`` (``signed_in``) and calls the control
layer exactly as the CLI's routes do; a refusal there is the page's 403, so a control the page
did not offer, forged by hand, is refused all the same. Every POST carries the session's CSRF
token (a form field, or htmx's ``X-CSRF-Token`` header) or is refused before anything runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from mariposa.access.model import ROOT
from mariposa.access.policy import REMOTE
from mariposa.control.caller import Caller
from mariposa.errors import MariposaError, TooManyFailures, Unauthorized
from mariposa.ui import actions, pages
from mariposa.ui.paths import STATIC, TEMPLATES
from mariposa.ui.security import SecureHeaders
from mariposa.ui.sessions import Session, Sessions

if TYPE_CHECKING:
    from mariposa.api.remote import Authenticator
    from mariposa.control import Control

COOKIE = "mariposa_session"


class NotSignedIn(Exception):
    """No live session: a page redirects to the sign-in form, an htmx request is told to."""


class Dashboard:
    """What every handler needs: the control layer, the sessions, the templates."""

    def __init__(self, control: Control, sessions: Sessions, auth: Authenticator | None = None) -> None:
        self.control, self.sessions, self.auth = control, sessions, auth
        self.app: Starlette | None = None  # set by ``build``
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self.templates.env.globals["static"] = "/ui/static"
        pages.add_filters(self.templates.env)

    def session(self, request: Request) -> Session:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise NotSignedIn()
        state = getattr(self.control.policy, "state", None)
        if state is not None and session.user != ROOT and session.user not in state.users:  # removed since
            self.sessions.close(request.cookies.get(COOKIE))
            raise NotSignedIn()
        return session

    def caller(self, request: Request, session: Session) -> Caller:
        return self.caller_of(session, request.client.host if request.client else None,
                              request.query_params.get("org"))

    @staticmethod
    def caller_of(session: Session, address: str | None, org: str | None) -> Caller:
        """The signed-in user as the control layer's caller: a remote one, as with a token."""
        return Caller(transport=REMOTE, user=session.user, token=session.token, address=address, org=org or None)

    async def signed_in(self, request: Request) -> tuple[Session, Caller]:
        """The session and its caller; a POST without the session's CSRF token is refused here."""
        session = self.session(request)
        if request.method == "POST":
            offered = request.headers.get("x-csrf-token")
            if offered is None:
                form = await request.form()
                value = form.get("csrf")
                offered = value if isinstance(value, str) else None
            if not session.csrf_ok(offered):
                raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and try again")
        return session, self.caller(request, session)

    def render(self, request: Request, template: str, session: Session | None, status: int = 200,
               **context: Any) -> Response:
        context.update(request=request, session=session, csrf=session.csrf if session else "",
                       user=session.user if session else None)
        return self.templates.TemplateResponse(request, template, context, status_code=status)


def build(control: Control, sessions: Sessions, auth: Authenticator | None = None) -> Dashboard:
    """The dashboard, its starlette app in ``.app``."""
    board = Dashboard(control, sessions, auth)

    async def not_signed_in(request: Request, exc: Exception) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/ui/signin"})
        return RedirectResponse("/ui/signin", status_code=303)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MariposaError)
        session = board.sessions.get(request.cookies.get(COOKIE))
        return board.render(request, "error.html", session, status=exc.status, status_code=exc.status,
                            message=exc.message, details=exc.details)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        session = board.sessions.get(request.cookies.get(COOKIE))
        return board.render(request, "error.html", session, status=exc.status_code, status_code=exc.status_code,
                            message=exc.detail, details=[])

    async def signin_form(request: Request) -> Response:
        code = request.query_params.get("code")
        if code:
            user = board.sessions.redeem(code)
            if user is None:
                return board.render(request, "signin.html", None, status=401,
                                    problem="That sign-in link is used, expired or wrong: "
                                            "run 'mariposa ui' for a new one.")
            return _signed_in_as(board, user, None)
        return board.render(request, "signin.html", None)

    async def signin_token(request: Request) -> Response:
        form = await request.form()
        token = form.get("token")
        if board.auth is None or not isinstance(token, str) or not token.strip():
            return board.render(request, "signin.html", None, status=401, problem="Paste a token to sign in.")
        try:
            caller = board.auth.caller(b"Bearer " + token.strip().encode("utf-8", "replace"),
                                       request.client.host if request.client else "-")
        except (Unauthorized, TooManyFailures) as exc:
            return board.render(request, "signin.html", None, status=exc.status, problem=exc.message)
        assert caller.user is not None
        return _signed_in_as(board, caller.user, caller.token)

    async def signout(request: Request) -> Response:
        await board.signed_in(request)
        board.sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse("/ui/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/ui", secure=True, httponly=True, samesite="strict")
        return response

    routes = [
        Route("/ui/signin", signin_form, methods=["GET"]),
        Route("/ui/signin", signin_token, methods=["POST"]),
        Route("/ui/signout", signout, methods=["POST"]),
        *pages.routes(board),
        *actions.routes(board),
        Mount("/ui/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={
        NotSignedIn: not_signed_in, MariposaError: refused, HTTPException: http_error})
    app.add_middleware(SecureHeaders)
    board.app = app
    return board


def _signed_in_as(board: Dashboard, user: str, token: str | None) -> Response:
    cookie, _ = board.sessions.open(user, token)
    response = RedirectResponse("/ui/", status_code=303)
    response.set_cookie(COOKIE, cookie, path="/ui", secure=True, httponly=True, samesite="strict")
    return response
