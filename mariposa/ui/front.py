"""The remote listener's dispatcher: ``/ui/`` to the dashboard, everything else to the API's
route table (api/routes.py), unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mariposa.api import asgi
from mariposa.api.router import Request, Response, Router
from mariposa.errors import translate
from mariposa.ui import stream
from mariposa.ui.paths import is_dashboard

if TYPE_CHECKING:
    from mariposa.ui.app import Dashboard


class Front(Router):
    def __init__(self, router: Router, board: Dashboard) -> None:
        super().__init__()
        self.router, self.board = router, board
        assert board.app is not None, "made by ui.app.build"
        self.app: asgi.App = board.app

    async def dispatch(self, req: Request) -> Response:
        if not is_dashboard(req.path.encode("utf-8", "surrogateescape")):
            return await self.router.dispatch(req)
        try:
            if req.path == "/ui/stream" and req.method == "GET":
                return await stream.stream(self.board, req)
            if req.path == "/ui/logs" and req.method == "GET":
                return await stream.logs(self.board, req)
            return await asgi.call(self.app, req, req.caller.address)
        except Exception as exc:
            err = translate(exc, f"{req.method} {req.path}")
            return Response.text(err.message + "\n", "text/plain; charset=utf-8", status=err.status)
