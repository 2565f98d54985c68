"""Versions and deploy controls: reprovision, revert (of a project or one service), the
version history and `project diff`. Every change still goes through `manifests.update`, so a
revert is a new immutable version like any other."""

from __future__ import annotations

import io

from ruamel.yaml import YAML

from mariposa.context import Context
from mariposa.control import manifests
from mariposa.converge.goals import with_images
from mariposa.converge.simulate import simulate
from mariposa.converge.supervise import merge
from mariposa.errors import BadRequest, NotFound
from mariposa.manifest import env_files
from mariposa.model import DesiredState, ServiceGoal
from mariposa.packages import dumps, pinned
from mariposa.store import goal as goal_store
from mariposa.store import instances as instance_store
from mariposa.store.rows import ProjectRow, ServiceRow, TaskRow, VersionRow


def rollout_params(rolling: object = None, count: object = None) -> dict:
    """``rolling`` (new instances at a time) and ``count`` (how many to replace: a canary)."""
    params = {}
    for key, value in (("rolling", rolling), ("count", count)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"--{key} must be a whole number of at least 1, not {value!r}")
        params[key] = value
    return params


async def version(ctx: Context, project: ProjectRow | None, ref: str) -> VersionRow:
    """A version by id, id prefix or (within a project) its number."""
    if project is not None and ref.isdigit() and len(ref) < 8:
        rows = [v for v in await ctx.store.call(goal_store.list_versions, project.id) if v.seq == int(ref)]
        if not rows:
            raise NotFound(f"project '{project.name}' has no version {ref}")
        return rows[0]
    return await ctx.store.call(goal_store.get_version, ref, project.id if project else None)


async def revert_project(ctx: Context, project: ProjectRow, ref: str, author: str, params: dict):
    target = await version(ctx, project, ref)
    images = await ctx.store.call(goal_store.version_images, target.id)
    return await manifests.update(ctx, project, target.manifest, target.filename or "<revert>", author, params,
                                 images=images, packages=ctx.goals.catalogue(target.packages),
                                 env_files=env_files.loads(target.env_files), base_dir=target.base_dir,
                                 summary_prefix=f"revert to version {target.seq}: ")


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    return y


def service_slice(text: str, service: str) -> str:
    doc = _yaml().load(text)
    section = (doc or {}).get("services", {}).get(service)
    if section is None:
        raise NotFound(f"service '{service}' is not in that version")
    out = io.StringIO()
    _yaml().dump({"services": {service: section}}, out)
    return out.getvalue()


async def revert_service(ctx: Context, project: ProjectRow, service: str, ref: str, author: str, params: dict):
    """A new project version: the current manifest with this one service's section taken from
    version ``ref`` (comments and all), and that service's image pinned as it was then."""
    target = await version(ctx, project, ref)
    current = await ctx.store.call(goal_store.current_version, project)
    y = _yaml()
    doc, old = y.load(current.manifest), y.load(target.manifest)
    section = (old or {}).get("services", {}).get(service)
    if section is None:
        raise NotFound(f"service '{service}' is not in version {target.seq}")
    doc["services"][service] = section
    out = io.StringIO()
    y.dump(doc, out)
    images = dict(await ctx.store.call(goal_store.version_images, current.id))
    old_images = await ctx.store.call(goal_store.version_images, target.id)
    image = section.get("image")
    if image in old_images:
        images[image] = old_images[image]
    # the other services keep the package sizes they run with; this one gets back its old ones
    packages = dict(ctx.goals.catalogue(current.packages))
    old_packages = ctx.goals.catalogue(target.packages)
    if section.get("package") in old_packages:
        packages[section["package"]] = old_packages[section["package"]]
    # likewise its env files come back as they were; the other services' stay
    files = {**env_files.loads(current.env_files), **env_files.loads(target.env_files)}
    spec = await manifests.parse(ctx, out.getvalue(), "<revert>", packages, files, current.base_dir)
    for svc in spec.services:  # any other image new to the manifest is resolved now
        if svc.image not in images:
            images.update(await manifests.resolve_images(ctx, spec))
            break
    return await manifests.update(ctx, project, out.getvalue(), current.filename or "<revert>", author, params,
                                 images=images, packages=packages, env_files=files, base_dir=current.base_dir,
                                 summary_prefix=f"revert {service} to version {target.seq}: ")


async def service_versions(ctx: Context, project: ProjectRow, service: str) -> list[dict]:
    rows = []
    for v in await ctx.store.call(goal_store.list_versions, project.id):
        spec = (await ctx.goals.spec_of(v)).service(service)
        rows.append({"version": v.seq, "id": v.id, "created": v.created, "author": v.author,
                     "spec_hash": spec.spec_hash if spec else None, "image": spec.image if spec else None,
                     "scale": spec.scale if spec else None})
    for newer, older in zip(rows, rows[1:] + [None], strict=True):
        newer["changed"] = older is None or newer["spec_hash"] != older["spec_hash"]
    return rows


async def reprovision(
    ctx: Context, project: ProjectRow, svc: ServiceRow, author: str, *, version_ref: str | None = None,
    image: str | None = None, instance: str | None = None, rolling: object = None, count: object = None,
) -> TaskRow:
    params: dict = rollout_params(rolling, count)
    params["explicit"] = True
    if version_ref:
        params["version"] = (await version(ctx, project, str(version_ref))).id
    for key, value in (("image", image), ("instance", instance)):
        if value:
            params[key] = str(value)
    filtered = any(k in params for k in ("version", "image", "instance"))
    if "count" in params:
        keep = True
    elif not filtered:
        keep = False  # the rest go too: nothing stays on an older version
    else:
        keep = bool(svc.keep_stale)
    task = await ctx.store.call(goal_store.reprovision_service, project, svc, keep, params, author)
    ctx.wake_queue()
    return task


async def diff(
    ctx: Context, project: ProjectRow, text: str, filename: str, params: dict, files: dict | None = None,
    base_dir: str | None = None,
) -> dict:
    """What `project update` with this manifest would do, from the same planner, changing nothing."""
    parsed = await manifests.parse(ctx, text, filename, env_files=files, base_dir=base_dir)
    images = await manifests.resolve_images(ctx, parsed)
    new = with_images(parsed, images)
    current = await ctx.store.call(goal_store.current_version, project)
    old = await ctx.goals.spec_of(current)
    rows = {s.name: s for s in await ctx.store.call(goal_store.list_services, project.id, True)}
    records = await ctx.store.call(instance_store.for_project, project.id)
    now = ctx.clock.now()
    actual = merge(await ctx.inventory(project.id), records, now)
    changes = dict(((s, c) for s, c in goal_store.describe_changes(old, new)))
    out = []
    for name in list(new.service_names) + [n for n in old.service_names if new.service(n) is None]:
        spec, row = new.service(name), rows.get(name)
        mine = [i for i in actual if i.service == name and not i.retired]
        scale = row.scale if row else 1
        if spec is not None and spec.scale is not None and (
            row is None or spec.scale != (old.service(name) or spec).scale
        ):
            scale = spec.scale
        desired: DesiredState = "stopped" if project.desired == "stopped" else (
            row.desired if row and row.desired != "absent" else "running"
        )
        goal = None if spec is None else ServiceGoal(
            project_id=project.id, project_name=project.name, version_id="(new)", spec=spec, scale=scale,
            desired=desired, keep_stale=bool(params.get("count")))
        outcome = simulate(goal, mine, surge=params.get("rolling", 1), now=now)
        out.append({"service": name, "change": changes.get(name, "unchanged"), "instances": len(mine),
                    "scale": scale, "create": outcome.create, "replace": outcome.replace, "remove": outcome.remove,
                    "start": outcome.start})
    same = (current.hash == goal_store.text_hash(text)
            and await ctx.store.call(goal_store.version_images, current.id) == images
            and current.packages == dumps(pinned(parsed.services, ctx.packages))
            and current.env_files == env_files.dumps(await manifests.used_env_files(text, files))
            and current.base_dir == base_dir)
    return {"project": project.name, "from_version": current.seq, "new_version": not same, "services": out}
