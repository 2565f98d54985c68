"""Keeps every instance's live mdata files equal to its service's ``mdata`` rendered from the
project's meta of now (the spec: "the returned value is the current state of the project
variables or metadata, not the value at the time the instance was provisioned").

Three moments change what an instance should read, and each marks its project for a refresh:
- a meta change (control/meta.py marks it before it answers, so a client that set a key and then
  reads the file waits only for the refresh, never for a timer);
- a new current version whose ``mdata`` differs, or a new scale (the reconciler reports each
  project's goal on each pass; values are live, so a change of mdata alone replaces no instance:
  model.py);
- an instance made while a refresh ran, which the refresh could not list yet (apply.py marks
  the project again once the instance exists).
A refresh renders every instance's values, writes only what differs (mdata/files.py swaps them
in whole) and signals (``mdata_signal``) only the instances whose files changed. A cluster
service's (``cluster = "swarm"``) files are Swarm configs, not files here: for those the refresh
compares the values of now with the Swarm service's and, if they differ, queues a converge
(swarm/converge.py makes the new configs and rolls the tasks onto them). The keeper runs
refreshes one at a time, so two never write one directory at once; a crash between a meta change
and its refresh is healed by the first pass after the restart, which marks every project.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlite_utils
import structlog
import trio

from mariposa.converge import render
from mariposa.drivers.base import DriverError
from mariposa.errors import MariposaError, NotFound
from mariposa.manifest import interpolate
from mariposa.mdata.files import MdataFiles
from mariposa.model import Instance, ServiceSpec
from mariposa.store import events as event_store
from mariposa.store import goal as goal_store
from mariposa.store import meta as meta_store
from mariposa.store.rows import ProjectRow, ServiceRow
from mariposa.wakeup import Wakeup

log = structlog.get_logger()

RETRY = 1.0  # seconds before a failed refresh is tried again


def values_for(spec: ServiceSpec, variables: Mapping[str, str], meta: Mapping[str, str | None]) -> dict[str, str]:
    """The files one instance shows. A key whose template names meta that is not set any more
    (meta rm refuses keys a current version uses, so only an older version's instance meets
    this) is left out, never written empty."""
    lookup = interpolate.lookup_in(variables, meta)
    out = {}
    for key, text in spec.mdata:
        try:
            out[key] = interpolate.render(text, lookup) if "{{" in text else text
        except interpolate.Undefined:
            continue
    return out


class _Busy(Exception):
    """A cluster service whose mdata changed has a task open: look again in a moment."""


def _on_swarm(ctx, spec: ServiceSpec) -> bool:
    """Whether the service's instances are Swarm tasks (swarm/converge.py ``on_swarm``)."""
    return (getattr(ctx, "cluster", "none") == "swarm" and spec.compute_type == "docker"
            and spec.service_type == "continuous")


def _read(db: sqlite_utils.Database, project_id: str):
    """The project, its current version, meta and service rows, in one store call (None: gone)."""
    try:
        project = goal_store.get_project(db, project_id)
    except NotFound:
        return None
    if project.desired == "deleting" or project.current_version is None:
        return None
    version = goal_store.get_version(db, project.current_version)
    services = {s.name: s for s in goal_store.list_services(db, project_id)}
    return project, version, meta_store.values(db, project_id), services


class MdataKeeper:
    def __init__(self, ctx, files: MdataFiles) -> None:
        self.ctx = ctx
        self.files = files
        self._dirty: set[str] = set()
        self._seen: dict[str, tuple] = {}  # project id -> its goal when the reconciler last looked
        self._wakeup = Wakeup()
        self.refreshes = 0  # for tests: how many refreshes ran

    def mark(self, project_id: str) -> None:
        """The project's mdata may read differently now: refresh it soon."""
        self._dirty.add(project_id)
        self._wakeup.set()

    def goals_seen(self, projects: Iterable[ProjectRow], services: Iterable[ServiceRow]) -> None:
        """The reconciler's view of every project's goal (its current version and its services'
        scales, which ``{{ .scale }}`` reads): one that changed may change mdata."""
        goals: dict[str, tuple] = {p.id: (p.current_version, []) for p in projects}
        for s in services:
            if s.project_id in goals:
                goals[s.project_id][1].append((s.name, s.scale))
        for project_id, (version, scales) in goals.items():
            goal = (version, tuple(scales))
            if self._seen.get(project_id) != goal:
                self._seen[project_id] = goal
                self.mark(project_id)
        for project_id in set(self._seen) - set(goals):
            del self._seen[project_id]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wakeup.wait()
            while self._dirty:
                project_id = self._dirty.pop()
                try:
                    await self.refresh(project_id)
                except _Busy:
                    await trio.sleep(RETRY)
                    self.mark(project_id)
                except (DriverError, MariposaError, OSError) as exc:
                    # the runtime away, the store busy: the files stay as they are until it retries
                    log.warning("mdata refresh failed; will retry", project=project_id[:12], error=str(exc))
                    await trio.sleep(RETRY)
                    self.mark(project_id)
                except Exception as exc:  # a bug (an unreadable version): log it, keep the daemon
                    log.error("mdata refresh failed", project=project_id[:12], error=repr(exc), exc_info=True)
                    await trio.sleep(RETRY)

    async def deliver(self, goal, instance_id: str, instance_name: str,
                      rendering: tuple[dict, dict] | None = None) -> str | None:
        """An instance's files before it is made; the directory to mount (None: no mdata).
        ``rendering``: the meta and variables its create read already (render.for_instance)."""
        spec = goal.spec
        if not spec.mdata:
            return None
        meta, variables = rendering or await render.for_instance(self.ctx.store, goal, instance_id, instance_name)
        directory, _ = await trio.to_thread.run_sync(
            self.files.write, goal.project_name, instance_id, values_for(spec, variables, meta))
        return directory

    def discard(self, project_name: str, instance_id: str) -> None:
        """Blocking: call from a worker thread."""
        self.files.discard(project_name, instance_id)

    async def refresh(self, project_id: str) -> int:
        """Write every instance's values of now; how many instances' files changed."""
        self.refreshes += 1
        read = await self.ctx.store.call(_read, project_id)
        if read is None:
            return 0
        project, version, meta, services = read
        spec = await self.ctx.goals.spec_of(version)
        on_swarm = {s.name for s in spec.services if s.mdata and _on_swarm(self.ctx, s)}
        if on_swarm:
            await self._swarm(project, version, on_swarm)
        instances = [i for i in await self.ctx.inventory(project_id) if not i.removing]
        writes: list[tuple[Instance, ServiceSpec, dict[str, str]]] = []
        for inst in instances:
            svc = spec.service(inst.service)
            if svc is None or not svc.mdata or svc.name in on_swarm:
                continue
            row = services.get(inst.service)
            variables = render.variables(
                project_name=project.name, project_id=project.id, version_id=version.id,
                service_id=row.id if row else None, spec=svc, scale=row.scale if row else 0,
                instance_id=inst.id, instance_name=inst.name)
            writes.append((inst, svc, values_for(svc, variables, meta)))

        def write_all() -> list[bool]:
            return [self.files.write(project.name, inst.id, values)[1] for inst, _, values in writes]

        changed = await trio.to_thread.run_sync(write_all) if writes else []
        touched = [(inst, svc) for (inst, svc, _), did in zip(writes, changed, strict=True) if did]
        if not touched:
            return 0
        async with trio.open_nursery() as nursery:
            for inst, svc in touched:
                if inst.running:
                    nursery.start_soon(self._deliver_live, inst, svc.mdata_signal)
        message = f"mdata of {len(touched)} instance{'s' if len(touched) != 1 else ''} updated"
        log.info(message, project=project.name)
        await self.ctx.store.call(lambda db: event_store.record(db, "mdata.update", message, project_id=project.id))
        return len(touched)

    async def _swarm(self, project: ProjectRow, version, services: set[str]) -> None:
        """Queue a converge for each cluster service whose Swarm service holds other mdata values
        than those of now. If a task of it is open, none: that task re-reads the meta each round,
        and the project is looked at again once it may have ended (``_Busy``), so a change the
        task read too late to act on is never lost."""
        from mariposa.store import tasks as task_store
        from mariposa.swarm.converge import mdata_values, observe
        from mariposa.swarm.driver import SwarmDriver
        from mariposa.swarm.spec import mdata_digest

        driver = self.ctx.drivers.get("docker")
        if not isinstance(driver, SwarmDriver):
            return
        busy = False
        swarm_services, swarm_tasks = await driver.observe(project.id)
        for name in sorted(services):
            goal, _row, _records = await self.ctx.goals.service_view(project.id, name)
            if goal is None or goal.version_id != version.id:
                continue
            want = mdata_digest(await mdata_values(self.ctx, goal))
            held = [o for o in observe(swarm_services, swarm_tasks, project.id, name)
                    if o.spec_hash == goal.spec.spec_hash]
            if not held or all(o.mdata == want for o in held):
                continue

            def enqueue(db, name: str = name) -> bool:
                if task_store.open_for(db, project.id, name):
                    return False
                task_store.enqueue(db, project_id=project.id, project_name=project.name, service=name,
                                   kind="converge", params={"reason": "mdata changed: new Swarm configs"},
                                   author="mdata")
                return True

            if await self.ctx.store.call(enqueue):
                log.info("mdata changed: Swarm service to update", project=project.name, service=name)
                self.ctx.wake_queue()
            else:
                busy = True
        if busy:
            raise _Busy(project.name)

    async def _deliver_live(self, inst: Instance, signal: str | None) -> None:
        """A runtime that cannot mount the host's directory (a VM: drivers/qemu.py ``push_mdata``)
        is sent the files first; then the signal, so the process reads the new values."""
        driver = self.ctx.driver_for(inst.compute_type)
        push = getattr(driver, "push_mdata", None)
        try:
            if push is not None:
                await push(inst)
            if signal:
                await driver.signal(inst, signal)
        except (DriverError, trio.TooSlowError) as exc:  # it stopped meanwhile: it reads them when it starts
            log.info("mdata not delivered live", instance=inst.name, signal=signal, error=str(exc))
