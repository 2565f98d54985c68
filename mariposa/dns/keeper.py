"""Keeps every project's zone current and the responder's sockets matching the project bridges.

A rebuild lists the instances of every runtime once (the listing the reconciler and the health
checks share, coalesce.py) and reads the goal state the reconciler reads; it runs when an instance
starts or dies, turns healthy or not, or is taken out of service (``ctx.names_changed``), and once
a second in any case, so a name follows scale and replacements within that second.
"""

from __future__ import annotations

import traceback

import structlog
import trio

from mariposa.bridges import Bridges
from mariposa.context import Context
from mariposa.converge.supervise import merge
from mariposa.dns import zone as zones
from mariposa.dns.responder import DnsResponder
from mariposa.drivers.base import DriverError
from mariposa.errors import StoreUnavailable, TaskFailed

log = structlog.get_logger()

INTERVAL = 1.0


class NameKeeper:
    def __init__(self, ctx: Context, bridges: Bridges, port: int | None = None) -> None:
        self.ctx = ctx
        self.zones: dict[str, zones.Zone] = {}
        self.responder = DnsResponder(bridges, lambda: self.zones, **({"port": port} if port else {}))

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    try:
                        await self.refresh()
                        await self.responder.sync(nursery)
                    except DriverError as exc:
                        log.warning("dns: zones not rebuilt: runtime unavailable", error=str(exc))
                    except StoreUnavailable as exc:
                        log.warning("dns: zones not rebuilt: store unavailable", error=exc.message)
                    except Exception as exc:  # a bug: log it, keep answering from the zones we have
                        log.error("dns: zones not rebuilt", error=repr(exc), traceback=traceback.format_exc())
                    await self.ctx.names_changed.wait(timeout=INTERVAL)
        finally:
            self.responder.close()

    async def refresh(self) -> None:
        snap = await self.ctx.goals.snapshot()
        insts = merge(await self.ctx.inventory(), snap.records, self.ctx.clock.now())
        built: dict[str, zones.Zone] = {}
        for project in snap.projects:
            if not self.ctx.goals.readable(project):
                continue
            services, checked, servers = [], [], {}
            for row in snap.services:
                if row.project_id != project.id:
                    continue
                try:
                    goal = self.ctx.goals.goal_from(project, row)
                except TaskFailed:
                    continue
                if goal is not None:
                    services.append(row.name)
                    if goal.spec.healthchecks:
                        checked.append(row.name)
                    if goal.spec.dns:
                        servers[row.name] = tuple(goal.spec.dns)
            built[project.id] = zones.build(project.name, services, checked,
                                            (i for i in insts if i.project_id == project.id), servers)
        self.zones = built
