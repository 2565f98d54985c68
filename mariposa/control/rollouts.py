"""Versions and deploy controls: reprovision, revert (of a project or one service), the
version history and `project diff`. Every change still goes through `manifests.update`, so a
revert is a new immutable version like any other."""

from __future__ import annotations

import json
from collections.abc import Mapping

import trio

from mariposa.context import Context
from mariposa.control import manifests
from mariposa.control.pulls import Report, ensure_images
from mariposa.converge.goals import meta_used, with_images, with_meta
from mariposa.converge.simulate import simulate
from mariposa.converge.supervise import merge
from mariposa.errors import BadRequest, NotFound
from mariposa.manifest import env_files, sections
from mariposa.manifest.rules import Rules
from mariposa.model import DesiredState, ServiceGoal
from mariposa.packages import Package, dumps, pinned
from mariposa.store import goal as goal_store
from mariposa.store import instances as instance_store
from mariposa.store import meta as meta_store
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


def service_slice(text: str, service: str) -> str:
    found = sections.service_slice(text, service)
    if found is None:
        raise NotFound(f"service '{service}' is not in that version")
    return found


async def revert_service(ctx: Context, project: ProjectRow, service: str, ref: str, author: str, params: dict):
    """A new project version: the current manifest with this one service's section taken from
    version ``ref`` (comments and all), and that service's image pinned as it was then."""
    target = await version(ctx, project, ref)
    current = await ctx.store.call(goal_store.current_version, project)

    def splice() -> tuple[str, object]:
        editor = sections.Editor(current.manifest)
        section = (sections.Editor(target.manifest).doc or {}).get("services", {}).get(service)
        if section is None:
            raise NotFound(f"service '{service}' is not in version {target.seq}")
        editor.put(service, section)
        return editor.text(), section

    text, section = await trio.to_thread.run_sync(splice)
    images = dict(await ctx.store.call(goal_store.version_images, current.id))
    old_images = await ctx.store.call(goal_store.version_images, target.id)
    image = section.get("image")  # type: ignore[attr-defined]
    if image in old_images:
        images[image] = old_images[image]
    # the other services keep the package sizes they run with; this one gets back its old ones
    packages = dict(ctx.goals.catalogue(current.packages))
    old_packages = ctx.goals.catalogue(target.packages)
    package = section.get("package")  # type: ignore[attr-defined]
    if package in old_packages:
        packages[package] = old_packages[package]
    # likewise its env files come back as they were; the other services' stay
    files = {**env_files.loads(current.env_files), **env_files.loads(target.env_files)}
    return await pinned_update(ctx, project, current, text, author, params, images, packages,
                               f"revert {service} to version {target.seq}: ", files)


async def pinned_update(
    ctx: Context, project: ProjectRow, current: VersionRow, text: str, author: str, params: dict,
    images: dict, packages: Mapping[str, Package], summary_prefix: str, files: Mapping | None = None,
    report: Report | None = None,
):
    """A new version of an edited manifest in which the services the edit did not touch keep
    their pinned images, package sizes and env files (``images``, ``packages``, ``files``:
    by default the current version's); an image no version pinned yet is pulled (as its
    service's ``pull`` says) and resolved now. Made
    only if the project is still at ``current``: an edit is of that version, and would undo a
    change made meanwhile. Relative paths still start at the current version's directory."""
    files = env_files.loads(current.env_files) if files is None else files
    spec = await manifests.parse(ctx, text, "<edited manifest>", packages, files, current.base_dir, project.name)
    if any(svc.image not in images for svc in spec.services):
        images = {**await ensure_images(ctx, spec, skip=images, report=report, author=author,
                                        project_id=project.id), **images}
    return await manifests.update(ctx, project, text, current.filename or "<edited manifest>", author, params,
                                  images=images, packages=packages, env_files=files, base_dir=current.base_dir,
                                  if_version=current.id, summary_prefix=summary_prefix)


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
    meta = await ctx.store.call(meta_store.values, project.id)
    parsed = await manifests.parse(ctx, text, filename, env_files=files, base_dir=base_dir, project=project.name,
                                   meta=meta)
    images = await manifests.resolve_images(ctx, parsed)
    used = meta_used(parsed, meta, await manifests.secret_digests(ctx, parsed, project.name))
    new = with_meta(with_images(parsed, images), used)
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
            and current.base_dir == base_dir
            and json.loads(current.meta_used or "{}") == used)
    return {"project": project.name, "from_version": current.seq, "new_version": not same, "services": out}


def _label(project: ProjectRow, current: VersionRow) -> str:
    """Where a problem outside the edited section is: the stored manifest (`project version N`)."""
    return f"<project {project.name}, version {current.seq}>"


async def put_service(
    ctx: Context, project: ProjectRow, service: str, text: str, filename: str, author: str, params: dict,
    summary_prefix: str, report: Report | None = None,
):
    """A new version with service ``service``'s section taken from a section file's ``text``
    (added, or replaced in place), comments kept. Its image and package are resolved now, as
    `project update` would, unless another service names the same ones: pins are by image
    reference and package name, and the services left alone keep what their version pinned."""
    current = await ctx.store.call(goal_store.current_version, project)
    others = [s for s in (await ctx.goals.spec_of(current)).services if s.name != service]
    pins = dict(ctx.goals.catalogue(current.packages))
    meta = await ctx.store.call(meta_store.values, project.id)

    def splice() -> tuple[str, object, object]:
        read = sections.read(text, filename, service)
        package = read[0].get("package") if isinstance(read[0], Mapping) else None
        sections.check(current.manifest, _label(project, current), service, read, filename,
                       edit_rules(ctx, current, _catalogue(ctx.packages, pins, package, others), meta))
        editor = sections.Editor(current.manifest)
        section = editor.section_of(text, service, filename)
        editor.put(service, section)
        return editor.text(), section.get("image"), section.get("package")

    new_text, image, package = await trio.to_thread.run_sync(splice)
    images = dict(await ctx.store.call(goal_store.version_images, current.id))
    if not any(s.image == image for s in others):
        images.pop(image, None)  # type: ignore[call-overload]
    return await pinned_update(ctx, project, current, new_text, author, params, images,
                               _catalogue(ctx.packages, pins, package, others), summary_prefix, report=report)


def edit_rules(ctx: Context, current: VersionRow, packages: Mapping[str, Package],
               meta: Mapping[str, str | None] | None = None) -> Rules:
    """What an edit of the current version is judged by: today's policy, that version's env
    files and directory, the project's meta (None: not checked)."""
    return Rules(packages, ctx.allow_privileged, env_files.loads(current.env_files), ctx.bind_roots,
                 current.base_dir, meta=meta, cluster=ctx.cluster)


def _catalogue(
    today: Mapping[str, Package], pins: Mapping[str, Package], package: object, others: list,
) -> dict[str, Package]:
    """The pinned sizes for the services left alone, today's for the one being put in."""
    catalogue = {**today, **pins}
    if isinstance(package, str) and package in today and not any(s.package == package for s in others):
        catalogue[package] = today[package]
    return catalogue


async def drop_service(ctx: Context, project: ProjectRow, service: str, author: str, params: dict):
    """A new version without service ``service``; everything else keeps its pins."""
    current = await ctx.store.call(goal_store.current_version, project)
    packages = dict(ctx.goals.catalogue(current.packages))

    def cut() -> str:
        sections.check(current.manifest, _label(project, current), service, None, "",
                       edit_rules(ctx, current, packages))
        editor = sections.Editor(current.manifest)
        editor.drop(service)
        return editor.text()

    new_text = await trio.to_thread.run_sync(cut)
    images = dict(await ctx.store.call(goal_store.version_images, current.id))
    return await pinned_update(ctx, project, current, new_text, author, params, images, packages,
                               "service delete: ")
