"""The health agent (``rfd36/implementation/rfd81``) inside the daemon.

One trio task per (instance, check), all in the monitor's nursery, each in its own cancel
scope; a ``CapacityLimiter`` bounds how many probes are in flight so thousands of instances
never starve the loop, and every probe's deadline is a cancel scope, never a thread.

The monitor only *observes*: it keeps each instance's state (``starting -> healthy <->
unhealthy``), persists transitions (the planner reads them) and logs them as events. Acting on
an unhealthy instance is the reconciler's job, so there is one place that changes the world.
"""

from __future__ import annotations

import functools
import math
import socket
import traceback

import attrs
import structlog
import trio

from mariposa.context import Context
from mariposa.converge import render
from mariposa.converge.supervise import merge
from mariposa.drivers.base import DriverError
from mariposa.errors import StoreUnavailable
from mariposa.health.checks import SOCKETS, CheckResult, KeepAlive, run_check
from mariposa.model import HealthCheck, Instance
from mariposa.store import events as event_store
from mariposa.store import instances as instance_store
from mariposa.store import meta as meta_store

log = structlog.get_logger()


@attrs.define
class CheckState:
    check: HealthCheck
    last: CheckResult | None = None
    failures: int = 0  # consecutive failures that count (outside the grace period)

    def to_json(self) -> dict:
        last = self.last
        return {
            "check": self.check.label,
            "type": self.check.type,
            "ok": last.ok if last else None,
            "detail": last.detail if last else "not checked yet",
            "at": last.at if last else None,
            "failures": self.failures,
            "retries": self.check.failures_to_unhealthy,
            "poll": self.check.poll,
        }


@attrs.define
class InstanceHealth:
    instance: Instance
    checks: list[CheckState]
    started_at: float
    since: float  # when ``status`` was last set, by the daemon's clock
    status: str = "starting"
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    @property
    def last_at(self) -> float | None:
        times = [c.last.at for c in self.checks if c.last]
        return max(times) if times else None

    @property
    def summary(self) -> str:
        failing = [c for c in self.checks if c.last and not c.last.ok]
        shown = failing[0] if failing else next((c for c in self.checks if c.last), None)
        if not shown:
            return "not checked yet"
        assert shown.last is not None  # only a check with a result is shown
        return shown.last.detail

    def to_json(self) -> dict:
        return {
            "instance": self.instance.id,
            "name": self.instance.name,
            "service": self.instance.service,
            "status": self.status,
            "since": self.since,
            "checked": self.last_at,
            "detail": self.summary,
            "checks": [c.to_json() for c in self.checks],
        }


TICK = 0.1  # seconds: probes due within the same tick wake together


def _tick(deadline: float) -> float:
    """Round a wake-up up to the next tick: a thousand probe loops then wake in a few batches
    instead of a thousand separate wake-ups (a third less CPU at 1,000 checks a second), and
    no probe is more than one tick late."""
    return math.ceil(deadline / TICK) * TICK


def _status(health: InstanceHealth) -> str:
    if any(c.failures >= c.check.failures_to_unhealthy for c in health.checks):
        return "unhealthy"
    if all(c.last is not None and c.last.ok for c in health.checks):
        return "healthy"
    return "starting" if health.status == "starting" else health.status


class HealthMonitor:
    def __init__(self, ctx: Context, limit: int = 256, sync_interval: float = 5.0):
        self.ctx = ctx
        self.limiter = trio.CapacityLimiter(limit)
        self.sync_interval = sync_interval
        self.watching: dict[str, tuple[InstanceHealth, tuple[HealthCheck, ...]]] = {}
        self.probes = 0
        self._nursery: trio.Nursery | None = None

    def get(self, instance_id: str) -> InstanceHealth | None:
        found = self.watching.get(instance_id)
        return found[0] if found else None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                try:
                    await self.sync()
                except DriverError as exc:
                    log.warning("health sync skipped: runtime unavailable", error=str(exc))
                except StoreUnavailable as exc:
                    log.warning("health sync skipped: store unavailable", error=exc.message)
                except Exception as exc:  # a bug: log it, keep the daemon and the checks running
                    log.error("health sync failed", error=repr(exc), traceback=traceback.format_exc())
                await self.ctx.health_wakeup.wait(timeout=self.sync_interval)

    async def sync(self) -> None:
        """Watch exactly the running, in-service instances whose service has checks."""
        snap = await self.ctx.goals.snapshot()
        now = self.ctx.clock.now()
        projects = {p.id: p for p in snap.projects}
        rows = {(s.project_id, s.name): s for s in snap.services}
        wanted: dict[str, tuple[Instance, tuple[HealthCheck, ...]]] = {}
        if not self.watching and not any(self.ctx.goals.has_checks(p) for p in snap.projects):
            return  # no service has checks: nothing to watch, no need to list instances
        metas: dict[str, dict] = {}  # project id -> its meta, read once a sync for templated checks
        for inst in merge(await self.ctx.inventory(), snap.records, now):
            project = projects.get(inst.project_id)
            if not inst.running or inst.retired or project is None or not self.ctx.goals.readable(project):
                continue
            row = rows.get((inst.project_id, inst.service))
            goal = self.ctx.goals.goal_from(project, row)
            if goal is not None and goal.spec.healthchecks:
                checks: tuple[HealthCheck, ...] | None = goal.spec.healthchecks
                if render.checks_templated(goal.spec.healthchecks):
                    # rendered on demand with today's meta: a change re-arms the instance's checks
                    if project.id not in metas:
                        metas[project.id] = await self.ctx.store.call(meta_store.values, project.id)
                    values = render.variables(
                        project_name=project.name, project_id=project.id, version_id=goal.version_id,
                        service_id=row.id if row else None, spec=goal.spec, scale=goal.scale, instance_id=inst.id,
                        instance_name=inst.name)
                    checks = render.render_checks(goal.spec.healthchecks, values, metas[project.id])
                if checks:
                    wanted[inst.id] = (inst, checks)
        for instance_id, (health, checks) in list(self.watching.items()):
            if instance_id not in wanted or wanted[instance_id][1] != checks:
                health.scope.cancel()
                del self.watching[instance_id]
        for instance_id, (inst, checks) in wanted.items():
            if instance_id not in self.watching:
                record = snap.records.get(instance_id) or {}
                health = InstanceHealth(inst, [CheckState(c) for c in checks],
                                        record.get("last_start_at") or inst.created, since=now)
                self.watching[instance_id] = (health, checks)
                assert self._nursery is not None  # sync() runs inside run()
                self._nursery.start_soon(self._watch, health)

    async def _watch(self, health: InstanceHealth) -> None:
        with health.scope:
            await self._persist(health, "starting", "checks started")
            async with trio.open_nursery() as nursery:
                for state in health.checks:
                    nursery.start_soon(self._probe_loop, health, state)

    async def _probe_loop(self, health: InstanceHealth, state: CheckState) -> None:
        driver = self.ctx.drivers.get(health.instance.compute_type)
        exec_fn = driver.exec if driver is not None else None
        check = state.check
        keep = KeepAlive()
        sockets = getattr(driver, "probe_sockets", None)  # a Swarm task: probed inside its overlay
        if sockets is not None:
            try:
                SOCKETS.set(await sockets(health.instance))  # this probe loop's own context only
            except DriverError as exc:
                SOCKETS.set(functools.partial(_cannot, str(exc)))  # each probe fails, saying why
        try:
            await self._probe_forever(health, state, check, exec_fn, keep)
        finally:
            keep.drop()

    async def _probe_forever(
        self, health: InstanceHealth, state: CheckState, check: HealthCheck, exec_fn, keep
    ) -> None:
        while True:
            async with self.limiter:
                result = await run_check(check, health.instance, exec_fn, keep=keep, now=self.ctx.clock.now)
            self.probes += 1
            state.last = result
            if result.ok:
                state.failures = 0
            elif result.at - health.started_at >= check.grace:
                state.failures += 1
            new = _status(health)
            if new != health.status:
                await self._persist(health, new, f"{check.label}: {result.detail}")
            delay = check.unhealthy_poll if (not result.ok and check.unhealthy_poll) else check.poll
            await trio.sleep_until(_tick(trio.current_time() + delay))

    async def _persist(self, health: InstanceHealth, status: str, detail: str) -> None:
        previous = health.status
        health.status, health.since = status, self.ctx.clock.now()
        inst = health.instance

        def write(db) -> None:
            instance_store.set_health(db, inst.id, inst.project_id, inst.service, status, detail)
            if status != previous or status != "starting":
                event_store.record(db, f"health.{status}", f"{inst.name} is {status}: {detail}",
                                   project_id=inst.project_id, service=inst.service, instance=inst.id)

        try:
            with trio.CancelScope(shield=True):
                await self.ctx.store.call(write)
        except StoreUnavailable as exc:  # the status still acts (below); only its record is missing
            log.warning("health change not recorded: store unavailable", instance=inst.id[:12], status=status,
                        error=exc.message)
        if status != previous:
            self.ctx.health_changes.set()  # a service waiting for this one to be healthy looks now
            self.ctx.names_changed.set()  # in or out of its service's name
            log.info("health changed", instance=inst.id[:12], service=inst.service, project=inst.project_name,
                     status=status, previous=previous, detail=detail)
        if status == "unhealthy":
            self.ctx.wake_reconciler()


async def _cannot(why: str, family: int) -> socket.socket:
    raise OSError(why)
