"""The control API's endpoints (after ``rfd36/implementation/rfd79`` and ``rfd80``).

Handlers validate everything before they touch the store, make each change in one transaction,
then wake the queue. They never wait for instances: long work is a task the caller can follow.
"""

from __future__ import annotations

import json
import re
import time

import trio

import attrs

from mariposa import __version__
from mariposa.api.http import Request, Response, Router
from mariposa.context import Context
from mariposa.converge import supervise
from mariposa.errors import BadRequest, Conflict, NotFound
from mariposa import projects, rollouts
from mariposa.queue.executor import Executor
from mariposa.store import events as event_store
from mariposa.store import goal as goal_store
from mariposa.store import instances as instance_store
from mariposa.store import tasks as task_store
from mariposa.store.rows import ProjectRow, TaskRow
from mariposa.watch import file_status

PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def _manifest_body(req: Request) -> tuple[str, str]:
    body = req.json()
    text = body.get("manifest")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("'manifest' (the manifest text) is required")
    return text, body.get("filename") or "<manifest>"


def _tasks_json(tasks: list[TaskRow]) -> list[dict]:
    return [t.to_json() for t in tasks]


def build_router(ctx: Context, executor: Executor) -> Router:
    r = Router()
    store = ctx.store

    async def project(ref: str) -> ProjectRow:
        return await store.call(goal_store.get_project, ref)

    def instance_json(inst, record: dict | None) -> dict:
        data = inst.to_json()
        record = record or {}
        watched = ctx.monitor.get(inst.id) if ctx.monitor else None
        data["health"] = watched.status if watched else (record.get("health") if not inst.running or record.get("retired") else None)
        data["health_detail"] = watched.summary if watched else record.get("health_detail")
        data["health_checked"] = watched.last_at if watched else record.get("health_since")
        data["retired"] = bool(record.get("retired"))
        data["retired_reason"] = record.get("retired_reason")
        data["restarts"] = record.get("restarts", 0)
        data["last_exit_code"] = record.get("last_exit_code")
        return data

    async def instances_json(project_id: str, service: str | None = None) -> list[dict]:
        found = [i for i in await ctx.inventory(project_id) if service is None or i.service == service]
        found.sort(key=lambda i: (i.service, i.created))
        records = await store.call(instance_store.for_project, project_id)
        return [instance_json(i, records.get(i.id)) for i in found]

    async def find_instance(ref: str):
        ref = ref.strip()
        everything = await ctx.inventory()
        for match in (lambda i: ref in (i.id, i.name, i.runtime_id),
                      lambda i: len(ref) >= 4 and (i.id.startswith(ref) or i.runtime_id.startswith(ref))):
            found = [i for i in everything if match(i)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise BadRequest(f"instance '{ref}' is ambiguous; give more characters")
        raise NotFound(f"no instance '{ref}'")

    async def services_json(p: ProjectRow) -> list[dict]:
        rows = await store.call(goal_store.list_services, p.id, False)
        version = await store.call(goal_store.current_version, p)
        spec = await ctx.goals.spec_of(version)
        insts = await ctx.inventory(p.id)
        open_tasks = await store.call(task_store.listing, p.id, ("queued", "active"))
        records = await store.call(instance_store.for_project, p.id)
        out = []
        for s in rows:
            mine = [i for i in insts if i.service == s.name]
            svc_spec = spec.service(s.name)
            task = next((t for t in open_tasks if t.service == s.name), None)
            out.append({
                **s.to_json(),
                "image": svc_spec.image if svc_spec else None,
                "compute_type": svc_spec.compute_type if svc_spec else None,
                "running": sum(1 for i in mine if i.running and not records.get(i.id, {}).get("retired")),
                "instances": len(mine),
                "task": task.to_json() if task else None,
                "replacements": s.replacements,
                "replace_after": supervise.replace_after(s.replacements, s.last_replacement_at, time.time()) or None,
                "retired": sum(1 for i in mine if records.get(i.id, {}).get("retired")),
            })
        return out

    @r.route("GET", "/v1/ping")
    async def ping(req: Request):
        return {"ok": True, "version": __version__, "owner": ctx.owner, "you": req.author}

    # ---- projects -----------------------------------------------------------------------------

    @r.route("GET", "/v1/projects")
    async def list_projects(req: Request):
        projects = await store.call(goal_store.list_projects)
        insts = await ctx.inventory()
        out = []
        for p in projects:
            mine = [i for i in insts if i.project_id == p.id]
            services = await store.call(goal_store.list_services, p.id, False)
            version = await store.call(goal_store.current_version, p)
            out.append({**p.to_json(), "version": version.seq, "services": len(services),
                        "running": sum(1 for i in mine if i.running), "instances": len(mine)})
        return out

    @r.route("POST", "/v1/projects")
    async def add_project(req: Request):
        body = req.json()
        name = str(body.get("name") or "")
        if not PROJECT_NAME.match(name):
            raise BadRequest(f"project name '{name}' must be lowercase letters, digits, '-', '_' or '.', starting with a letter or digit")
        text, filename = _manifest_body(req)
        p, tasks = await projects.add(ctx, name, text, filename, req.author)
        return {"project": p.to_json(), "tasks": _tasks_json(tasks)}

    @r.route("GET", "/v1/projects/{project}")
    async def get_project(req: Request):
        try:
            p = await project(req.params["project"])
        except NotFound as exc:
            status = await store.call(file_status, req.params["project"])
            if status and status["state"] in ("invalid", "refused"):
                raise NotFound(f"{exc.message}: its file was not applied: {status['error']}", details=status["details"]) from None
            raise
        version = await store.call(goal_store.current_version, p)
        return {**p.to_json(), "version": version.to_json(with_manifest=True), "services": await services_json(p),
                "file": await store.call(file_status, p.name)}

    @r.route("PUT", "/v1/projects/{project}")
    async def update_project(req: Request):
        p = await project(req.params["project"])
        projects.refuse_if_file_managed(p, "edit")
        text, filename = _manifest_body(req)
        body = req.json()
        params = rollouts.rollout_params(body)
        version, current, tasks = await projects.update(ctx, p, text, filename, req.author, params,
                                                        if_version=body.get("if_version"))
        return {"changed": version is not None, "version": version.to_json() if version else current.to_json(),
                "previous": current.to_json(), "tasks": _tasks_json(tasks)}

    @r.route("GET", "/v1/projects/{project}/versions")
    async def project_versions(req: Request):
        p = await project(req.params["project"])
        return [v.to_json() for v in await store.call(goal_store.list_versions, p.id)]

    @r.route("GET", "/v1/projects/{project}/versions/{version}")
    async def project_version(req: Request):
        p = await project(req.params["project"])
        return (await rollouts.version(ctx, p, req.params["version"])).to_json(with_manifest=True)

    @r.route("GET", "/v1/versions/{version}")
    async def any_version(req: Request):
        return (await rollouts.version(ctx, None, req.params["version"])).to_json(with_manifest=True)

    @r.route("DELETE", "/v1/projects/{project}")
    async def delete_project(req: Request):
        p = await project(req.params["project"])
        projects.refuse_if_file_managed(p, "remove")
        task = await store.call(lambda db: goal_store.mark_deleting(db, p, req.author))
        ctx.wake_queue()
        return {"tasks": _tasks_json([task])}

    @r.route("POST", "/v1/projects/{project}/{action}")
    async def project_action(req: Request):
        action = req.params["action"]
        if action not in ("start", "stop", "revert", "diff"):
            raise BadRequest(f"unknown project action '{action}' (start, stop, revert or diff)")
        p = await project(req.params["project"])
        body = req.json()
        if action == "diff":
            text, filename = _manifest_body(req)
            return await rollouts.diff(ctx, p, text, filename, rollouts.rollout_params(body))
        if action == "revert":
            projects.refuse_if_file_managed(p, "revert by editing")
            if not body.get("version"):
                raise BadRequest("'version' is required")
            version, current, tasks = await rollouts.revert_project(ctx, p, str(body["version"]), req.author,
                                                                    rollouts.rollout_params(body))
            return {"changed": version is not None, "version": (version or current).to_json(), "tasks": _tasks_json(tasks)}
        desired = "running" if action == "start" else "stopped"
        tasks = await store.call(lambda db: goal_store.set_project_desired(db, p, desired, req.author))
        ctx.wake_queue()
        return {"tasks": _tasks_json(tasks)}

    @r.route("GET", "/v1/projects/{project}/instances")
    async def project_instances(req: Request):
        p = await project(req.params["project"])
        return await instances_json(p.id)

    # ---- services -----------------------------------------------------------------------------

    @r.route("GET", "/v1/projects/{project}/services")
    async def list_services(req: Request):
        return await services_json(await project(req.params["project"]))

    @r.route("GET", "/v1/projects/{project}/services/{service}")
    async def get_service(req: Request):
        p = await project(req.params["project"])
        svc = await store.call(goal_store.get_service, p, req.params["service"])
        summary = next(s for s in await services_json(p) if s["id"] == svc.id)
        version = await store.call(goal_store.current_version, p)
        spec = (await ctx.goals.spec_of(version)).service(svc.name)
        return {**summary, "project": p.name, "version": version.seq,
                "spec": attrs.asdict(spec) if spec else None, "spec_hash": spec.spec_hash if spec else None}

    @r.route("GET", "/v1/projects/{project}/services/{service}/instances")
    async def service_instances(req: Request):
        p = await project(req.params["project"])
        svc = await store.call(goal_store.get_service, p, req.params["service"])
        return await instances_json(p.id, svc.name)

    @r.route("POST", "/v1/projects/{project}/services/{service}/{action}")
    async def service_action(req: Request):
        p = await project(req.params["project"])
        svc = await store.call(goal_store.get_service, p, req.params["service"])
        action = req.params["action"]
        if action == "scale":
            amount = req.json().get("scale")
            if amount is None:
                raise BadRequest("'scale' is required: a number, or +N / -N")
            task = await store.call(lambda db: goal_store.scale_service(db, p, svc, str(amount), req.author))
        elif action == "start":
            running = [i for i in await ctx.inventory(p.id) if i.service == svc.name and i.running]
            if svc.desired == "running" and running:
                raise Conflict(f"service {svc.name} is already running ({len(running)} instances)")
            task = await store.call(lambda db: goal_store.set_service_desired(db, p, svc, "running", req.author))
        elif action == "stop":
            task = await store.call(lambda db: goal_store.set_service_desired(db, p, svc, "stopped", req.author))
        elif action == "thaw":
            task = await store.call(lambda db: goal_store.thaw_service(db, p, svc, req.author))
        elif action == "reprovision":
            task = await rollouts.reprovision(ctx, p, svc, req.json(), req.author)
        elif action == "revert":
            projects.refuse_if_file_managed(p, "revert by editing")
            body = req.json()
            if not body.get("version"):
                raise BadRequest("'version' is required")
            version, current, tasks = await rollouts.revert_service(ctx, p, svc.name, str(body["version"]), req.author,
                                                                    rollouts.rollout_params(body))
            return {"changed": version is not None, "version": (version or current).to_json(), "tasks": _tasks_json(tasks)}
        else:
            raise BadRequest(f"unknown service action '{action}' (scale, start, stop, thaw, reprovision or revert)")
        ctx.wake_queue()
        return {"tasks": _tasks_json([task])}

    @r.route("GET", "/v1/projects/{project}/services/{service}/versions")
    async def service_versions(req: Request):
        p = await project(req.params["project"])
        svc = await store.call(goal_store.get_service, p, req.params["service"])
        return await rollouts.service_versions(ctx, p, svc.name)

    @r.route("GET", "/v1/projects/{project}/services/{service}/versions/{version}")
    async def service_version(req: Request):
        p = await project(req.params["project"])
        svc = await store.call(goal_store.get_service, p, req.params["service"])
        v = await rollouts.version(ctx, p, req.params["version"])
        return {"version": v.seq, "id": v.id, "service": svc.name, "manifest": rollouts.service_slice(v.manifest, svc.name)}

    @r.route("GET", "/v1/projects/{project}/services/{service}/health")
    async def service_health(req: Request):
        p = await project(req.params["project"])
        svc = await store.call(goal_store.get_service, p, req.params["service"])
        out = []
        for data in await instances_json(p.id, svc.name):
            watched = ctx.monitor.get(data["id"]) if ctx.monitor else None
            if watched:
                out.append(watched.to_json())
            elif data["state"] == "running" and not data["retired"]:
                out.append({"instance": data["id"], "name": data["name"], "service": svc.name,
                            "status": data["health"] or "no checks", "detail": data["health_detail"] or "-",
                            "since": None, "checks": []})
        return out

    # ---- instances ----------------------------------------------------------------------------

    @r.route("GET", "/v1/instances/{instance}")
    async def get_instance(req: Request):
        inst = await find_instance(req.params["instance"])
        record = await store.call(instance_store.get, inst.id)
        data = instance_json(inst, record)
        watched = ctx.monitor.get(inst.id) if ctx.monitor else None
        data["checks"] = watched.to_json()["checks"] if watched else []
        data["record"] = record
        return data

    @r.route("DELETE", "/v1/instances/{instance}")
    async def remove_instance(req: Request):
        inst = await find_instance(req.params["instance"])
        driver = ctx.driver_for(inst.compute_type)
        await driver.remove(inst)

        def forget(db) -> None:
            instance_store.forget(db, [inst.id])
            event_store.record(db, "instance.rm", f"{inst.name} removed by the operator", project_id=inst.project_id,
                               service=inst.service, instance=inst.id, author=req.author)

        await store.call(forget)
        ctx.wake_reconciler()
        return {"removed": inst.id, "name": inst.name, "was": inst.state}

    # ---- queue and events ---------------------------------------------------------------------

    @r.route("GET", "/v1/queue")
    async def list_queue(req: Request):
        project_id = (await project(req.query["project"])).id if req.query.get("project") else None
        states = tuple(req.query["state"].split(",")) if req.query.get("state") else None
        return _tasks_json(await store.call(task_store.listing, project_id, states, int(req.query.get("limit", 200))))

    @r.route("GET", "/v1/queue/{task}")
    async def get_task(req: Request):
        return (await store.call(task_store.get, req.params["task"])).to_json()

    @r.route("DELETE", "/v1/queue/{task}")
    async def stop_task(req: Request):
        project_id = (await project(req.query["project"])).id if req.query.get("project") else None
        task = await executor.stop(req.params["task"], project_id, req.author)
        return task.to_json()

    @r.route("GET", "/v1/events")
    async def list_events(req: Request):
        project_id = (await project(req.query["project"])).id if req.query.get("project") else None
        service, types = req.query.get("service"), tuple(t for t in req.query.get("type", "").split(",") if t)
        since = int(req.query.get("since", 0))

        async def read(after: int) -> list[dict]:
            rows = await store.call(event_store.listing, project_id, service, after)
            return [e for e in rows if not types or any(e["type"] == t or e["type"].startswith(t + ".") for t in types)]

        if req.query.get("follow") not in ("1", "true"):
            return await read(since)

        async def stream():
            after = since
            first = await read(after)
            for e in first:
                yield (json.dumps(e) + "\n").encode()
            last = await store.call(event_store.last_id)
            after = max([after, last] + [e["id"] for e in first])
            while True:
                await trio.sleep(0.25)
                for e in await read(after):
                    yield (json.dumps(e) + "\n").encode()
                after = max(after, await store.call(event_store.last_id))

        return Response(200, stream=stream())

    return r
