"""A meta or secret change reaching the instances that use it.

Environment, command, entrypoint and tags are fixed when an instance is made (the spec says so),
so a change to a key they use is a new version of the project: the same manifest, made with
today's meta, whose services that use the key have a new ``meta_digest`` (converge/goals.py) and
so a rolling reprovision, like any update (``--rolling`` 1 by default, ``min_healthy_time``,
``progress_deadline``: never every instance at once). A service with ``on_meta_change: none``
has no digest, so it is left alone; instances made later (``service reprovision``) get the
new value. Health checks render their templates live and are re-armed at once.

A secret named in ``environment`` (``{{ .secret.NAME }}``, ``secret_env: true``) is the same: the
version records the vault's HMAC of its value under ``secret.NAME`` (``converge/goals.py``), so
`secret set` rolls the services that use it out the same way (files of ``secrets:`` are rewritten
in place instead, by ``vault/delivery.py``).
"""

from __future__ import annotations

from mariposa.context import Context
from mariposa.control import manifests
from mariposa.converge.goals import SECRET_PREFIX, fixed_keys
from mariposa.converge.render import env_secrets
from mariposa.errors import Conflict
from mariposa.manifest import env_files, interpolate
from mariposa.model import ProjectSpec
from mariposa.store import goal as goal_store
from mariposa.store.rows import ProjectRow

TRIES = 5  # another change of the project meanwhile: made again on top of it


def keys_used(spec: ProjectSpec) -> dict[str, list[str]]:
    """Each meta key the spec uses anywhere (fixed fields, health checks, mdata) -> its services."""
    used: dict[str, list[str]] = {}
    for svc in spec.services:
        keys = set(svc.meta_keys)
        for _, text in svc.mdata:
            keys.update(interpolate.meta_keys(text))
        for check in svc.healthchecks:
            for text in (check.path or "", *(check.command or ())):
                keys.update(interpolate.meta_keys(text))
        for key in keys:
            used.setdefault(key, []).append(svc.name)
    return used


def secrets_used(spec: ProjectSpec) -> dict[str, list[str]]:
    """Each secret the spec uses (a file of ``secrets:`` or ``{{ .secret.NAME }}``) -> its services."""
    used: dict[str, list[str]] = {}
    for svc in spec.services:
        for name in sorted({*svc.secrets, *env_secrets(svc)}):
            used.setdefault(name, []).append(svc.name)
    return used


def _what(keys: frozenset[str]) -> str:
    """How a version's summary names the change: meta keys, then secrets (never a value)."""
    meta = sorted(k for k in keys if not k.startswith(SECRET_PREFIX))
    secrets = sorted(k.removeprefix(SECRET_PREFIX) for k in keys if k.startswith(SECRET_PREFIX))
    parts = ([f"meta {', '.join(meta)}"] if meta else []) + ([f"secret {', '.join(secrets)}"] if secrets else [])
    return " and ".join(parts)


async def current_use(ctx: Context, project: ProjectRow) -> dict[str, list[str]]:
    current = await ctx.store.call(goal_store.current_version, project)
    return keys_used(await ctx.goals.spec_of(current))


async def roll_out(ctx: Context, project: ProjectRow, keys: frozenset[str], author: str) -> list[dict]:
    """The tasks of the new version the change makes (none when no service's fixed fields use
    the keys with ``on_meta_change: rolling``). ``keys`` are as ``meta_used`` names them: a meta
    key, or ``secret.NAME``."""
    if not keys:
        return []
    ctx.health_wakeup.set()
    for _ in range(TRIES):
        project = await ctx.store.call(goal_store.get_project, project.id)
        if project.desired == "deleting":
            return []
        current = await ctx.store.call(goal_store.current_version, project)
        spec = await ctx.goals.spec_of(current)
        rolling = [s.name for s in spec.services if s.on_meta_change == "rolling" and keys & set(fixed_keys(s))]
        if not rolling:
            return []
        images = await ctx.store.call(goal_store.version_images, current.id)
        try:
            version, _before, tasks = await manifests.update(
                ctx, project, current.manifest, current.filename or "<meta change>", author, {},
                images=images, packages=ctx.goals.catalogue(current.packages),
                env_files=env_files.loads(current.env_files), base_dir=current.base_dir, if_version=current.id,
                summary_prefix=f"{_what(keys)} changed: ")
        except Conflict:
            continue  # the project changed meanwhile: look again at its newest version
        return [t.to_json() for t in tasks] if version is not None else []
    return []
