"""Services of a project: add, update and delete them (each a new project version, made from
one service's section of the manifest), read them, scale, start, stop, thaw, reprovision and
revert them, and their versions and health."""

from __future__ import annotations

import builtins
import functools

import attrs

from mariposa.control import logs, manifests, rollouts, views
from mariposa.control.base import Area, Feed, operation
from mariposa.control.caller import Caller
from mariposa.control.manifests import refuse_if_file_managed
from mariposa.control.projects import tasks_json, version_made
from mariposa.control.pulls import Report
from mariposa.errors import BadRequest, Conflict, NotFound
from mariposa.manifest import ManifestError
from mariposa.manifest.report import SERVICE_NAME_RE
from mariposa.store import goal as goal_store
from mariposa.store.rows import ProjectRow, ServiceRow


class Services(Area):
    async def rows(self, project: str, service: str) -> tuple[ProjectRow, ServiceRow]:
        p = await self._project(project)
        return p, await self.ctx.store.call(goal_store.get_service, p, service)

    def _queued(self, *tasks) -> dict:
        self.ctx.wake_queue()
        return {"tasks": tasks_json(list(tasks))}

    async def _in_manifest(self, p: ProjectRow, service: str, doing: str) -> str:
        """The name of the service ``service`` (a name, id or id prefix) of the current version."""
        names = (await self.ctx.goals.spec_of(await self.ctx.store.call(goal_store.current_version, p))).service_names
        if service not in names:
            try:
                service = (await self.ctx.store.call(goal_store.get_service, p, service)).name
            except NotFound:
                pass
        if service not in names:
            hint = f": add it with 'mariposa -j {p.name} service add {service} FILE'" if doing == "update" else ""
            raise NotFound(f"project '{p.name}' has no service '{service}'{hint}")
        return service

    @operation("service.add", target="project")
    async def add(self, caller: Caller, project: str, service: str, manifest: object,
                  filename: str = "<section>", *, report: Report | None = None) -> dict:
        """A new version with service ``service`` added from ``manifest``, one service's section;
        ``report`` is shown the progress of any pull its image needs."""
        p = await self._project(project)
        refuse_if_file_managed(caller, p, "edit")
        if not isinstance(service, str) or not SERVICE_NAME_RE.match(service):
            raise BadRequest(f"invalid service name {service!r}: it becomes a DNS name, so use lowercase letters, "
                             "digits and '-', at most 63 characters, starting and ending with a letter or digit")
        manifest = manifests.require_text(manifest)
        current = await self.ctx.store.call(goal_store.current_version, p)
        if service in (await self.ctx.goals.spec_of(current)).service_names:
            raise Conflict(f"project '{p.name}' already has a service '{service}': change it with "
                           f"'mariposa -j {p.name} service update {service} FILE'")
        return version_made(await rollouts.put_service(
            self.ctx, p, service, manifest, str(filename), caller.author, {}, "service add: ", report))

    @operation("service.update", target="project")
    async def update(self, caller: Caller, project: str, service: str, manifest: object,
                     filename: str = "<section>", *, rolling: object = None, count: object = None,
                     report: Report | None = None) -> dict:
        """A new version with service ``service``'s section replaced by ``manifest``, rolled out
        as `project update` rolls out (``rolling``, ``count``: a canary)."""
        p = await self._project(project)
        refuse_if_file_managed(caller, p, "edit")
        name = await self._in_manifest(p, service, "update")
        manifest = manifests.require_text(manifest)
        params = rollouts.rollout_params(rolling, count)
        return version_made(await rollouts.put_service(
            self.ctx, p, name, manifest, str(filename), caller.author, params, "service update: ", report))

    @operation("service.delete", target="project")
    async def delete(self, caller: Caller, project: str, service: str) -> dict:
        """A new version without service ``service``: its instances are removed. A project keeps at
        least one service; the last one goes with `project delete`."""
        p = await self._project(project)
        refuse_if_file_managed(caller, p, "edit")
        name = await self._in_manifest(p, service, "delete")
        names = (await self.ctx.goals.spec_of(await self.ctx.store.call(goal_store.current_version, p))).service_names
        if list(names) == [name]:
            raise Conflict(f"'{name}' is the last service of project '{p.name}' and a project has at least one: "
                           f"delete the project instead ('mariposa project delete {p.name}')")
        return version_made(await rollouts.drop_service(self.ctx, p, name, caller.author, {}))

    @operation("service.list", target="project")
    async def list(self, caller: Caller, project: str) -> list[dict]:
        return await views.services(self.ctx, await self._project(project))

    @operation("service.get", target="project")
    async def get(self, caller: Caller, project: str, service: str) -> dict:
        p, svc = await self.rows(project, service)
        summary = next(s for s in await views.services(self.ctx, p) if s["id"] == svc.id)
        version = await self.ctx.store.call(goal_store.current_version, p)
        try:
            spec = (await self.ctx.goals.spec_of(version)).service(svc.name)
        except ManifestError:  # a version today's parser refuses: no range to keep to, the scale stands
            spec = None
        return {**summary, "project": p.name, "version": version.seq,
                "spec": attrs.asdict(spec) if spec else None, "spec_hash": spec.spec_hash if spec else None}

    # builtins.list: in this class body, `list` names the method above
    @operation("service.instances", target="project")
    async def instances(self, caller: Caller, project: str, service: str, offset: object = 0,
                        limit: object = None) -> builtins.list[dict]:
        """The service's instances, oldest first; ``offset`` and ``limit`` page them."""
        start, most = _count("offset", offset), _count("limit", limit)
        p, svc = await self.rows(project, service)
        return await views.instances(self.ctx, p.id, svc.name, start or 0, most)

    @operation("service.scale", target="project")
    async def scale(self, caller: Caller, project: str, service: str, amount: object) -> dict:
        if amount is None:
            raise BadRequest("'scale' is required: a number, or +N / -N")
        if isinstance(amount, bool) or not isinstance(amount, int | str):
            raise BadRequest(f"'scale' must be a whole number, or a string +N / -N, not {amount!r:.40}")
        if isinstance(amount, int) and amount < 0:  # str(-1) would read as the relative '-1'
            raise BadRequest(f"scale is at least 0, not {amount} (a relative change is a string: \"{amount}\")")
        p, svc = await self.rows(project, service)
        # the current spec's autoscale range: a scale outside it is refused while autoscale scales
        version = await self.ctx.store.call(goal_store.current_version, p)
        try:
            spec = (await self.ctx.goals.spec_of(version)).service(svc.name)
        except ManifestError:  # a version today's parser refuses: no range to keep to, the scale stands
            spec = None
        scale = functools.partial(goal_store.scale_service, spec=spec)
        return self._queued(await self.ctx.store.call(scale, p, svc, str(amount), caller.author))

    @operation("service.start", target="project")
    async def start(self, caller: Caller, project: str, service: str) -> dict:
        p, svc = await self.rows(project, service)
        running = [i for i in await self.ctx.inventory(p.id) if i.service == svc.name and i.running]
        if svc.desired == "running" and running:
            raise Conflict(f"service {svc.name} is already running ({len(running)} instances)")
        return self._queued(await self.ctx.store.call(goal_store.set_service_desired, p, svc, "running", caller.author))

    @operation("service.stop", target="project")
    async def stop(self, caller: Caller, project: str, service: str) -> dict:
        p, svc = await self.rows(project, service)
        return self._queued(await self.ctx.store.call(goal_store.set_service_desired, p, svc, "stopped", caller.author))

    @operation("service.thaw", target="project")
    async def thaw(self, caller: Caller, project: str, service: str) -> dict:
        p, svc = await self.rows(project, service)
        return self._queued(await self.ctx.store.call(goal_store.thaw_service, p, svc, caller.author))

    @operation("service.reprovision", target="project")
    async def reprovision(self, caller: Caller, project: str, service: str, *, version: str | None = None,
                          image: str | None = None, instance: str | None = None, rolling: object = None,
                          count: object = None) -> dict:
        p, svc = await self.rows(project, service)
        return self._queued(await rollouts.reprovision(
            self.ctx, p, svc, caller.author, version_ref=version, image=image, instance=instance, rolling=rolling,
            count=count))

    @operation("service.revert", target="project")
    async def revert(self, caller: Caller, project: str, service: str, version: str | None, *,
                     rolling: object = None, count: object = None) -> dict:
        p, svc = await self.rows(project, service)
        refuse_if_file_managed(caller, p, "revert by editing")
        if not version:
            raise BadRequest("'version' is required")
        params = rollouts.rollout_params(rolling, count)
        new, current, tasks = await rollouts.revert_service(self.ctx, p, svc.name, str(version), caller.author, params)
        return {"changed": new is not None, "version": (new or current).to_json(), "tasks": tasks_json(tasks)}

    @operation("service.versions", target="project")
    async def versions(self, caller: Caller, project: str, service: str) -> builtins.list[dict]:
        p, svc = await self.rows(project, service)
        return await rollouts.service_versions(self.ctx, p, svc.name)

    @operation("service.version", target="project")
    async def version(self, caller: Caller, project: str, service: str, version: str) -> dict:
        p, svc = await self.rows(project, service)
        v = await rollouts.version(self.ctx, p, version)
        return {"version": v.seq, "id": v.id, "service": svc.name,
                "manifest": rollouts.service_slice(v.manifest, svc.name)}

    @operation("service.health", target="project")
    async def health(self, caller: Caller, project: str, service: str) -> builtins.list[dict]:
        p, svc = await self.rows(project, service)
        out = []
        for data in await views.instances(self.ctx, p.id, svc.name):
            watched = self.ctx.monitor.get(data["id"]) if self.ctx.monitor else None
            if watched:
                out.append(watched.to_json())
            elif data["state"] == "running" and not data["retired"]:
                out.append({"instance": data["id"], "name": data["name"], "service": svc.name,
                            "status": data["health"] or "no checks", "detail": data["health_detail"] or "-",
                            "since": None, "checks": []})
        return out

    @operation("service.logs", target="project")
    async def logs(self, caller: Caller, project: str, service: str, *, follow: bool = False,
                   since: object = None, tail: object = None, instance: str | None = None) -> Feed:
        """The output of the service's instances (stopped and retired ones too, until removed),
        merged line by line; each line names its instance. ``tail`` lines per instance, those at
        or after ``since``; ``follow`` goes on through restarts and replacements until the
        caller goes away. ``instance`` narrows it to one of them."""
        since_at, last = logs.parse_since(since, self.ctx.clock.now()), logs.parse_tail(tail)
        p, svc = await self.rows(project, service)
        only: str | None = None
        if instance:
            mine = [i for i in await self.ctx.inventory(p.id) if i.service == svc.name]
            only = _one_of(mine, instance, f"service {svc.name}").id

        async def select() -> builtins.list:
            return [i for i in await self.ctx.inventory(p.id)
                    if i.service == svc.name and (only is None or i.id == only)]

        return logs.Follower(self.ctx, select, since_at, last, follow).feed()


def _count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"'{name}' must be a whole number, 0 or more")
    return value


def _one_of(insts: builtins.list, ref: str, where: str):
    """The instance ``ref`` names among ``insts`` (id, name, short name, or a unique prefix of 4+ of the id)."""
    return views.pick_instance(insts, ref, where, names=lambda i: (logs.short_name(i),))
