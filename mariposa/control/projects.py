"""Projects: add, read, update, start, stop, revert, diff and delete, and their version history.

Every change is validated before it touches the store, made in one transaction, then the queue
is woken; nothing here waits for instances: long work is a task the caller can follow.
"""

from __future__ import annotations

import builtins
import re

from mariposa.access.model import DEFAULT_ORG
from mariposa.control import manifests, rollouts, views
from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.control.pulls import Report
from mariposa.drivers.base import RuntimeUnavailable
from mariposa.errors import BadRequest, Forbidden, NotFound
from mariposa.runs.policy import schedule_of
from mariposa.store import goal as goal_store
from mariposa.store import runs as run_store
from mariposa.store.files import file_status, meta_file_status
from mariposa.store.rows import ProjectRow, TaskRow, VersionRow

PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def tasks_json(tasks: list[TaskRow]) -> list[dict]:
    return [t.to_json() for t in tasks]


def version_made(made: tuple[VersionRow | None, VersionRow, list[TaskRow]]) -> dict:
    """What every change of the manifest answers: whether a version was made, it (or the
    unchanged current one), the one before, and the tasks queued."""
    version, current, tasks = made
    return {"changed": version is not None, "version": (version or current).to_json(),
            "previous": current.to_json(), "tasks": tasks_json(tasks)}


class Projects(Area):
    @operation("project.list", each="id")
    async def list(self, caller: Caller) -> list[dict]:
        """Projects from the store, with their instance counts from the runtime. A runtime that
        does not answer (an Engine restarting) leaves the counts unknown (null) instead of
        failing the listing: what the store knows is still worth showing."""
        try:
            insts: builtins.list | None = await self.ctx.inventory()
        except RuntimeUnavailable:
            insts = None
        out = []
        newest, suspended = await self.ctx.store.call(run_store.project_runs)
        now = self.ctx.clock.now()
        for p, version, services in (await self.ctx.projects.current()).summaries:
            mine = None if insts is None else [i for i in insts if i.project_id == p.id]
            out.append({**p.to_json(), "version": version, "services": services,
                        "running": None if mine is None else sum(1 for i in mine if i.running),
                        "instances": None if mine is None else len(mine),
                        **_runs_summary(self.ctx, p, newest.get(p.id), suspended, now)})
        return out

    @operation("project.add", target="name", kind="new-project")
    async def add(self, caller: Caller, name: str, manifest: object, filename: str = "<manifest>",
                  source: str = "api", env_files: object = None, base_dir: object = None,
                  report: Report | None = None, meta: object = None) -> dict:
        """``report`` (a front end's) is shown the progress of the pulls the version needs;
        ``meta`` (a meta manifest's text) is the new project's meta, set with it."""
        if not isinstance(name, str) or not PROJECT_NAME.fullmatch(name):
            raise BadRequest(f"project name '{name}' must be lowercase letters, digits, '-', '_' or '.', "
                             "starting with a letter or digit")
        manifest = manifests.require_text(manifest)
        files = manifests.require_env_files(env_files)
        values = await manifests.require_meta(meta)
        org = await self._org(caller.org or DEFAULT_ORG)
        p, tasks = await manifests.add(self.ctx, name, manifest, filename, caller.author, source=source,
                                       env_files=files, base_dir=manifests.require_base_dir(base_dir),
                                       report=report, meta=values, org=org)
        return {"project": p.to_json(), "tasks": tasks_json(tasks)}

    @operation("project.copy", target="ref")
    async def copy(self, caller: Caller, ref: str, name: str, with_meta: object = False,
                   with_secrets: object = False) -> dict:
        """A new project ``name`` with ``ref``'s current manifest (rfd36 projects/triton-cli.md).
        Without ``with_meta`` it has no meta, so a manifest that uses meta is refused with the
        keys to set (the spec's "required meta" prompt): add it with ``--meta FILE`` instead.
        Without ``with_secrets`` it has only the secrets already set for its name (secrets belong
        to a project name), so a manifest that needs others is refused with their names; with it,
        ``ref``'s secrets are copied as they are stored (encrypted), in the transaction that
        makes the project."""
        from mariposa.control.meta_rollout import keys_used, secrets_used
        from mariposa.manifest import env_files as env_file_texts
        from mariposa.store import meta as meta_store
        from mariposa.store import secrets as secret_store

        for flag, value in (("with_meta", with_meta), ("with_secrets", with_secrets)):
            if not isinstance(value, bool):
                raise BadRequest(f"'{flag}' must be true or false")
        if not isinstance(name, str) or not PROJECT_NAME.fullmatch(name):
            raise BadRequest(f"project name '{name}' must be lowercase letters, digits, '-', '_' or '.', "
                             "starting with a letter or digit")
        src = await self._project(ref)
        current = await self.ctx.store.call(goal_store.current_version, src)
        spec = await self.ctx.goals.spec_of(current)
        meta = await self.ctx.store.call(meta_store.values, src.id) if with_meta else {}
        needed = sorted(set(keys_used(spec)) - set(meta))
        copied = (await self.ctx.store.call(secret_store.names, secret_store.PROJECT, src.name)
                  if with_secrets else set())
        have = copied | await self.ctx.store.call(secret_store.names, secret_store.PROJECT, name)
        missing_secrets = sorted(set(secrets_used(spec)) - have)
        if needed or missing_secrets:
            wanted = ([f"meta {', '.join(needed)}"] if needed else []) + (
                [f"secrets {', '.join(missing_secrets)}"] if missing_secrets else [])
            how = ([f"copy with --with-meta, or add it with 'mariposa project add {name} FILE --meta META' "
                    "setting them"] if needed else []) + (
                [f"copy with --with-secrets, or set them first with 'mariposa -j {name} secret set NAME'"]
                if missing_secrets else [])
            details = ([{"missing_meta": needed}] if needed else []) + (
                [{"missing_secrets": missing_secrets}] if missing_secrets else [])
            raise BadRequest(f"project '{name}' was not made: {src.name}'s manifest needs {' and '.join(wanted)}; "
                             f"{'; '.join(how)}", details=details)
        p, tasks = await manifests.add(
            self.ctx, name, current.manifest, current.filename or f"<copy of {src.name}>", caller.author,
            env_files=env_file_texts.loads(current.env_files), base_dir=current.base_dir, meta=meta,
            secrets_from=src.name if with_secrets else None, org=await self._org(caller.org or src.org))
        return {"project": p.to_json(), "tasks": tasks_json(tasks), "from": src.name,
                "meta": sorted(meta), "secrets": sorted(copied)}

    @operation("project.get", target="ref")
    async def get(self, caller: Caller, ref: str) -> dict:
        store = self.ctx.store
        try:
            p = await self._project(ref)
        except NotFound as exc:
            status = await self.ctx.projects.file_status(ref)
            if status and status["state"] in ("invalid", "refused"):
                raise NotFound(f"{exc.message}: its file was not applied: {status['error']}",
                               details=status["details"]) from None
            raise
        version = await store.call(goal_store.current_version, p)
        return {**p.to_json(), "version": version.to_json(with_manifest=True),
                "services": await views.services(self.ctx, p), "file": await store.call(file_status, p.name),
                "meta_file": await store.call(meta_file_status, p.name),
                "networks": views.networks(await self.ctx.goals.spec_of(version), p.name)}

    @operation("project.update", target="ref")
    async def update(self, caller: Caller, ref: str, manifest: object, filename: str = "<manifest>", *,
                     rolling: object = None, count: object = None, if_version: str | None = None,
                     env_files: object = None, base_dir: object = None, report: Report | None = None) -> dict:
        p = await self._project(ref)
        manifests.refuse_if_file_managed(caller, p, "edit")
        manifest = manifests.require_text(manifest)
        params = rollouts.rollout_params(rolling, count)
        if isinstance(if_version, bool) or not isinstance(if_version, str | int | None):
            raise BadRequest(f"'if_version' must be a version id or number, not {type(if_version).__name__}")
        if_version = None if if_version is None else str(if_version)
        files = manifests.require_env_files(env_files)
        return version_made(await manifests.update(self.ctx, p, manifest, filename, caller.author, params,
                                                   if_version=if_version, env_files=files,
                                                   base_dir=manifests.require_base_dir(base_dir), report=report))

    @operation("project.delete", target="ref")
    async def delete(self, caller: Caller, ref: str, purge_volumes: object = False) -> dict:
        """Named volumes are kept (and listed) unless ``purge_volumes``: data is never lost by
        accident, and a project added again under the same name finds it."""
        p = await self._project(ref)
        manifests.refuse_if_file_managed(caller, p, "remove")
        if not isinstance(purge_volumes, bool):
            raise BadRequest("'purge_volumes' must be true or false")
        kept = [] if purge_volumes else [v.name for d in self.ctx.drivers.values() for v in await d.volumes(p.name)]
        task = await self.ctx.store.call(goal_store.mark_deleting, p, caller.author, purge_volumes)
        self.ctx.wake_queue()
        return {"tasks": tasks_json([task]), "volumes_kept": kept}

    async def _org(self, name: str) -> str:
        """An organisation that exists, before any work (a pull) is done for a new project."""
        from mariposa.store import access as access_store

        return await self.ctx.store.call(access_store.require_org, name)

    @operation("project.move", target="ref")
    async def move(self, caller: Caller, ref: str, to_org: object) -> dict:
        """Move a project to another organisation: the caller is admin (project:move) of the
        project, which ``@operation`` asked, and of the target organisation, asked here; and it
        re-authenticated just now (a fresh token) or is root, the spec's "password re-check".
        Meta and secrets go with it (keyed by its id and its name, neither of which changes), so
        do its versions and tasks; bindings on the project itself are dropped, as they were
        given in the organisation it leaves."""
        from mariposa.access.model import Scope
        from mariposa.access.policy import REMOTE
        from mariposa.control.access import reload
        from mariposa.control.authorize import authorize
        from mariposa.store import access as access_store

        if not isinstance(to_org, str) or not to_org:
            raise BadRequest("'to_org' (the organisation to move the project to) is required")
        p = await self._project(ref)
        await self._org(to_org)
        authorize(self.policy, caller, "project.move", Scope(org=to_org), self.ctx.audit)
        # root on the socket (or the daemon itself); a remote caller is never root by its token alone
        root = caller.transport != REMOTE and self.policy.is_root(caller)
        if not (root or caller.fresh):
            raise Forbidden(f"moving project {p.name} needs a fresh authentication: run it as root, or with a "
                            "token made in the last 10 minutes (mariposa token create --user U --expires 10m)")
        source, dropped = await self.ctx.store.call(access_store.move_project, p.id, to_org, caller.author)
        await reload(self.ctx, self.policy)
        return {"project": p.name, "from": source, "to": to_org,
                "bindings_dropped": [{**b.to_json(), "text": str(b)} for b in dropped],
                "note": "meta, secrets, versions and tasks moved with it"
                        + (f"; {len(dropped)} binding(s) on the project were dropped" if dropped else "")}

    async def _set_desired(self, caller: Caller, ref: str, desired: str) -> dict:
        p = await self._project(ref)
        tasks = await self.ctx.store.call(goal_store.set_project_desired, p, desired, caller.author)
        self.ctx.wake_queue()
        return {"tasks": tasks_json(tasks)}

    @operation("project.start", target="ref")
    async def start(self, caller: Caller, ref: str) -> dict:
        return await self._set_desired(caller, ref, "running")

    @operation("project.stop", target="ref")
    async def stop(self, caller: Caller, ref: str) -> dict:
        return await self._set_desired(caller, ref, "stopped")

    @operation("project.revert", target="ref")
    async def revert(self, caller: Caller, ref: str, version: str | None, *, rolling: object = None,
                     count: object = None) -> dict:
        p = await self._project(ref)
        manifests.refuse_if_file_managed(caller, p, "revert by editing")
        if not version:
            raise BadRequest("'version' is required")
        params = rollouts.rollout_params(rolling, count)
        new, current, tasks = await rollouts.revert_project(self.ctx, p, str(version), caller.author, params)
        return {"changed": new is not None, "version": (new or current).to_json(), "tasks": tasks_json(tasks)}

    @operation("project.diff", target="ref")
    async def diff(self, caller: Caller, ref: str, manifest: object, filename: str = "<manifest>", *,
                   rolling: object = None, count: object = None, env_files: object = None,
                   base_dir: object = None) -> dict:
        p = await self._project(ref)
        manifest = manifests.require_text(manifest)
        return await rollouts.diff(self.ctx, p, manifest, filename, rollouts.rollout_params(rolling, count),
                                   manifests.require_env_files(env_files), manifests.require_base_dir(base_dir))

    # builtins.list: in this class body, `list` names the method above
    @operation("project.versions", target="ref")
    async def versions(self, caller: Caller, ref: str) -> builtins.list[dict]:
        p = await self._project(ref)
        return [v.to_json() for v in await self.ctx.store.call(goal_store.list_versions, p.id)]

    @operation("project.version", target="ref")
    async def version(self, caller: Caller, ref: str | None, version: str) -> dict:
        """A version by id or id prefix; by its number too when the project is given."""
        p = await self._project(ref) if ref else None
        return (await rollouts.version(self.ctx, p, version)).to_json(with_manifest=True)

    @operation("project.instances", target="ref")
    async def instances(self, caller: Caller, ref: str) -> builtins.list[dict]:
        p = await self._project(ref)
        return await views.instances(self.ctx, p.id)

    @operation("project.health", target="ref", each="project_id")
    async def health(self, caller: Caller, ref: str | None = None) -> builtins.list[dict]:
        """Each service's running instances counted by health (the dashboard's summaries):
        ``healthy`` and ``unhealthy`` as the health monitor last judged them, ``unknown`` for one
        not judged yet or without checks. Counts only, one row per service that runs anything,
        of one project or (no ``ref``) of every project the caller may see: a dict lookup per
        instance, cheap at 10,000 of them where ``project instances`` builds each one's record."""
        project_id = (await self._project(ref)).id if ref else None
        monitor = self.ctx.monitor
        rows: dict[tuple[str, str], dict] = {}
        for inst in await self.ctx.inventory(project_id):
            if not inst.running:
                continue
            row = rows.setdefault((inst.project_id, inst.service), {
                "project_id": inst.project_id, "project": inst.project_name, "service": inst.service,
                "healthy": 0, "unhealthy": 0, "unknown": 0})
            watched = monitor.get(inst.id) if monitor else None
            status = watched.status if watched else None
            row[status if status in ("healthy", "unhealthy") else "unknown"] += 1
        return builtins.list(rows.values())

    @operation("project.networks", target="ref")
    async def networks(self, caller: Caller, ref: str) -> builtins.list[dict]:
        """The networks the project's services join besides its own: runtime names (what another
        project joins as external) and whether the runtime has each now."""
        p = await self._project(ref)
        version = await self.ctx.store.call(goal_store.current_version, p)
        rows = views.networks(await self.ctx.goals.spec_of(version), p.name)
        for row in rows:
            row["exists"] = False
            for driver in self.ctx.drivers.values():
                row["exists"] = row["exists"] or await driver.network_exists(row["runtime_name"])
        return rows


def _runs_summary(ctx, p: ProjectRow, newest, suspended: set, now: float) -> dict:
    """Scheduled and event services: the project's newest run and its next firing (of the
    services whose schedule runs), from the parsed version when it is at hand."""
    spec = ctx.goals.cached_spec(p.current_version) if p.current_version else None
    times = [t for s in (spec.services if spec else ()) if s.service_type == "scheduled"
             and (p.id, s.name) not in suspended and (t := schedule_of(s).next_after(now)) is not None]
    last = None if newest is None else {"id": newest.id, "service": newest.service, "state": newest.state,
                                        "started": newest.started, "scheduled": newest.scheduled}
    return {"last_run": last, "next_run": min(times) if times else None}
