"""Level-triggered convergence: compare the whole goal with the whole actual state and queue a
task for every service that differs and has no task already.

It wakes on any change (runtime events, finished tasks, API writes), when the earliest back-off
of a failing service runs out, and on a periodic resync, so a lost event costs latency, never
correctness. An event after a quiet spell is acted on at once; a burst of them collapses into at
most one pass per ``debounce``.

The Engine announces a container's death before its listing shows it stopped (Docker 20.10
sends ``die``, then cleans the container up, unmounting and tearing its network down, and only
then updates what ``GET /containers/json`` reads; on a loaded host that takes 100 ms and more).
A pass that runs at the event sees the instance still running; rather than wait for the resync,
it looks again every ``RECHECK`` until the listing agrees, for at most ``SETTLE`` seconds.

Frozen services (their last task was stopped by the operator) are left alone until their goal
changes or the operator thaws them.
"""

from __future__ import annotations

import collections
import math
import traceback
from typing import TYPE_CHECKING, Any

import structlog
import trio

from mariposa.context import Context
from mariposa.converge.apply import note_exits, unnoted_exits
from mariposa.converge.backoff import Backoff
from mariposa.converge.plan import plan
from mariposa.converge.supervise import merge
from mariposa.drivers.base import DriverError, RuntimeUnavailable
from mariposa.errors import StoreUnavailable
from mariposa.store import tasks as task_store

if TYPE_CHECKING:
    from mariposa.swarm.drift import SwarmView

log = structlog.get_logger()


# A service whose last tasks failed is retried after 2 s, 4 s, 8 s ... up to five minutes; the
# streak ends with a task that succeeds, never by waiting.
RETRY = Backoff(base=2.0, factor=2.0, cap=300.0)
RECHECK = 0.02
SETTLE = 5.0


class Reconciler:
    def __init__(self, ctx: Context, resync: float = 10.0, debounce: float = 0.1):
        self.ctx = ctx
        self.resync = resync
        self.debounce = debounce
        self.passes = 0
        self.retry_at: float | None = None  # when the earliest back-off of a skipped service ends
        self.settling = False  # an instance died but is still listed running: look again soon
        self._full_at = -math.inf  # (trio time) the last pass that listed the instances

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            started = trio.current_time()
            try:
                await self.reconcile_once()
                self.ctx.gauges.note_reconcile(trio.current_time() - started)
            except (DriverError, RuntimeUnavailable) as exc:
                log.warning("reconcile pass skipped: runtime unavailable", error=str(exc))
            except StoreUnavailable as exc:  # a full disk, a lock held elsewhere: the next pass retries
                log.warning("reconcile pass skipped: store unavailable", error=exc.message)
            except Exception as exc:  # a bug: log it, keep the daemon (the next pass may get past it)
                log.error("reconcile pass failed", error=repr(exc), traceback=traceback.format_exc())
            settling = self.settling
            await self.ctx.reconcile_wakeup.wait(timeout=RECHECK if settling else self._until_next_pass())
            # At most one pass per debounce: a burst of events collapses into one pass, and an
            # event after a quiet spell is acted on at once.
            await trio.sleep_until(started + (RECHECK if settling else self.debounce))

    def _until_next_pass(self) -> float:
        """The resync, or less when a backed-off service may be retried sooner: the back-off's
        2 s, 4 s, 8 s are what a service waits, not the next resync after them."""
        if self.retry_at is None:
            return self.resync
        return max(0.0, min(self.resync, self.retry_at - self.ctx.clock.now()))

    async def reconcile_once(self) -> list:
        self.passes += 1
        self.retry_at = None
        log.debug("reconcile pass", passes=self.passes)
        snap = await self.ctx.goals.snapshot()
        self.ctx.mdata.goals_seen(snap.projects, snap.services)
        now = self.ctx.clock.now()
        busy_services = {(t.project_id, t.service) for t in snap.open_tasks}
        busy_projects = {t.project_id for t in snap.open_tasks if t.service is None}
        projects = {p.id: p for p in snap.projects}
        rows = {(s.project_id, s.name): s for s in snap.services}

        def left_alone(key: tuple[str, str]) -> bool:
            """Busy (a task has it), being deleted, frozen, or backing off after failures."""
            project_id, _ = key
            project = projects[project_id]
            if project_id in busy_projects or key in busy_services or project.desired == "deleting":
                return True
            row = rows.get(key)
            if row is not None and row.frozen:
                return True
            failed, last_end = snap.failures.get(key, (0, 0.0))
            if failed and now < last_end + RETRY.delay(failed):
                # a broken service must not churn the host; the pass when its back-off ends retries
                self.retry_at = min(self.retry_at or math.inf, last_end + RETRY.delay(failed))
                return True
            return False

        clock = trio.current_time()
        if (not self.ctx.died and clock < self._full_at + self.resync
                and all(left_alone(key) or not self.ctx.goals.readable(projects[key[0]])
                        for key in rows if key[0] in projects)):
            # Every service is some task's or left alone for now (a scale-up's events wake us
            # dozens of times): nothing to plan, so no listing. Orphans and instances without
            # a service row are looked for at least once a resync.
            self.settling = False
            return []
        self._full_at = clock
        actual = merge(await self.ctx.inventory(), snap.records, now)
        self.settling = self._still_listed_running(actual)
        by_service: dict[tuple[str, str], list] = collections.defaultdict(list)
        for inst in actual:
            by_service[(inst.project_id, inst.service)].append(inst)
        wanted: list[dict[str, Any]] = []
        exits: list = []  # of the services queued for repair, noted with the task
        swarm = await self._swarm() if self.ctx.cluster == "swarm" else None
        if swarm is not None:
            # the Swarm restarts its tasks itself: a failed one is an event, never a step
            exits.extend(unnoted_exits([i for i in actual if not i.run_id and i.compute_type == "docker"],
                                       snap.records))
            for project_id, service in swarm.keys:
                by_service.setdefault((project_id, service), [])

        for key in sorted(set(rows) | set(by_service)):
            project_id, service = key
            project = projects.get(project_id)
            if project is None:
                continue  # orphans of vanished projects are handled below
            if left_alone(key):
                continue
            if not self.ctx.goals.readable(project):
                continue
            row = rows.get(key)
            goal = self.ctx.goals.goal_from(project, row)
            if swarm is not None and swarm.owns(goal, key):
                reason = swarm.drift(goal, project.name, key)
                if reason:
                    wanted.append(dict(project_id=project_id, project_name=project.name, service=service,
                                       kind="converge", params={"reason": reason}))
                continue
            steps = plan(goal, by_service.get(key, []), now=now)
            if steps:
                wanted.append(dict(project_id=project_id, project_name=project.name, service=service,
                                   kind="converge", params={"reason": steps.summary()}))
                exits.extend(unnoted_exits(by_service.get(key, []), snap.records))

        orphans = {i.project_id: i for i in actual if i.project_id not in projects}
        if swarm is not None:
            for project_id, name in swarm.projects.items():
                if project_id not in projects and project_id not in orphans:
                    orphans[project_id] = swarm.placeholder(project_id, name)  # 0 replicas: no task stands for it
        for project_id, inst in orphans.items():
            if project_id not in busy_projects:
                wanted.append(dict(project_id=project_id, project_name=inst.project_name or project_id[:12],
                                   service=None, kind="delete",
                                   params={"reason": "instances of a project that no longer exists"}))
        if wanted or exits:
            await self.ctx.store.call(_enqueue_all, wanted, exits)
            for w in wanted:
                log.info("drift found, task queued", project=w["project_name"], service=w["service"],
                         reason=w["params"]["reason"])
            self.ctx.wake_queue()
        return wanted


    async def _swarm(self) -> SwarmView | None:
        from mariposa.swarm.drift import SwarmView
        from mariposa.swarm.driver import SwarmDriver

        driver = self.ctx.drivers.get("docker")
        if not isinstance(driver, SwarmDriver):
            return None
        services, tasks = await driver.observe()
        return SwarmView(self.ctx, services, tasks)

    def _still_listed_running(self, actual: list) -> bool:
        """Whether the runtime said an instance died that its listing still shows running."""
        died = self.ctx.died
        horizon = trio.current_time() - SETTLE
        for instance_id, at in list(died.items()):
            if at < horizon:
                del died[instance_id]
        return any(inst.running and inst.id in died for inst in actual)


def _enqueue_all(db, wanted: list[dict], exits: list) -> None:
    """Queue drift repairs, unless a task appeared meanwhile: a user's task must never be
    superseded by the reconciler's. The exits found are noted in the same transaction."""
    note_exits(db, exits)
    for w in wanted:
        if not task_store.open_for(db, w["project_id"], w["service"]):
            task_store.enqueue(db, **w, author="reconciler")

