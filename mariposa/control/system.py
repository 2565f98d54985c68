"""The daemon itself: is it there, which version, whose instances, and who am I to it."""

from __future__ import annotations

from mariposa import __version__
from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller


class System(Area):
    @operation("system.ping")
    async def ping(self, caller: Caller) -> dict:
        return {"ok": True, "version": __version__, "owner": self.ctx.owner, "you": caller.author}
