"""Adding and updating projects: one path for the API and the watched directory, so a manifest
dropped in /etc/mariposa/projects is checked and applied exactly like `mariposa project update`.
"""

from __future__ import annotations

import attrs

from mariposa.context import Context
from mariposa.errors import Conflict, InvalidManifest
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.model import ProjectSpec
from mariposa.store import goal as goal_store
from mariposa.store.rows import ProjectRow, TaskRow, VersionRow


def parse(ctx: Context, text: str, filename: str) -> ProjectSpec:
    try:
        return parse_manifest(text, filename, packages=ctx.packages)
    except ManifestError as exc:
        problems = [attrs.asdict(p) for p in exc.problems]
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        raise InvalidManifest(f"{filename}: {count} in the manifest; nothing was changed", details=problems) from None


def refuse_if_file_managed(project: ProjectRow, action: str) -> None:
    """One source of truth: a project that comes from a file changes through that file."""
    if project.source and project.source != "api" and project.source_state != "orphaned":
        raise Conflict(
            f"project '{project.name}' is managed by the file {project.source}: {action} that file instead"
        )


async def add(ctx: Context, name: str, text: str, filename: str, author: str, source: str = "api") -> tuple[ProjectRow, list[TaskRow]]:
    spec = parse(ctx, text, filename)
    result = await ctx.store.call(
        lambda db: goal_store.add_project(db, name, text, spec, filename=filename, author=author, source=source)
    )
    ctx.queue.set()
    return result


async def update(
    ctx: Context, project: ProjectRow, text: str, filename: str, author: str, params: dict | None = None
) -> tuple[VersionRow | None, VersionRow, list[TaskRow]]:
    """(new version or None when unchanged, the version before, queued tasks)."""
    new = parse(ctx, text, filename)
    current = await ctx.store.call(goal_store.current_version, project)
    old = ctx.goals.spec_for(current.id, current.manifest)
    version, tasks = await ctx.store.call(
        lambda db: goal_store.update_project(db, project, text, old, new, filename=filename, author=author, params=params)
    )
    ctx.queue.set()
    ctx.reconcile.set()
    return version, current, tasks
