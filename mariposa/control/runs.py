"""Runs of scheduled and event services (mariposa/runs/): ask for one (``service run``), list
them, read one and its output, stop one, and see when a schedule fires next.

Asking for a run only writes a queued row and wakes the scheduler: every Docker call of a run
is the scheduler's, so a run asked for and a firing go through the same concurrency rules.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Mapping
from contextlib import aclosing

from mariposa.control.base import Area, Feed, Send, operation
from mariposa.control.caller import Caller
from mariposa.drivers.base import DriverError
from mariposa.errors import BadRequest
from mariposa.manifest.report import ENV_KEY_RE
from mariposa.model import ServiceSpec
from mariposa.runs.policy import schedule_of
from mariposa.runs.schedule import zone as zone_of
from mariposa.store import goal as goal_store
from mariposa.store import runs as run_store
from mariposa.store.rows import ProjectRow, ServiceRow
from mariposa.store.runs import DONE, STATES, RunRow

MAX_KEY = 200  # characters of an idempotency key
MAX_ENV = 100  # variables given with one run
MAX_NEXT = 1000  # firings `service next` shows at most


def run_json(row: RunRow, project_name: str | None = None) -> dict:
    return {**row.to_json(), **({"project": project_name} if project_name else {})}


def _env(value: object) -> tuple[tuple[str, str], ...]:
    """``--env K=V``: a list of K=V strings or a {K: V} object."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        pairs = [(k, v) for k, v in value.items()]
    elif isinstance(value, list):
        pairs = []
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise BadRequest(f"env entries are KEY=VALUE strings, not {item!r}")
            key, _, val = item.partition("=")
            pairs.append((key, val))
    else:
        raise BadRequest("'env' must be a list of KEY=VALUE strings or an object")
    if len(pairs) > MAX_ENV:
        raise BadRequest(f"at most {MAX_ENV} environment variables with one run")
    for key, val in pairs:
        if not isinstance(key, str) or not ENV_KEY_RE.fullmatch(key):
            raise BadRequest(f"invalid environment variable name {key!r}")
        if not isinstance(val, str) or "\0" in val:
            raise BadRequest(f"environment variable {key}: the value must be a string without NUL")
    return tuple(pairs)


class Runs(Area):
    async def _service(self, project: str, service: str) -> tuple[ProjectRow, ServiceRow, ServiceSpec]:
        p = await self._project(project)
        svc = await self.ctx.store.call(goal_store.get_service, p, service)
        version = await self.ctx.store.call(goal_store.current_version, p)
        spec = (await self.ctx.goals.spec_of(version)).service(svc.name)
        if spec is None:
            raise BadRequest(f"service {svc.name} is not in project {p.name}'s current version")
        return p, svc, spec

    @operation("service.run", target="project")
    async def start(self, caller: Caller, project: str, service: str, env: object = None,
                    idempotency_key: object = None) -> dict:
        """A run now (a manual one: a schedule is left alone). With an idempotency key already
        used within 24 h, that run instead (``"created": false``)."""
        p, svc, spec = await self._service(project, service)
        if not spec.runs:
            raise BadRequest(f"service {svc.name} is continuous: only scheduled and event services run "
                             "(service_type: scheduled or event)")
        if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key
                                            or len(idempotency_key) > MAX_KEY):
            raise BadRequest(f"an idempotency key is a string of 1 to {MAX_KEY} characters")
        trigger = "url" if caller.transport == "trigger" else "manual"  # a public trigger's POST, or asked
        row, created = await self.ctx.store.call(
            lambda db: run_store.request(db, p.id, svc.name, trigger, spec.queue_limit,
                                         idempotency_key=idempotency_key, env=_env(env), author=caller.author))
        self.ctx.wake_scheduler()
        return {**run_json(row, p.name), "created": created}

    @operation("service.runs", target="project")
    async def list(self, caller: Caller, project: str, service: str, state: str | None = None,
                   limit: object = 100) -> builtins.list[dict]:
        p = await self._project(project)
        svc = await self.ctx.store.call(goal_store.get_service, p, service)
        states = tuple(s for s in (state or "").split(",") if s)
        for s in states:
            if s not in STATES:
                raise BadRequest(f"unknown run state '{s}' (one of {', '.join(STATES)})")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise BadRequest("limit must be a whole number from 1 to 10000")
        rows = await self.ctx.store.call(run_store.listing, p.id, svc.name, states, limit)
        return [run_json(r) for r in rows]

    @operation("run.get", target="run", kind="run")
    async def get(self, caller: Caller, run: str) -> dict:
        return run_json(await self.ctx.store.call(run_store.get, run))

    @operation("run.stop", target="run", kind="run")
    async def stop(self, caller: Caller, run: str) -> dict:
        row = await self.ctx.store.call(run_store.get, run)
        if row.state in DONE:
            raise BadRequest(f"run {row.id[:12]} has ended ({row.state})")
        row = await self.ctx.store.call(run_store.request_stop, row.id, f"stopped by {caller.author}")
        self.ctx.wake_scheduler()
        return run_json(row)

    @operation("service.next", target="project")
    async def next(self, caller: Caller, project: str, service: str, count: object = 5) -> dict:
        """The next firings, in the service's time zone and in UTC (none while it is stopped:
        then they would be caught up as catch_up says when it starts)."""
        p, svc, spec = await self._service(project, service)
        if spec.service_type != "scheduled":
            raise BadRequest(f"service {svc.name} has no schedule (service_type {spec.service_type})")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_NEXT:
            raise BadRequest(f"count must be a whole number from 1 to {MAX_NEXT}")
        schedule = schedule_of(spec)
        zone = zone_of(spec.time_zone)
        times = schedule.upcoming(self.ctx.clock.now(), count)
        return {"service": svc.name, "time_zone": spec.time_zone, "schedule": list(spec.schedule),
                "suspended": svc.desired != "running" or bool(svc.frozen),
                "next": [{"at": t, "local": dt.datetime.fromtimestamp(t, zone).isoformat(),
                          "utc": dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")}
                         for t in times]}

    @operation("run.logs", target="run", kind="run")
    async def logs(self, caller: Caller, run: str, follow: bool = False) -> Feed:
        """The run's output: while it runs, its instance's (followed until it ends, with
        ``follow``); once it ended, what was kept with it. A queued run is waited for (``follow``)."""
        row = await self.ctx.store.call(run_store.get, run)
        ctx = self.ctx

        async def feed(send: Send) -> None:
            sent = 0
            current = row
            while True:
                change = ctx.run_changes.next()
                current = await ctx.store.call(run_store.get, current.id)
                if current.state in DONE:
                    kept = (await ctx.store.call(run_store.logs, current.id)).splitlines()
                    if kept[sent:]:
                        await send([_record(current, line) for line in kept[sent:]])
                    return
                inst = None
                if current.state == "running" and current.instance_id:
                    inst = next((i for i in await ctx.inventory(current.project_id) if i.id == current.instance_id),
                                None)
                if inst is not None:
                    driver = ctx.driver_for(inst.compute_type)
                    try:
                        async with aclosing(driver.logs(inst, follow=follow)) as lines:
                            async for line in lines:
                                await send([_record(current, line.line, line.when)])
                                sent += 1
                    except DriverError:
                        pass  # removed meanwhile: what was kept with the run follows
                    if not follow:
                        return
                elif not follow:
                    return
                await change.wait()

        return Feed(feed)


def _record(row: RunRow, line: bytes, when: float | None = None) -> dict:
    return {"run": row.id, "instance": row.instance_id or "", "name": row.id[:12], "service": row.service,
            "time": when if when is not None else (row.ended or 0.0),
            "line": line.decode("utf-8", "replace").rstrip("\r")}
