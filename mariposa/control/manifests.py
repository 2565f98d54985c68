"""The one path by which manifest text becomes a project version, for the control socket and
the watched directory alike: a manifest dropped in /etc/mariposa/projects is checked and applied
exactly like `mariposa project update`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from mariposa.context import Context
from mariposa.control.caller import Caller
from mariposa.control.pulls import Report, ensure_images
from mariposa.control.triggers import fresh_tokens
from mariposa.converge.goals import meta_used, with_images, with_meta
from mariposa.converge.render import env_secrets
from mariposa.drivers.base import DriverError
from mariposa.errors import BadRequest, Conflict, translate
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.manifest.env_files import checked as env_files_checked
from mariposa.manifest.env_files import referenced
from mariposa.model import ProjectSpec
from mariposa.packages import Package, pinned
from mariposa.store import events as event_store
from mariposa.store import goal as goal_store
from mariposa.store import meta as meta_store
from mariposa.store import secrets as secret_store
from mariposa.store.rows import ProjectRow, TaskRow, VersionRow


def require_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("'manifest' (the manifest text) is required")
    return text


def require_env_files(value: object) -> dict[str, Any]:
    try:
        return env_files_checked(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


async def require_meta(value: object) -> dict[str, str | None] | None:
    """A meta manifest's text (`project add --meta FILE`), parsed; None when not given."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("'meta' must be the text of a meta manifest (a YAML map)")
    from mariposa.meta_manifest import parse_meta

    try:
        return await trio.to_thread.run_sync(parse_meta, value, "<meta>")
    except ManifestError as exc:
        raise translate(exc) from None


def require_base_dir(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value or len(value) > 4096:
        raise BadRequest("'base_dir' must be the absolute path of the manifest's directory")
    return value


async def parse(
    ctx: Context, text: str, filename: str, packages: Mapping[str, Package] | None = None,
    env_files: Mapping[str, Any] | None = None, base_dir: str | None = None, project: str | None = None,
    meta: Mapping[str, str | None] | None = None, extra_secrets: frozenset[str] = frozenset(),
) -> ProjectSpec:
    """Parsed on a worker thread: within the bounds of ``manifest/limits.py`` a manifest costs
    little, but never the event loop's time, which every other client shares. ``packages`` is
    the catalogue to judge it by: today's, unless it is a stored version's text (a revert);
    ``env_files`` the texts of the env files it names, read by the caller; ``project`` the name
    of the project whose secrets a service may name; ``meta`` the project's meta, which every
    template's ``.meta.KEY`` must be in; ``extra_secrets`` names the project will have with the
    version (the ones `project copy --with-secrets` copies in the same transaction)."""
    catalogue = ctx.packages if packages is None else packages
    secrets = None if project is None else extra_secrets | frozenset(
        await ctx.store.call(secret_store.names, secret_store.PROJECT, project))
    try:
        spec = await trio.to_thread.run_sync(
            lambda: parse_manifest(text, filename, catalogue, ctx.allow_privileged, env_files,
                                   bind_roots=ctx.bind_roots, base_dir=base_dir, secrets=secrets, meta=meta,
                                   cluster=ctx.cluster))
        if ctx.cluster == "swarm":
            await _refuse_what_the_swarm_cannot_run(ctx, spec, text, filename, project or "")
        return spec
    except ManifestError as exc:
        raise translate(exc) from None


async def _refuse_what_the_swarm_cannot_run(ctx: Context, spec: ProjectSpec, text: str, filename: str,
                                            project: str) -> None:
    from mariposa.swarm.admit import refuse_what_the_swarm_cannot_run
    from mariposa.swarm.driver import SwarmDriver

    driver = ctx.drivers.get("docker")
    if isinstance(driver, SwarmDriver):
        await refuse_what_the_swarm_cannot_run(driver, spec, text, filename, project)


async def secret_digests(ctx: Context, spec: ProjectSpec, scope: str,
                         known: Mapping[str, bytes] | None = None) -> dict[str, str]:
    """The vault's HMAC of each secret the spec's environments name (``meta_used`` records them,
    so a change to one is a new version of the services that use it); ``known`` are values read
    already (a copy's), taken before the project's own."""
    names = sorted({n for s in spec.services for n in env_secrets(s)})
    if not names:
        return {}
    values = {n: v for n, v in (known or {}).items() if n in names}
    values.update(await ctx.vault.get_many(secret_store.PROJECT, scope, [n for n in names if n not in values]))
    return await ctx.vault.digests(values)


async def used_env_files(text: str, env_files: Mapping[str, Any] | None) -> dict[str, Any]:
    """Of what the caller sent, the env files the manifest names: all the version keeps."""
    if not env_files:
        return {}
    named = await trio.to_thread.run_sync(referenced, text)
    return {path: env_files[path] for path in named if path in env_files}


def refuse_if_file_managed(caller: Caller, project: ProjectRow, action: str) -> None:
    """One source of truth: a project that comes from a file changes through that file (the
    watched directory is that file's own channel; every other caller edits the file)."""
    if caller.transport == "watch":
        return
    if project.source and project.source != "api" and project.source_state != "orphaned":
        raise Conflict(
            f"project '{project.name}' is managed by the file {project.source}: {action} that file instead"
        )


async def resolve_images(ctx: Context, spec: ProjectSpec) -> dict[str, str | None]:
    """Each image's content id now, pulling nothing: what `project diff` compares with. An image
    not on the host is unresolved (None). Versions are made with ``pulls.ensure_images``."""
    found: dict[str, str | None] = {}
    for svc in spec.services:
        if svc.image in found:
            continue
        try:
            found[svc.image] = await ctx.driver_for(svc.compute_type).resolve_image(svc.image)
        except DriverError:
            found[svc.image] = None
    return found


async def check_networks(ctx: Context, spec: ProjectSpec) -> None:
    """Refuse a version whose external networks are not on the host: its instances could never
    be made, and the refusal names the network while nothing has changed yet."""
    missing: dict[str, str] = {}
    for svc in spec.services:
        for ref in svc.networks:
            if ref.external and ref.runtime_name and ref.runtime_name not in missing:
                if not await ctx.driver_for(svc.compute_type).network_exists(ref.runtime_name):
                    missing[ref.runtime_name] = ref.name
    if missing:
        names = ", ".join(f"{real} (networks.{name})" for real, name in missing.items())
        raise BadRequest(f"external network {names} does not exist on this host; create it first "
                         f"(docker network create NAME) or declare the network without external: true")


async def add(
    ctx: Context, name: str, text: str, filename: str, author: str, source: str = "api",
    env_files: Mapping[str, Any] | None = None, base_dir: str | None = None, report: Report | None = None,
    meta: Mapping[str, str | None] | None = None, secrets_from: str | None = None, org: str = "default",
) -> tuple[ProjectRow, list[TaskRow]]:
    """``meta`` is the new project's meta, set with it in one transaction (its templates may use
    it); so are the secrets of project ``secrets_from`` (`project copy --with-secrets`), copied as
    the encrypted tokens they are: no value is decrypted for the copy, only for its audit HMAC."""
    tokens: dict[str, str] = {}
    if secrets_from is not None:
        tokens = await ctx.store.call(secret_store.all_tokens, secret_store.PROJECT, secrets_from)
    spec = await parse(ctx, text, filename, env_files=env_files, base_dir=base_dir, project=name, meta=meta or {},
                       extra_secrets=frozenset(tokens))
    if await ctx.store.call(goal_store.project_exists, name):  # asked again when stored; this one saves a pull
        raise Conflict(f"project '{name}' already exists; use 'mariposa project update {name} FILE'")
    await check_networks(ctx, spec)  # before a pull: it costs nothing
    images = await ensure_images(ctx, spec, report=report, author=author)
    packages = pinned(spec.services, ctx.packages)
    files = await used_env_files(text, env_files)
    copied = await ctx.vault.open(tokens)
    hmacs = await ctx.vault.digests(copied)
    used = meta_used(spec, meta or {}, await secret_digests(ctx, spec, name, copied))

    def copy_secrets(db, project: ProjectRow) -> None:
        """In the transaction that adds the project: its first version may use them."""
        for key, token in sorted(tokens.items()):
            version = secret_store.put(db, secret_store.PROJECT, name, key, token, author)
            event_store.record(db, "secret.set", f"secret {key} of project {name} set to version {version}, "
                               f"copied from project {secrets_from} (hmac-sha256 {hmacs[key]})",
                               project_id=project.id, author=author)

    fresh = await fresh_tokens(ctx, spec)
    result = await ctx.store.call(
        lambda db: goal_store.add_project(db, name, text, spec, filename=filename, author=author, source=source,
                                          images=images, packages=packages, env_files=files, base_dir=base_dir,
                                          meta=meta, meta_used=used, also=copy_secrets if tokens else None,
                                          triggers=fresh, org=org)
    )
    ctx.wake_queue()
    return result


async def update(
    ctx: Context, project: ProjectRow, text: str, filename: str, author: str, params: dict | None = None,
    *, if_version: str | None = None, images: dict | None = None, packages: Mapping[str, Package] | None = None,
    env_files: Mapping[str, Any] | None = None, base_dir: str | None = None, summary_prefix: str = "",
    report: Report | None = None,
) -> tuple[VersionRow | None, VersionRow, list[TaskRow]]:
    """(new version or None when unchanged, the version before, queued tasks). ``images`` and
    ``packages`` given (a revert) reuse a version's pinned ones instead of resolving them anew;
    else the images are pulled as the services' ``pull`` says and resolved (``pulls.py``)."""
    meta = await ctx.store.call(meta_store.values, project.id)
    parsed = await parse(ctx, text, filename, packages, env_files, base_dir, project=project.name, meta=meta)
    await check_networks(ctx, parsed)
    used = meta_used(parsed, meta, await secret_digests(ctx, parsed, project.name))
    pins = pinned(parsed.services, ctx.packages if packages is None else packages)
    files = await used_env_files(text, env_files)
    if images is None:
        images = await ensure_images(ctx, parsed, report=report, author=author, project_id=project.id)
    new = with_meta(with_images(parsed, images), used)
    current = await ctx.store.call(goal_store.current_version, project)
    old = await ctx.goals.spec_of(current)
    fresh = await fresh_tokens(ctx, new)
    version, tasks = await ctx.store.call(
        lambda db: goal_store.update_project(
            db, project, text, old, new, filename=filename, author=author, params=params, images=images,
            packages=pins, env_files=files, base_dir=base_dir, if_version=if_version, summary_prefix=summary_prefix,
            meta_used=used, triggers=fresh,
        )
    )
    ctx.wake_queue()
    ctx.wake_reconciler()
    return version, current, tasks
