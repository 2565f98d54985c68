"""Changes to the goal state, each one transaction that also queues the tasks it implies.

Functions here take already-validated specs: parsing happens before we touch the database, so a
rejected manifest changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import sqlite_utils

from mariposa.errors import BadRequest, Conflict, NotFound
from mariposa.manifest.env_files import dumps as env_files_json
from mariposa.manifest.report import MAX_SCALE
from mariposa.metrics import autoscale
from mariposa.model import ProjectSpec, ServiceSpec
from mariposa.packages import Package, dumps
from mariposa.store import events, tasks
from mariposa.store import triggers as trigger_store
from mariposa.store.db import new_id, now
from mariposa.store.rows import ProjectRow, ServiceRow, TaskRow, VersionRow, resolve, row_to


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- reads ------------------------------------------------------------------------------------


def get_project(db: sqlite_utils.Database, ref: str) -> ProjectRow:
    return row_to(ProjectRow, resolve(db, "projects", ref, what="project"))


def project_exists(db: sqlite_utils.Database, name: str) -> bool:
    return db.execute("SELECT 1 FROM projects WHERE name = ?", [name]).fetchone() is not None


def list_projects(db: sqlite_utils.Database) -> list[ProjectRow]:
    return [row_to(ProjectRow, r) for r in db.query("SELECT * FROM projects ORDER BY name")]


def project_summaries(db: sqlite_utils.Database) -> list[tuple[ProjectRow, int, int]]:
    """Every project with its current version's number and how many services it has, read in
    one query: a listing made of one read per project saw projects whose delete completed
    between two reads (and answered 404 for a listing)."""
    rows = db.query(
        """
        SELECT p.*, v.seq AS version_seq,
               (SELECT COUNT(*) FROM services s WHERE s.project_id = p.id AND s.desired != 'absent') AS service_count
        FROM projects p JOIN versions v ON v.id = p.current_version
        ORDER BY p.name
        """
    )
    return [(row_to(ProjectRow, r), r["version_seq"], r["service_count"]) for r in rows]


def get_version(db: sqlite_utils.Database, ref: str, project_id: str | None = None) -> VersionRow:
    where, args = ("project_id = ?", [project_id]) if project_id else ("1=1", [])
    return row_to(VersionRow, resolve(db, "versions", ref, what="version", where=where, where_args=args, by_name=False))


def current_version(db: sqlite_utils.Database, project: ProjectRow) -> VersionRow:
    assert project.current_version is not None  # only unset inside add_project's transaction
    return get_version(db, project.current_version)


def list_versions(db: sqlite_utils.Database, project_id: str) -> list[VersionRow]:
    rows = db.query("SELECT * FROM versions WHERE project_id = ? ORDER BY seq DESC", [project_id])
    return [row_to(VersionRow, r) for r in rows]


def list_services(db: sqlite_utils.Database, project_id: str, include_absent: bool = False) -> list[ServiceRow]:
    extra = "" if include_absent else " AND desired != 'absent'"
    rows = db.query(f"SELECT * FROM services WHERE project_id = ?{extra} ORDER BY name", [project_id])
    return [row_to(ServiceRow, r) for r in rows]


def get_service(db: sqlite_utils.Database, project: ProjectRow, ref: str) -> ServiceRow:
    row = resolve(db, "services", ref, what=f"service in project '{project.name}'", where="project_id = ?",
                  where_args=[project.id])
    return row_to(ServiceRow, row)


# ---- projects ---------------------------------------------------------------------------------


def version_images(db: sqlite_utils.Database, version_id: str) -> dict[str, str | None]:
    rows = db.query("SELECT image, image_id FROM version_images WHERE version_id = ?", [version_id])
    return {r["image"]: r["image_id"] for r in rows}


def _insert_version(
    db: sqlite_utils.Database, project_id: str, text: str, filename: str | None, author: str | None, summary: str,
    images: dict[str, str | None] | None = None, packages: dict[str, Package] | None = None,
    env_files: Mapping[str, Any] | None = None, base_dir: str | None = None,
    meta_used: Mapping[str, str | None] | None = None,
) -> VersionRow:
    seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE project_id = ?", [project_id]).fetchone()[0]
    version_id = new_id()
    db.table("versions").insert(
        {
            "id": version_id,
            "project_id": project_id,
            "seq": seq,
            "hash": text_hash(text),
            "manifest": text,
            "filename": filename,
            "created": now(),
            "author": author,
            "summary": summary,
            "packages": dumps(packages or {}),
            "env_files": env_files_json(env_files),
            "base_dir": base_dir,
            "meta_hash": text_hash(_meta_json(meta_used) or "") if meta_used else None,
            "meta_used": _meta_json(meta_used),
        }
    )
    for image, image_id in (images or {}).items():
        db.table("version_images").insert({"version_id": version_id, "image": image, "image_id": image_id})
    return get_version(db, version_id)


def _meta_json(used: Mapping[str, str | None] | None) -> str | None:
    return json.dumps(dict(sorted(used.items()))) if used else None


def _insert_service(db: sqlite_utils.Database, project_id: str, spec: ServiceSpec, desired: str) -> None:
    db.table("services").insert(
        {
            "id": new_id(),
            "project_id": project_id,
            "name": spec.name,
            "scale": autoscale.clamped(spec.scale if spec.scale is not None else 1, spec),
            "desired": desired,
            "frozen": 0,
            "frozen_reason": None,
            "created": now(),
        }
    )


def add_project(
    db: sqlite_utils.Database,
    name: str,
    text: str,
    spec: ProjectSpec,
    *,
    filename: str | None = None,
    author: str | None = None,
    source: str = "api",
    images: dict[str, str | None] | None = None,
    packages: dict[str, Package] | None = None,
    env_files: Mapping[str, Any] | None = None,
    base_dir: str | None = None,
    meta: Mapping[str, str | None] | None = None,
    meta_used: Mapping[str, str | None] | None = None,
    also: Callable[[sqlite_utils.Database, ProjectRow], None] | None = None,
    triggers: trigger_store.Fresh | None = None,
    org: str = "default",
) -> tuple[ProjectRow, list[TaskRow]]:
    """``org`` is the organisation it belongs to (checked to exist in this transaction).
    ``meta`` (project add --meta, project copy --with-meta) is set in the same transaction,
    and ``also`` is done in it (project copy --with-secrets: the secrets its version may use)."""
    if project_exists(db, name):
        raise Conflict(f"project '{name}' already exists; use 'mariposa project update {name} FILE'")
    if db.execute("SELECT 1 FROM orgs WHERE name = ?", [org]).fetchone() is None:
        raise NotFound(f"no organisation '{org}' (mariposa org list shows them; mariposa org add {org} makes it)")
    project_id = new_id()
    db.table("projects").insert(
        {"id": project_id, "name": name, "created": now(), "current_version": None, "desired": "running",
         "source": source, "org": org}
    )
    summary = "created: " + ", ".join(spec.service_names)
    version = _insert_version(db, project_id, text, filename, author, summary, images, packages, env_files,
                              base_dir, meta_used)
    db.execute("UPDATE projects SET current_version = ? WHERE id = ?", [version.id, project_id])
    trigger_store.sync(db, project_id, spec, triggers or {})
    if meta:
        from mariposa.store import meta as meta_store

        meta_store.import_values(db, get_project(db, project_id), meta, True, author)
    if also is not None:
        also(db, get_project(db, project_id))
    queued = []
    for svc in spec.services:
        _insert_service(db, project_id, svc, "running")
        queued.append(
            tasks.enqueue(db, project_id=project_id, project_name=name, service=svc.name, kind="start", author=author)
        )
    events.record(db, "project.add", f"project {name} added (version 1)", project_id=project_id, author=author)
    return get_project(db, project_id), queued


def describe_changes(old: ProjectSpec, new: ProjectSpec) -> list[tuple[str, str]]:
    """(service, change) pairs: added, removed, changed, scale N."""
    changes = []
    for svc in new.services:
        before = old.service(svc.name)
        if before is None:
            changes.append((svc.name, "added"))
        elif before.spec_hash != svc.spec_hash:
            changes.append((svc.name, "changed"))
        elif svc.scale is not None and svc.scale != before.scale:
            changes.append((svc.name, f"scale {svc.scale}"))
    for svc in old.services:
        if new.service(svc.name) is None:
            changes.append((svc.name, "removed"))
    return changes


def update_project(
    db: sqlite_utils.Database,
    project: ProjectRow,
    text: str,
    old: ProjectSpec,
    new: ProjectSpec,
    *,
    filename: str | None = None,
    author: str | None = None,
    params: dict | None = None,
    images: dict[str, str | None] | None = None,
    packages: dict[str, Package] | None = None,
    env_files: Mapping[str, Any] | None = None,
    base_dir: str | None = None,
    if_version: str | None = None,
    summary_prefix: str = "",
    meta_used: Mapping[str, str | None] | None = None,
    triggers: trigger_store.Fresh | None = None,
) -> tuple[VersionRow | None, list[TaskRow]]:
    """Write a new version and queue what it implies. The same text resolving to the same
    images is not a new version; the same text with a moved tag is (its instances change)."""
    if project.desired == "deleting":
        raise Conflict(f"project '{project.name}' is being deleted")
    current = current_version(db, project)
    if if_version is not None and if_version not in (current.id, str(current.seq)) and not (
        len(if_version) >= 4 and current.id.startswith(if_version)
    ):
        raise Conflict(
            f"project '{project.name}' is at version {current.seq} ({current.id[:12]}), not {if_version}: "
            "someone else changed it; look at 'mariposa project versions' and try again"
        )
    if (current.hash == text_hash(text) and version_images(db, current.id) == (images or {})
            and current.packages == dumps(packages or {}) and current.env_files == env_files_json(env_files)
            and current.base_dir == base_dir and current.meta_used == _meta_json(meta_used)):
        return None, []
    changes = describe_changes(old, new)
    summary = summary_prefix + ("; ".join(f"{s}: {c}" for s, c in changes) or "no change to instances")
    version = _insert_version(db, project.id, text, filename, author, summary, images, packages, env_files,
                              base_dir, meta_used)
    db.execute("UPDATE projects SET current_version = ? WHERE id = ?", [version.id, project.id])
    trigger_store.sync(db, project.id, new, triggers or {})
    service_desired = "stopped" if project.desired == "stopped" else "running"
    existing = {s.name: s for s in list_services(db, project.id, include_absent=True)}
    queued = []

    def queue(service: str, kind: str, extra: dict | None = None) -> None:
        queued.append(
            tasks.enqueue(
                db, project_id=project.id, project_name=project.name, service=service, kind=kind,
                params={**(params or {}), **(extra or {})}, author=author,
            )
        )

    for service, change in changes:
        row = existing.get(service)
        spec = new.service(service)
        if change == "removed":
            assert row is not None  # every service of the old version has a row
            db.execute("UPDATE services SET desired = 'absent', frozen = 0 WHERE id = ?", [row.id])
            queue(service, "stop", {"remove": True})
            continue
        assert spec is not None  # any other change names a service of the new version
        if row is None:
            _insert_service(db, project.id, spec, service_desired)
        else:
            updates: dict[str, object] = {
                "frozen": 0, "frozen_reason": None, "replacements": 0, "last_replacement_at": None
            }
            if row.desired == "absent":
                updates["desired"] = service_desired
            if spec.scale is not None and (
                row.desired == "absent" or spec.scale != (old.service(service) or spec).scale
            ):
                updates["scale"] = spec.scale
                updates["last_scaled"] = now()
            db.table("services").update(row.id, updates)
        if change == "changed":
            # a canary leaves the rest on the old version until the next reprovision
            db.execute("UPDATE services SET keep_stale = ? WHERE project_id = ? AND name = ?",
                       [1 if (params or {}).get("count") else 0, project.id, service])
        if service_desired == "running" or change != "added":
            kind = {"added": "start", "changed": "reprovision"}.get(change, "scale")
            queue(service, kind)
    for spec in new.services:  # a new autoscale range moves a scale outside it to its nearest bound
        row = existing.get(spec.name)
        if row is None or autoscale.enforced_range(spec) is None:
            continue
        scale = db.execute("SELECT scale FROM services WHERE id = ?", [row.id]).fetchone()[0]  # as set above
        if autoscale.clamped(scale, spec) == scale:
            continue
        db.execute("UPDATE services SET scale = ?, last_scaled = ? WHERE id = ?",
                   [autoscale.clamped(scale, spec), now(), row.id])
        if not any(t.service == spec.name for t in queued):
            queue(spec.name, "scale")
    events.record(
        db, "project.update", f"project {project.name} updated to version {version.seq}: {summary}",
        project_id=project.id, author=author,
    )
    return version, queued


def set_project_desired(
    db: sqlite_utils.Database, project: ProjectRow, desired: str, author: str | None = None
) -> list[TaskRow]:
    """Start or stop every service of the project."""
    if project.desired == "deleting":
        raise Conflict(f"project '{project.name}' is being deleted")
    db.execute("UPDATE projects SET desired = ? WHERE id = ?", [desired, project.id])
    queued = []
    for svc in list_services(db, project.id):
        db.execute("UPDATE services SET desired = ?, frozen = 0, frozen_reason = NULL WHERE id = ?", [desired, svc.id])
        queued.append(
            tasks.enqueue(
                db, project_id=project.id, project_name=project.name, service=svc.name,
                kind="start" if desired == "running" else "stop", author=author,
            )
        )
    events.record(db, f"project.{'start' if desired == 'running' else 'stop'}", f"project {project.name} {desired}",
                  project_id=project.id, author=author)
    return queued


def mark_deleting(
    db: sqlite_utils.Database, project: ProjectRow, author: str | None = None, purge_volumes: bool = False
) -> TaskRow:
    db.execute("UPDATE projects SET desired = 'deleting' WHERE id = ?", [project.id])
    trigger_store.forget(db, project.id)  # its URLs stop at once, not when its instances are gone
    # Every open service task is moot now: the delete task removes everything.
    db.execute(
        "UPDATE tasks SET state = 'terminated', ended = ?, message = 'project deleted' "
        "WHERE project_id = ? AND state = 'queued'",
        [now(), project.id],
    )
    events.record(db, "project.delete", f"project {project.name} deleting", project_id=project.id, author=author)
    return tasks.enqueue(db, project_id=project.id, project_name=project.name, service=None, kind="delete",
                         author=author, params={"purge_volumes": True} if purge_volumes else None)


def forget_project(db: sqlite_utils.Database, project_id: str) -> None:
    """The last step of a delete, once nothing of the project runs any more."""
    db.execute("DELETE FROM projects WHERE id = ?", [project_id])


# ---- services ---------------------------------------------------------------------------------


def _thawed_task(
    db: sqlite_utils.Database, project: ProjectRow, svc: ServiceRow, kind: str, author: str | None,
    params: dict | None = None,
) -> TaskRow:
    """A new goal from the operator: thaw the service and forget its failure back-off."""
    db.execute(
        "UPDATE services SET frozen = 0, frozen_reason = NULL, replacements = 0, last_replacement_at = NULL "
        "WHERE id = ?",
        [svc.id],
    )
    return tasks.enqueue(
        db, project_id=project.id, project_name=project.name, service=svc.name, kind=kind, params=params, author=author
    )


def scale_service(
    db: sqlite_utils.Database, project: ProjectRow, svc: ServiceRow, amount: str, author: str | None = None, *,
    spec: ServiceSpec | None = None, reason: str | None = None,
) -> TaskRow:
    """``spec``: the service's current spec, whose autoscale range an operator's scale keeps to;
    ``reason``: why the autoscaler scales (then the range is its own to keep), kept in the task's
    params and the event."""
    text = str(amount).strip()
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"scale must be a whole number or a relative one like +1 or -2, not '{amount}'") from None
    target = svc.scale + value if text[:1] in "+-" else value
    if target < 0:
        raise BadRequest(f"cannot scale {svc.name} to {target}: scale is at least 0 (it is {svc.scale})")
    if target > MAX_SCALE:
        raise BadRequest(f"cannot scale {svc.name} to {target}: one service runs at most {MAX_SCALE:,} instances")
    if project.desired == "deleting":
        raise Conflict(f"project '{project.name}' is being deleted")
    refusal = None if reason is not None else autoscale.outside_range(spec, target)
    if refusal is not None:
        raise Conflict(refusal)
    db.execute("UPDATE services SET scale = ?, last_scaled = ? WHERE id = ?", [target, now(), svc.id])
    because = f" ({reason})" if reason else ""
    events.record(db, "service.scale", f"{svc.name} scale {svc.scale} -> {target}{because}", project_id=project.id,
                  service=svc.name, author=author)
    params = {"from": svc.scale, "to": target, **({"reason": reason} if reason else {})}
    return _thawed_task(db, project, svc, "scale", author, params)


def set_service_desired(
    db: sqlite_utils.Database, project: ProjectRow, svc: ServiceRow, desired: str, author: str | None = None
) -> TaskRow:
    if project.desired == "deleting":
        raise Conflict(f"project '{project.name}' is being deleted")
    db.execute("UPDATE services SET desired = ? WHERE id = ?", [desired, svc.id])
    if desired == "running" and project.desired == "stopped":
        db.execute("UPDATE projects SET desired = 'running' WHERE id = ?", [project.id])
    kind = "start" if desired == "running" else "stop"
    events.record(db, f"service.{kind}", f"{svc.name} {desired}", project_id=project.id, service=svc.name,
                  author=author)
    return _thawed_task(db, project, svc, kind, author)


def freeze_service(db: sqlite_utils.Database, project_id: str, service: str, reason: str) -> None:
    db.execute(
        "UPDATE services SET frozen = 1, frozen_reason = ? WHERE project_id = ? AND name = ?",
        [reason, project_id, service],
    )


def note_replacement(db: sqlite_utils.Database, project_id: str, service: str, count: int, at: float) -> None:
    """A failed instance is being replaced: the streak is ``count`` long as of ``at`` (the
    planner's time), and the next replacement waits longer."""
    db.execute(
        "UPDATE services SET replacements = ?, last_replacement_at = ? WHERE project_id = ? AND name = ?",
        [count, at, project_id, service],
    )


def reprovision_service(
    db: sqlite_utils.Database, project: ProjectRow, svc: ServiceRow, keep_stale: bool, params: dict,
    author: str | None = None,
) -> TaskRow:
    """Queue a reprovision. ``keep_stale``: instances of older versions that it does not select
    stay (a canary); the service is thawed, since replacing is the operator's new goal."""
    db.execute("UPDATE services SET keep_stale = ?, frozen = 0, frozen_reason = NULL WHERE id = ?",
               [int(keep_stale), svc.id])
    return tasks.enqueue(db, project_id=project.id, project_name=project.name, service=svc.name,
                         kind="reprovision", params=params, author=author)


def thaw_service(db: sqlite_utils.Database, project: ProjectRow, svc: ServiceRow, author: str | None = None) -> TaskRow:
    events.record(db, "service.thaw", f"{svc.name} thawed", project_id=project.id, service=svc.name, author=author)
    return _thawed_task(db, project, svc, "converge", author)


def forget_service(db: sqlite_utils.Database, project_id: str, name: str) -> None:
    db.execute("DELETE FROM services WHERE project_id = ? AND name = ? AND desired = 'absent'", [project_id, name])
    # its runs and schedule go with it: a service added again later starts afresh, with no catch-up
    db.execute("DELETE FROM runs WHERE project_id = ? AND service = ?", [project_id, name])
    db.execute("DELETE FROM schedule_cursors WHERE project_id = ? AND service = ?", [project_id, name])
