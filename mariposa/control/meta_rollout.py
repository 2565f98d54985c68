"""A meta change reaching instances: filled in below."""

from __future__ import annotations

from mariposa.context import Context
from mariposa.store.rows import ProjectRow


async def roll_out(ctx: Context, project: ProjectRow, keys: frozenset[str], author: str) -> list[dict]:
    return []
