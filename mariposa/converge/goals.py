"""Reads the goal state into ``ServiceGoal`` values for the planner.

Versions are stored as verbatim manifest text with what it was resolved to when the version was
made (images' content ids, package sizes); parsed specs are cached by version id, which is sound
because a version never changes. A stored version is parsed against its own pinned packages, never
today's catalogue: a changed mariposa.toml must not invalidate what already runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import attrs
import sqlite_utils
import structlog
import trio

from mariposa.converge.render import env_secrets
from mariposa.errors import TaskFailed
from mariposa.manifest import ManifestError, env_files, parse_manifest
from mariposa.model import ProjectSpec, ServiceGoal, ServiceSpec
from mariposa.packages import DEFAULT_PACKAGES, Package, loads
from mariposa.store import goal as goal_store
from mariposa.store import instances as instance_store
from mariposa.store import tasks as task_store
from mariposa.store.db import Store
from mariposa.store.rows import ProjectRow, ServiceRow, TaskRow, VersionRow

log = structlog.get_logger()


@attrs.frozen
class GoalSnapshot:
    projects: tuple[ProjectRow, ...]
    services: tuple[ServiceRow, ...]
    manifests: dict  # version id -> its VersionRow and image ids, only for versions not yet cached
    open_tasks: tuple[TaskRow, ...]
    failures: dict  # (project id, service) -> (failed tasks in a row, when the last ended)
    records: dict  # instance id -> what the daemon remembers of it (store/instances.py)


def _read_snapshot(db: sqlite_utils.Database, cached: frozenset) -> GoalSnapshot:
    projects = tuple(goal_store.list_projects(db))
    services = []
    for p in projects:
        services.extend(goal_store.list_services(db, p.id, include_absent=True))
    manifests = {}
    for p in projects:
        if p.current_version and p.current_version not in cached:
            version = goal_store.get_version(db, p.current_version)
            manifests[p.current_version] = (version, goal_store.version_images(db, version.id))
    open_tasks = tuple(task_store.listing(db, states=("queued", "active")))
    return GoalSnapshot(
        projects, tuple(services), manifests, open_tasks, task_store.failure_streaks(db), instance_store.for_project(db)
    )


def with_images(spec: ProjectSpec, images: dict) -> ProjectSpec:
    return attrs.evolve(spec, services=tuple(
        attrs.evolve(s, image_id=images.get(s.image)) if images.get(s.image) else s for s in spec.services
    ))


SECRET_PREFIX = "secret."  # a secret's entry in meta_used (meta keys hold no '.', so never one of them)


def secret_key(name: str) -> str:
    return SECRET_PREFIX + name


def fixed_keys(s: ServiceSpec) -> list[str]:
    """What the service's fixed fields are made with, as meta_used names it: its meta keys and
    the secrets its environment names (``secret.NAME``)."""
    return [*s.meta_keys, *(secret_key(n) for n in env_secrets(s))]


def meta_used(spec: ProjectSpec, meta: Mapping[str, str | None],
              secrets: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """What a version records of the meta and secrets it is made with: each meta key its
    services' fixed fields use, with the sha256 of its value, and each secret their environment
    names (``secret.NAME``), with the vault's salted HMAC of its value (``secrets``, by name).
    Never a value: a digest answers "did it change?" and nothing more."""
    from mariposa.store.meta import value_hash

    keys = sorted({k for s in spec.services for k in s.meta_keys})
    used: dict[str, str | None] = {k: value_hash(meta.get(k)) for k in keys}
    for name in sorted({n for s in spec.services for n in env_secrets(s)}):
        used[secret_key(name)] = (secrets or {}).get(name)
    return used


def with_meta(spec: ProjectSpec, used: Mapping[str, str | None] | None) -> ProjectSpec:
    """Each service's ``meta_digest``: a hash of the value hashes of the keys and secrets it
    uses, so a meta or secret change makes a new spec (and a rolling reprovision) of exactly the
    services it changes. A secret counts only if the version recorded it: a version made before
    secrets were recorded keeps the digest (and so the instances) it always had."""
    if not used:
        return spec

    def digest(s: ServiceSpec) -> str | None:
        keys = [k for k in fixed_keys(s) if not k.startswith(SECRET_PREFIX) or k in used]
        if not keys or s.on_meta_change == "none":
            return None
        blob = json.dumps([[k, used.get(k)] for k in keys]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    return attrs.evolve(spec, services=tuple(attrs.evolve(s, meta_digest=digest(s)) for s in spec.services))


class GoalReader:
    def __init__(self, store: Store, packages: Mapping[str, Package] | None = None):
        self.store = store
        self.packages = packages
        self._specs: dict[str, ProjectSpec] = {}
        self._unreadable: dict[str, str] = {}  # version id -> why it cannot be parsed any more
        self._with_checks: dict[str, bool] = {}  # version id -> whether a service of it has health checks

    def catalogue(self, pinned: str | None) -> Mapping[str, Package]:
        """The packages a stored version is read with: the sizes it pinned; for a version made
        before versions pinned them, the built-in catalogue with today's additions."""
        if pinned is None:
            return {**DEFAULT_PACKAGES, **(self.packages or {})}
        return loads(pinned)

    async def spec_for(self, version: VersionRow, images: dict | None = None) -> ProjectSpec:
        """The version's spec with each service's image pinned to the content id, each package to
        the sizes and each env_file to the text, resolved when the version was made. Parsed on a
        worker thread, once per version: never on the loop."""
        spec = self._specs.get(version.id)
        if spec is None:
            # judged when it was made: neither today's catalogue, allow_privileged, bind_roots nor cluster
            # applies
            parsed = await trio.to_thread.run_sync(
                lambda: parse_manifest(version.manifest, f"version {version.id[:12]}",
                                       self.catalogue(version.packages), True, env_files.loads(version.env_files),
                                       bind_roots=None, base_dir=version.base_dir, cluster=None)
            )
            used = json.loads(version.meta_used) if version.meta_used else None
            spec = self._specs.setdefault(version.id, with_meta(with_images(parsed, images or {}), used))
        return spec

    async def spec_of(self, version) -> ProjectSpec:
        """The spec of a stored version (a ``VersionRow``), images pinned."""
        cached = self._specs.get(version.id)
        if cached is not None:
            return cached
        images = await self.store.call(goal_store.version_images, version.id)
        return await self.spec_for(version, images)

    def cached_spec(self, version_id: str) -> ProjectSpec | None:
        return self._specs.get(version_id)

    async def current_spec(self, project: ProjectRow) -> ProjectSpec | None:
        """The spec of the project's current version, from the cache when it is there (no store
        call); None when the version cannot be read, for the loops that judge every project on
        each round (autoscale, meta watchers) and must go on with the others."""
        if project.current_version is None:
            return None
        cached = self._specs.get(project.current_version)
        if cached is not None:
            return cached
        version = await self.store.call(goal_store.current_version, project)
        try:
            return await self.spec_of(version)
        except ManifestError:
            return None

    async def snapshot(self) -> GoalSnapshot:
        snap = await self.store.call(_read_snapshot, frozenset(self._specs))
        for version_id, (version, images) in snap.manifests.items():
            try:
                await self.spec_for(version, images)
            except ManifestError as exc:
                # Pinned packages make this rare (a version from before 0007, a stricter parser).
                # Its project is left exactly as it runs; the daemon and every other project go on.
                if version_id not in self._unreadable:
                    log.error("stored version cannot be read; its project is left as it is",
                              version=version_id, error=str(exc))
                self._unreadable[version_id] = str(exc)
        return snap

    def has_checks(self, project: ProjectRow) -> bool:
        """Whether the project's current version has a service with health checks: what the
        health monitor asks on every instance change, so kept per version (a version never
        changes) instead of looking at every service each time."""
        version = project.current_version
        if version is None or project.desired == "deleting" or version not in self._specs:
            return False
        if version not in self._with_checks:
            self._with_checks[version] = any(s.healthchecks for s in self._specs[version].services)
        return self._with_checks[version]

    def readable(self, project: ProjectRow) -> bool:
        """Whether the project's current version parsed: planning without it would read as
        'no goal' and remove its instances."""
        return project.current_version in self._specs

    def goal_from(self, project: ProjectRow, service: ServiceRow | None) -> ServiceGoal | None:
        if service is None or project.desired == "deleting" or service.desired == "absent":
            return None
        assert project.current_version is not None  # set in the transaction that adds the project
        if project.current_version in self._unreadable and project.current_version not in self._specs:
            raise TaskFailed(
                f"project '{project.name}': its current version cannot be read "
                f"({self._unreadable[project.current_version]}); update it with a manifest that is valid today"
            )
        spec = self._specs[project.current_version].service(service.name)
        if spec is None:
            return None
        return ServiceGoal(
            project_id=project.id, project_name=project.name, version_id=project.current_version,
            spec=spec, scale=service.scale, desired=service.desired, keep_stale=bool(service.keep_stale),
            replacements=service.replacements, last_replacement_at=service.last_replacement_at,
        )

    async def service_view(self, project_id: str, service: str) -> tuple[ServiceGoal | None, ServiceRow | None, dict]:
        """The service's goal, its row and the instance records, read together."""
        snap = await self.snapshot()
        project = next((p for p in snap.projects if p.id == project_id), None)
        if project is None:
            return None, None, snap.records
        row = next((s for s in snap.services if s.project_id == project_id and s.name == service), None)
        return self.goal_from(project, row), row, snap.records

    async def service_goal(self, project_id: str, service: str) -> ServiceGoal | None:
        return (await self.service_view(project_id, service))[0]
