"""The scheduler: one trio task in the daemon's nursery that fires scheduled services, starts
queued runs (manual, event, catch-up, retries) and records how each run ends.

It sleeps until the next thing it must do (a firing, a retry's back-off, a deadline, a timeout)
on the daemon's one clock (``Context.clock``), or until it is woken: by a run asked for
(``Context.wake_scheduler``), or, while runs are running, by any runtime event (one of them may
have ended). It never polls. What to do is decided in ``policy.py``; this module carries it out.

Crash safety: a firing is recorded (``queued``) before anything else; a run becomes ``running``
with the instance id it will have *before* the instance is made, and the instance carries the
run's id in its labels. After a restart, or a SIGKILL anywhere in between, a ``running`` run is
matched with its instance by that id: finished, it is recorded with its exit code; still
running, it is adopted; never made, it is made now, once (creation is idempotent by instance
id). So one firing never runs twice.

Starting, stopping and finishing a run (Docker calls, reading its output) happen in tasks of
their own, so a slow one never delays the next firing.
"""

from __future__ import annotations

import collections
import traceback
from contextlib import aclosing

import attrs
import structlog
import trio

from mariposa.context import Context
from mariposa.converge.apply import make_instance
from mariposa.drivers.base import DriverError
from mariposa.errors import MariposaError, StoreUnavailable
from mariposa.model import Instance, InstanceState, ServiceGoal
from mariposa.runs import policy
from mariposa.store import events as event_store
from mariposa.store import runs as run_store
from mariposa.store.db import new_id
from mariposa.store.runs import MAX_LOGS, RunRow

log = structlog.get_logger()

AFTER_ERROR = 5.0  # a pass that failed (runtime or store unavailable) is tried again this soon
RECHECK = 0.05  # a run's instance died but is still listed running: look again this soon


class Scheduler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.started_at = 0.0
        self.awake_since: dict[tuple[str, str], float] = {}  # per service: since when we watch it
        self.busy: set[str] = set()  # runs with a start, stop or finish in flight
        self.passes = 0
        self.delays: list[float] = []  # scheduled -> started, of the firings started (figures)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.started_at = self.ctx.clock.now()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                changes = self.ctx.runtime_changed.next()
                try:
                    until, watch = await self.pass_once()
                except (DriverError, StoreUnavailable) as exc:
                    log.warning("scheduler pass skipped", error=str(exc))
                    until, watch = self.ctx.clock.now() + AFTER_ERROR, False
                except Exception as exc:  # a bug: log it, keep the daemon
                    log.error("scheduler pass failed", error=repr(exc), traceback=traceback.format_exc())
                    until, watch = self.ctx.clock.now() + AFTER_ERROR, False
                self.ctx.run_changes.set()
                await self._sleep(until, changes if watch else None)

    async def _sleep(self, until: float, changes: trio.Event | None) -> None:
        """Until ``until`` on the daemon's clock, a wake-up, or (when given) a runtime event."""
        async with trio.open_nursery() as nursery:
            async def timer() -> None:
                await self.ctx.clock.sleep_until(until)
                nursery.cancel_scope.cancel()

            async def woken() -> None:
                await self.ctx.schedule_wakeup.wait()
                nursery.cancel_scope.cancel()

            async def runtime(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(timer)
            nursery.start_soon(woken)
            if changes is not None:
                nursery.start_soon(runtime, changes)

    # -- one look ---------------------------------------------------------------------------------

    async def _services(self) -> tuple[dict[tuple[str, str], tuple[ServiceGoal, bool]], set[str]]:
        """Every scheduled or event service with its goal and whether it is suspended (stopped
        or frozen), and the projects whose version cannot be read (their runs are left alone)."""
        ctx = self.ctx
        snap = await ctx.goals.snapshot()
        projects = {p.id: p for p in snap.projects}
        unreadable = {p.id for p in snap.projects if not ctx.goals.readable(p)}
        found = {}
        for row in snap.services:
            project = projects.get(row.project_id)
            if project is None or project.id in unreadable:
                continue
            goal = ctx.goals.goal_from(project, row)
            if goal is not None and goal.spec.runs:
                found[(row.project_id, row.name)] = (goal, goal.desired != "running" or bool(row.frozen))
        return found, unreadable

    async def pass_once(self) -> tuple[float, bool]:
        """Fire what is due, then move every run on; (when to look again, whether runtime events
        matter meanwhile)."""
        ctx = self.ctx
        self.passes += 1
        services, unreadable = await self._services()
        now = ctx.clock.now()
        open_runs = await ctx.store.call(run_store.open_runs)
        cursors = await ctx.store.call(run_store.cursors)
        fired = False
        for key, (goal, suspended) in services.items():
            if goal.spec.service_type != "scheduled":
                continue
            if suspended:
                self.awake_since.pop(key, None)  # resumed later: what it missed is caught up
                continue
            awake = self.awake_since.setdefault(key, self.started_at if self.passes == 1 else now)
            cursor = cursors.get(key)
            if cursor is None:  # a new service fires from now on: nothing before it is "missed"
                await ctx.store.call(run_store.set_cursor, key[0], key[1], now)
                cursors[key] = now
                continue
            active = [r for r in open_runs if r.key == key]
            decision = policy.on_firings(goal.spec, goal.scale, cursor, now, awake, active)
            if decision.firings or decision.stop:
                await ctx.store.call(run_store.record_firings, key[0], key[1], decision.fired_through,
                                     decision.firings, decision.stop)
                fired = True
                self._log_firings(goal, decision)
                if any(state != "queued" for _, _, state, _ in decision.firings):
                    spec = goal.spec
                    await ctx.store.call(run_store.prune, key[0], key[1], spec.history_succeeded, spec.history_failed)
            cursors[key] = decision.fired_through
        if fired:
            open_runs = await ctx.store.call(run_store.open_runs)
        running = [r for r in open_runs if r.state == "running"]
        instances: dict[str, Instance] = {}
        if running:
            instances = {i.id: i for i in await ctx.inventory() if i.run_id}
        settling = False
        for run in running:
            inst = instances.get(run.instance_id or "")
            # the Engine announces a death before its listing shows it (converge/reconciler.py):
            # the die event that woke us is the last one this run's instance sends, so look again soon
            settling = settling or (inst is not None and inst.running and inst.id in ctx.died)
            if run.id not in self.busy and run.project_id not in unreadable:
                await self._look_at(run, services.get(run.key), inst, now)
        by_service: dict[tuple[str, str], list[RunRow]] = collections.defaultdict(list)
        for run in open_runs:
            by_service[run.key].append(run)
        for key, runs in by_service.items():
            if key[0] in unreadable:
                continue
            await self._start_queued(key, services.get(key), runs, now)
        wake = now + policy.MAX_SLEEP
        for key in services.keys() | by_service.keys():
            found = services.get(key)
            watched = found[0].spec if found is not None and not found[1] else None
            runs = [r for r in by_service.get(key, []) if r.id not in self.busy]  # those wake us when done
            wake = min(wake, policy.next_wake(watched, cursors.get(key), runs, now))
        if settling:
            wake = min(wake, now + RECHECK)
        return wake, bool(running) or any(r.state == "running" for r in open_runs)

    def _log_firings(self, goal: ServiceGoal, decision: policy.Decision) -> None:
        for when, trigger, state, reason in decision.firings:
            log.info("firing recorded", project=goal.project_name, service=goal.spec.name, scheduled=round(when, 3),
                     trigger=trigger, state=state, reason=reason)

    async def _look_at(self, run: RunRow, found: tuple[ServiceGoal, bool] | None, inst: Instance | None,
                       now: float) -> None:
        """A running run: adopt, stop, time out or finish it as its instance says."""
        goal = found[0] if found else None
        if inst is None:
            if run.started is None and goal is not None and not run.stop_requested:
                self._spawn(run.id, self._start, run, goal)  # recorded, never made (a crash): made now, once
            else:
                await self._record_end(run, goal, "failed", None, b"", "its instance is gone")
            return
        if inst.state == InstanceState.RUNNING:
            if run.started is None:  # made just before a crash: adopted
                await self.ctx.store.call(run_store.mark_started, run.id, inst.created)
            if goal is None:
                self._spawn(run.id, self._stop, run, inst, None, "stopped", "its service was removed")
            elif run.stop_requested:
                self._spawn(run.id, self._stop, run, inst, goal, "stopped", None)
            elif goal.spec.timeout and now >= (run.started or inst.created) + goal.spec.timeout:
                self._spawn(run.id, self._stop, run, inst, goal, "failed", f"timed out after {goal.spec.timeout:g}s")
        elif inst.state == InstanceState.EXITED or (inst.state == InstanceState.CREATING and run.started is None):
            self._spawn(run.id, self._finish, run, inst, goal, None, None)

    async def _start_queued(self, key: tuple[str, str], found: tuple[ServiceGoal, bool] | None,
                            runs: list[RunRow], now: float) -> None:
        ctx = self.ctx
        queued = [r for r in runs if r.state == "queued"]
        if not queued:
            return
        if found is None:
            for run in queued:
                await ctx.store.call(run_store.request_stop, run.id, "its service was removed")
            return
        goal, suspended = found
        spec = goal.spec
        for run in queued:
            if (d := policy.deadline(spec, run)) is not None and now > d:
                await ctx.store.call(run_store.mark_missed, run.id,
                                     f"could not start within starting_deadline {spec.starting_deadline:g}s")
        if suspended and goal.desired != "running":
            return  # a stopped service starts nothing (not even what is queued) until started again
        if spec.concurrency == "replace":
            for run in runs:
                if run.state == "running" and not run.stop_requested:
                    await ctx.store.call(run_store.request_stop, run.id,
                                         "replaced by a newer run (concurrency: replace)")
                    ctx.wake_scheduler()
            if any(r.state == "running" for r in runs):
                return  # started once the replaced run has stopped
        for run in policy.startable(spec, goal.scale, runs, now):
            instance_id = new_id()
            if await ctx.store.call(run_store.mark_starting, run.id, instance_id):
                started = attrs.evolve(run, state="running", instance_id=instance_id)
                self._spawn(run.id, self._start, started, goal)

    # -- carrying it out, each in a task of its own ----------------------------------------------

    def _spawn(self, run_id: str, fn, *args) -> None:
        if run_id in self.busy or self._nursery is None:
            return
        self.busy.add(run_id)

        async def go() -> None:
            try:
                await fn(*args)
            except (DriverError, StoreUnavailable) as exc:
                log.warning("run step failed; tried again at the next look", run=run_id[:12], error=str(exc))
            except Exception as exc:
                log.error("run step failed", run=run_id[:12], error=repr(exc), traceback=traceback.format_exc())
            finally:
                self.busy.discard(run_id)
                self.ctx.wake_scheduler()
                self.ctx.run_changes.set()

        self._nursery.start_soon(go)

    async def _start(self, run: RunRow, goal: ServiceGoal) -> None:
        ctx = self.ctx
        assert run.instance_id is not None
        try:
            inst = await make_instance(ctx, goal, run.instance_id, run_id=run.id, env=run.env)
        except (DriverError, MariposaError) as exc:
            await self._record_end(run, goal, "failed", None, b"", f"could not start: {exc}")
            return
        started = ctx.clock.now()
        await ctx.store.call(run_store.mark_started, run.id, started)
        if run.trigger in ("schedule", "catch-up") and run.attempt == 0:
            self.delays.append(started - run.scheduled)
        log.info("run started", project=goal.project_name, service=goal.spec.name, run=run.id[:12],
                 trigger=run.trigger, delay=round(started - run.scheduled, 3), instance=inst.name)
        await ctx.store.call(lambda db: event_store.record(
            db, "run.start", f"{goal.spec.name}: run {run.id[:12]} ({run.trigger}) started as {inst.name}",
            project_id=goal.project_id, service=goal.spec.name, instance=inst.id))

    async def _stop(self, run: RunRow, inst: Instance, goal: ServiceGoal | None, state: str,
                    reason: str | None) -> None:
        driver = self.ctx.driver_for(inst.compute_type)
        await driver.stop(inst, goal.spec.stop_timeout if goal else None)
        after = next((i for i in await driver.inventory(inst.project_id) if i.id == inst.id), inst)
        await self._finish(run, after, goal, state, reason)

    async def _finish(self, run: RunRow, inst: Instance, goal: ServiceGoal | None, state: str | None,
                      reason: str | None) -> None:
        """Its output kept with the run, its instance removed, its end recorded."""
        driver = self.ctx.driver_for(inst.compute_type)
        output = await self._output(inst)
        code = inst.exit_code
        if state is None:
            state = "succeeded" if code == 0 else "failed"
            if code is None:
                reason = "it never started"
        await driver.remove(inst)
        await self.ctx.discard_instance_files(inst.project_name, inst.id)
        await self._record_end(run, goal, state, code, output, reason)

    async def _output(self, inst: Instance) -> bytes:
        """The instance's output, its last ``MAX_LOGS`` bytes (never more held at once than twice that)."""
        driver = self.ctx.driver_for(inst.compute_type)
        chunks: collections.deque[bytes] = collections.deque()
        size = 0
        try:
            async with aclosing(driver.logs(inst)) as lines:
                async for line in lines:
                    chunks.append(line.line + b"\n")
                    size += len(chunks[-1])
                    while size > 2 * MAX_LOGS and len(chunks) > 1:
                        size -= len(chunks.popleft())
        except DriverError as exc:
            log.warning("run output not read", instance=inst.name, error=str(exc))
        return b"".join(chunks)[-MAX_LOGS:]

    async def _record_end(self, run: RunRow, goal: ServiceGoal | None, state: str, code: int | None,
                          output: bytes, reason: str | None) -> None:
        ctx = self.ctx
        ended = ctx.clock.now()
        retry = policy.retry_at(goal.spec, run, state, ended) if goal else None

        def record(db) -> bool:
            if not run_store.finish(db, run.id, state, code, output, reason, ended):
                return False  # it had ended already (a look that raced the end): nothing to add
            if retry is not None:
                run_store.retry(db, run, retry)
            if goal is not None:
                run_store.prune(db, run.project_id, run.service, goal.spec.history_succeeded,
                                goal.spec.history_failed)
            what = f"exit code {code}" if code is not None else (reason or state)
            # a failed run is a type of its own, for webhooks' run_failed (`events --type run` shows all ends)
            kind = "run.failed" if state == "failed" else "run.end"
            event_store.record(db, kind, f"{run.service}: run {run.id[:12]} {state} ({what})",
                               project_id=run.project_id, service=run.service, instance=run.instance_id)
            return True

        if not await ctx.store.call(record):
            return
        log.info("run ended", service=run.service, run=run.id[:12], state=state, exit_code=code, reason=reason,
                 retry_in=None if retry is None else round(retry - ended, 3))
