"""One request on the triggers' listener to its answer, with no sockets (the listener feeds it).

The only route is ``POST /v1/triggers/TOKEN``. Everything else, and a wrong token, is the same
404 with the same body (nothing in it names the path, which may hold a token). A found token acts
through the control layer as the caller ``trigger:NAME`` (the audit trail's author): ``run`` asks
for a run (its trigger ``url``), ``start``/``stop`` start or stop the service, ``scale`` scales
it; the answer is 202 with ``{"run": ID}`` or ``{"task": ID}``. Failures count against the source
address (limit.py): past the limit, 429 for everything from it for a while.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import structlog

from mariposa.api.router import Response
from mariposa.control.caller import Caller
from mariposa.errors import MariposaError, translate
from mariposa.store import triggers as trigger_store
from mariposa.triggers import tokens
from mariposa.triggers.limit import FailureLimit

if TYPE_CHECKING:
    from mariposa.control import Control

log = structlog.get_logger()

NOT_FOUND = Response(404, {"error": "not-found", "message": "not found"})
TOO_MANY = Response(429, {"error": "too-many-requests",
                          "message": "too many failed requests from this address; try again in a minute"})
TRANSPORT = "trigger"


def caller_for(name: str) -> Caller:
    return Caller(transport=TRANSPORT, name=f"trigger:{name}")


@attrs.define
class TriggerApp:
    control: Control
    limit: FailureLimit = attrs.field(factory=FailureLimit)

    def now(self) -> float:
        return self.control.ctx.clock.now()

    async def handle(self, method: str, path: str, peer: str) -> Response:
        """The answer to ``method path`` from address ``peer``; never raises."""
        if self.limit.blocked(peer, self.now()):
            return TOO_MANY
        token = path[len(tokens.PATH_PREFIX):] if path.startswith(tokens.PATH_PREFIX) else ""
        if method != "POST" or not tokens.TOKEN_RE.fullmatch(token):
            return self._failed(peer)
        presented = tokens.token_hash(token)
        del token
        try:
            row = await self.control.ctx.store.call(trigger_store.by_hash, presented)
        except Exception as exc:
            err = translate(exc, "a trigger's lookup")
            return Response(err.status, err.to_json())
        if not tokens.matches(presented, row):
            return self._failed(peer)
        assert row is not None
        try:
            body = await self.act(row)
        except Exception as exc:
            err = exc if isinstance(exc, MariposaError) else translate(exc, f"trigger {row.name}")
            log.info("trigger refused", trigger=row.name, service=row.service, action=row.action, error=err.message)
            return Response(err.status, err.to_json())
        log.info("trigger fired", trigger=row.name, service=row.service, action=row.action, peer=peer, **body)
        return Response(202, body)

    def _failed(self, peer: str) -> Response:
        if self.limit.failed(peer, self.now()):
            log.warning("trigger listener: address refused for a while after failed requests", peer=peer)
        return NOT_FOUND

    async def act(self, row: trigger_store.TriggerRow) -> dict[str, Any]:
        caller = caller_for(row.name)
        control = self.control
        if row.action == "run":
            run = await control.runs.start(caller, row.project_id, row.service)
            return {"run": run["id"]}
        if row.action == "start":
            result = await control.services.start(caller, row.project_id, row.service)
        elif row.action == "stop":
            result = await control.services.stop(caller, row.project_id, row.service)
        else:
            result = await control.services.scale(caller, row.project_id, row.service, row.scale)
        return {"task": result["tasks"][0]["id"]}
