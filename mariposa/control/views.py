"""Read models: what the control layer shows of projects, services and instances, joined from
the goal store, the runtimes' inventory, the daemon's instance records and live health."""

from __future__ import annotations

from mariposa.context import Context
from mariposa.converge import supervise
from mariposa.errors import BadRequest, NotFound
from mariposa.model import Instance, ProjectSpec
from mariposa.runs.policy import schedule_of
from mariposa.store import goal as goal_store
from mariposa.store import instances as instance_store
from mariposa.store import runs as run_store
from mariposa.store import tasks as task_store
from mariposa.store.rows import ProjectRow


def instance_json(ctx: Context, inst: Instance, record: dict | None) -> dict:
    data = inst.to_json()
    record = record or {}
    watched = ctx.monitor.get(inst.id) if ctx.monitor else None
    data["health"] = watched.status if watched else (
        record.get("health") if not inst.running or record.get("retired") else None)
    data["health_detail"] = watched.summary if watched else record.get("health_detail")
    data["health_checked"] = watched.last_at if watched else record.get("health_since")
    data["retired"] = bool(record.get("retired"))
    data["retired_reason"] = record.get("retired_reason")
    data["restarts"] = record.get("restarts", 0)
    data["last_exit_code"] = record.get("last_exit_code")
    return data


async def instances(ctx: Context, project_id: str, service: str | None = None, offset: int = 0,
                    limit: int | None = None) -> list[dict]:
    """The instances (of a service), oldest first; ``offset`` and ``limit`` take one page of them,
    whose records alone are built (the dashboard's page of 100 out of 10,000)."""
    found = [i for i in await ctx.inventory(project_id) if service is None or i.service == service]
    found.sort(key=lambda i: (i.service, i.created))
    if offset or limit is not None:
        found = found[offset:None if limit is None else offset + limit]
    records = await ctx.store.call(instance_store.for_project, project_id)
    return [instance_json(ctx, i, records.get(i.id)) for i in found]


async def find_instance(ctx: Context, ref: str) -> Instance:
    """An instance by Mariposa id, name or runtime id, or a unique prefix (4+ characters) of an id."""
    return pick_instance(await ctx.inventory(), ref)


def pick_instance(insts: list[Instance], ref: str, where: str = "", names=lambda i: ()) -> Instance:
    """The instance ``ref`` names among ``insts``: its id, name, runtime id or one of ``names(i)``
    exactly, else a unique prefix (4+ characters) of an id; ``where`` says where, in errors."""
    for match in (lambda i: ref in (i.id, i.name, i.runtime_id, *names(i)),
                  lambda i: len(ref) >= 4 and (i.id.startswith(ref) or i.runtime_id.startswith(ref))):
        found = [i for i in insts if match(i)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise BadRequest(f"instance '{ref}' is ambiguous{' in ' + where if where else ''}; give more characters")
    raise NotFound(f"no instance '{ref}'{' in ' + where if where else ''}")


async def services(ctx: Context, project: ProjectRow) -> list[dict]:
    rows = await ctx.store.call(goal_store.list_services, project.id, False)
    version = await ctx.store.call(goal_store.current_version, project)
    spec = await ctx.goals.spec_of(version)
    insts = await ctx.inventory(project.id)
    open_tasks = await ctx.store.call(task_store.listing, project.id, ("queued", "active"))
    records = await ctx.store.call(instance_store.for_project, project.id)
    last_runs = await ctx.store.call(run_store.last_runs, project.id)
    now = ctx.clock.now()
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
            # depends_on: what its first instances wait for (converge/depends.py), None otherwise
            "waiting": (task.progress or {}).get("waiting") if task else None,
            "replacements": s.replacements,
            "replace_after": supervise.replace_after(s.replacements, s.last_replacement_at, now) or None,
            "retired": sum(1 for i in mine if records.get(i.id, {}).get("retired")),
            "service_type": svc_spec.service_type if svc_spec else None,
            # scheduled and event services (mariposa/runs/): the newest run, and the next firing
            "last_run": _last_run(last_runs.get(s.name)),
            "next_run": (schedule_of(svc_spec).next_after(now) if svc_spec and svc_spec.service_type == "scheduled"
                         and s.desired == "running" and not s.frozen else None),
        })
    return out


def _last_run(row) -> dict | None:
    if row is None:
        return None
    return {"id": row.id, "trigger": row.trigger, "state": row.state, "scheduled": row.scheduled,
            "started": row.started, "ended": row.ended, "exit_code": row.exit_code}


def networks(spec: ProjectSpec, project_name: str) -> list[dict]:
    """The networks the project's services join besides its own, with their runtime names: the
    name another project gives as ``external: true, name: ...`` to join one of them."""
    out: dict[str, dict] = {}
    for svc in spec.services:
        for ref in svc.networks:
            entry = out.setdefault(ref.name, {"name": ref.name, "runtime_name": ref.runtime(project_name),
                                              "external": ref.external, "services": []})
            entry["services"].append(svc.name)
    return list(out.values())
