"""The dashboard's actions: each form posts to a route here that makes the same control-layer
call the CLI makes, as the signed-in user (audited with that user), then shows the result."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route

if TYPE_CHECKING:
    from mariposa.ui.app import Dashboard


def routes(board: Dashboard) -> list[Route]:
    return []
