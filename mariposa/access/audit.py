"""The audit trail: who asked for what, on what, and why it was allowed or refused.

``authorize`` runs on every request, so recording must not cost a trip to the store each time:
``record`` appends to memory and ``run`` writes what gathered in one transaction every
``FLUSH`` seconds (and at shutdown). A denial is also logged at once; an allow only at debug.
A daemon killed between two flushes loses at most that half second of the trail, never a change
(the change itself is in the store, with its author).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import trio

from mariposa.access.model import Decision, Scope
from mariposa.store import audit as audit_store
from mariposa.store.db import Store

if TYPE_CHECKING:
    from mariposa.control.caller import Caller  # control/ imports this module

log = structlog.get_logger()
FLUSH = 0.5
PRUNE_EVERY = 3600.0
MAX_PENDING = 100_000  # past this (a store that stopped answering) the oldest are dropped, and said so


class AuditTrail:
    def __init__(self, store: Store | None) -> None:
        self.store = store
        self.pending: list[tuple] = []
        self.dropped = 0
        self.flushed = trio.Event()

    def record(self, caller: Caller, action: str, scope: Scope | str, decision: Decision, now: float) -> None:
        row = (now, decision.user, caller.uid, caller.address, caller.transport, action, decision.capability,
               str(scope), int(decision.allowed), decision.why)
        if not decision.allowed:
            log.warning("refused", user=decision.user, uid=caller.uid, via=caller.transport, action=action,
                        target=str(scope), why=decision.why)
        if len(self.pending) >= MAX_PENDING:
            del self.pending[: MAX_PENDING // 10]
            self.dropped += MAX_PENDING // 10
        self.pending.append(row)

    async def flush(self) -> None:
        if self.store is None or not self.pending:
            return
        rows, self.pending = self.pending, []
        try:
            await self.store.call(audit_store.append, rows)
        except Exception as exc:  # the store is failing: keep them for the next try
            self.pending[:0] = rows
            log.error("audit trail: cannot write", error=str(exc))
        if self.dropped:
            log.error("audit trail: entries dropped while the store did not answer", dropped=self.dropped)
            self.dropped = 0
        self.flushed.set()
        self.flushed = trio.Event()

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        since_prune = 0.0
        try:
            while True:
                await trio.sleep(FLUSH)
                await self.flush()
                since_prune += FLUSH
                if since_prune >= PRUNE_EVERY and self.store is not None:
                    since_prune = 0.0
                    await self.store.call(audit_store.prune, self.store.clock.now())
        finally:
            with trio.CancelScope(shield=True):
                await self.flush()
