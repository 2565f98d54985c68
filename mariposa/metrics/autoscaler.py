"""The autoscale loop: after each round of the metrics collector, every continuous service with
metric triggers is judged (metrics/autoscale.py, pure) on the samples in ``ctx.metrics``, and a
decision is written (store/autoscale.py): a scale task with ``enable: true``, an announcement with
``notify``.

Why after the collector's round rather than on a timer of its own: a decision can only change
when a sample arrives, and judging right after one keeps "threshold crossed for ``time``" to
"scale task queued" within ``time`` plus one interval. Until a collector runs (``ctx.metrics`` is
None) there is nothing to judge, and the loop looks again every ``interval``.

A trigger that cannot apply (a percentage of a limit its instances do not have) is announced once
per daemon run, as ``trigger.unusable``: every round would flood the event log.
"""

from __future__ import annotations

import traceback

import structlog
import trio

from mariposa.context import Context
from mariposa.errors import MariposaError
from mariposa.metrics.autoscale import decide, settings, watched_service
from mariposa.metrics.history import MetricsHistory, Sample
from mariposa.model import ServiceSpec
from mariposa.store import autoscale as autoscale_store
from mariposa.store import goal as goal_store
from mariposa.store.rows import ProjectRow, TaskRow

log = structlog.get_logger()


class Autoscaler:
    def __init__(self, ctx: Context, interval: float = 10.0) -> None:
        self.ctx = ctx
        self.interval = interval  # until the collector's history says its own
        self.told: set[tuple[str, str, str, str]] = set()  # (project, service, trigger, why) announced
        self.decisions = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            history = self.ctx.metrics
            if history is not None:
                self.interval = history.interval
            sampled = getattr(history, "sampled", None)  # a Broadcast, set after each collector round
            if sampled is not None:
                with trio.move_on_after(2 * self.interval):  # a stalled collector: judge anyway (nothing fresh)
                    await sampled.event.wait()
            else:
                await self.ctx.clock.sleep(self.interval)
            try:
                await self.evaluate_once()
            except MariposaError as exc:  # the store away for a moment: the next round judges again
                log.warning("autoscale round skipped", error=exc.message)
            except Exception as exc:  # a bug: log it, keep the daemon and the next rounds
                log.error("autoscale round failed", error=repr(exc), traceback=traceback.format_exc())

    async def evaluate_once(self) -> list[TaskRow]:
        """One judgement of every autoscaled service; the scale tasks it queued."""
        history = self.ctx.metrics
        if history is None:
            return []
        queued: list[TaskRow] = []
        for project in (await self.ctx.projects.current()).by_id.values():
            if project.desired != "running" or project.current_version is None:
                continue
            services = [s for s in await self._spec(project) if s.metric_triggers and not s.runs
                        and settings(s).enable != "false"]
            if services:
                queued += await self._project(project, services, history)
        if queued:
            self.ctx.wake_queue()
        return queued

    async def _spec(self, project: ProjectRow) -> tuple[ServiceSpec, ...]:
        spec = await self.ctx.goals.current_spec(project)  # None: unreadable, nothing to judge
        return spec.services if spec is not None else ()

    async def _project(self, project: ProjectRow, services: list[ServiceSpec],
                       history: MetricsHistory) -> list[TaskRow]:
        rows = {r.name: r for r in await self.ctx.store.call(goal_store.list_services, project.id)}
        now = self.ctx.clock.now()
        queued = []
        for spec in services:
            row = rows.get(spec.name)
            if row is None or row.desired != "running" or row.frozen:
                continue
            since = now - max(t.time for t in spec.metric_triggers) - 2 * history.interval
            samples: dict[str, list[list[Sample]]] = {}
            for name in {watched_service(spec, t) for t in spec.metric_triggers}:
                samples[name] = [s.samples(since) for s in history.of(project.id, name).values()]
            outcome = decide(spec, row.scale, samples, now, row.last_scaled, history.interval)
            for trigger, why in outcome.unusable.items():
                key = (project.id, spec.name, trigger, why)
                if key not in self.told:
                    self.told.add(key)
                    await self.ctx.store.call(autoscale_store.unusable, project.id, spec.name, trigger, why)
                    log.warning("metric trigger cannot apply", project=project.name, service=spec.name,
                                trigger=trigger, why=why)
            decision = outcome.decision
            if decision is None:
                continue
            enable = settings(spec).enable
            done = await self.ctx.store.call(autoscale_store.act, project.id, spec, decision, enable)
            if done is None:
                continue
            self.decisions += 1
            log.info("autoscale " + ("scale" if enable == "true" else "notify"), project=project.name,
                     service=spec.name, scale_from=decision.current, scale_to=decision.target, reason=decision.reason)
            if isinstance(done, TaskRow):
                queued.append(done)
        return queued
