"""Templates rendered when they are used, never stored expanded (manifest/interpolate.py).

An instance's environment, command, entrypoint and tags are rendered as it is made, from the
project's meta of that moment and what is known of the instance (its name, its id, this host);
health-check paths and commands each time the monitor lists what to check. A meta key removed
since the version was made fails the create with the key's name: never an empty string.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import sqlite_utils

from mariposa.errors import TaskFailed
from mariposa.manifest import interpolate
from mariposa.model import HealthCheck, ServiceSpec
from mariposa.store import meta as meta_store

if TYPE_CHECKING:
    from mariposa.converge.goals import ServiceGoal
    from mariposa.store.db import Store

MIB = 1024 * 1024


@functools.cache
def machine_id() -> str:
    """``.placement.cn.uuid``: the host's /etc/machine-id, as systemd defines it (read once)."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return "unknown"


def templated(spec: ServiceSpec) -> bool:
    """Whether any field rendered at create time holds a template (else nothing to do)."""
    words = [v for _, v in spec.environment] + [v for _, v in spec.tags]
    words += list(spec.command or ()) + list(spec.entrypoint or ())
    return any("{{" in w for w in words)


def checks_templated(checks: tuple[HealthCheck, ...]) -> bool:
    return any("{{" in (c.path or "") or any("{{" in w for w in c.command or ()) for c in checks)


def variables(*, project_name: str, project_id: str, version_id: str, service_id: str | None, spec: ServiceSpec,
              scale: int, instance_id: str, instance_name: str) -> dict[str, str]:
    """Every variable but meta, flat ("project.name": ...), for one instance."""
    return {
        "project.name": project_name, "project.uuid": project_id, "project.version": version_id,
        "service.name": spec.name, "service.uuid": service_id or "", "service.version": version_id,
        "package.name": spec.package or "none", "package.family": "mariposa",
        "package.ram": str((spec.memory or 0) // MIB), "package.cpu": f"{spec.cpus or 0:g}", "package.disk": "0",
        "scale": str(scale),
        "placement.instance.name": instance_name, "placement.instance.uuid": instance_id,
        "placement.cn.uuid": machine_id(),
        # the names Docker's DNS answers on the project network (drivers/docker.py sets them as aliases)
        "cns.svc.private": spec.name, "cns.inst.private": instance_name,
    }


def _rendered(spec: ServiceSpec, lookup: Callable[[tuple[str, ...]], str | None]) -> ServiceSpec:
    def one(text: str) -> str:
        return interpolate.render(text, lookup) if "{{" in text else text

    return attrs.evolve(
        spec,
        environment=tuple((k, one(v)) for k, v in spec.environment),
        tags=tuple((k, one(v)) for k, v in spec.tags),
        command=None if spec.command is None else tuple(one(w) for w in spec.command),
        entrypoint=None if spec.entrypoint is None else tuple(one(w) for w in spec.entrypoint),
    )


def env_secrets(spec: ServiceSpec) -> list[str]:
    """The secrets the service's environment names (secret_env: true)."""
    found = {interpolate.secret_of(v.path) for _, text in spec.environment if "{{" in text
             for v in interpolate.variables(text)}
    return sorted(name for name in found if name is not None)


def render_spec(spec: ServiceSpec, values: Mapping[str, str], meta: Mapping[str, str | None],
                secrets: Mapping[str, str] | None = None) -> ServiceSpec:
    """The spec an instance is made with. Undefined (a key removed since) is a TaskFailed that
    names the variable, never a value."""
    try:
        return _rendered(spec, interpolate.lookup_in(values, meta, secrets))
    except interpolate.Undefined as exc:
        name = exc.args[0]
        raise TaskFailed(f"service {spec.name} uses {{{{ {name} }}}}, which is not set any more: set it again "
                         f"(mariposa meta set, secret set) or update the project without it") from None


def render_checks(checks: tuple[HealthCheck, ...], values: Mapping[str, str],
                  meta: Mapping[str, str | None]) -> tuple[HealthCheck, ...] | None:
    """Health checks with their path and command rendered; None if a key is not set any more
    (the monitor leaves the instance unwatched rather than probe a wrong path)."""
    lookup = interpolate.lookup_in(values, meta)

    def one(text: str) -> str:
        return interpolate.render(text, lookup) if "{{" in text else text

    try:
        return tuple(attrs.evolve(c, path=None if c.path is None else one(c.path),
                                  command=None if c.command is None else tuple(one(w) for w in c.command))
                     for c in checks)
    except interpolate.Undefined:
        return None


def read_for_create(db: sqlite_utils.Database, project_id: str, service: str) -> tuple[dict, str | None]:
    """The project's meta and the service's id, in one store call."""
    row = db.execute("SELECT id FROM services WHERE project_id = ? AND name = ?", [project_id, service]).fetchone()
    return meta_store.values(db, project_id), row[0] if row else None


async def for_instance(store: Store, goal: ServiceGoal, instance_id: str, instance_name: str) -> tuple[dict, dict]:
    """The project's meta and the template variables of one instance of the goal's service: what
    its templates and its mdata files are rendered with, read once for both."""
    meta, service_id = await store.call(read_for_create, goal.project_id, goal.spec.name)
    return meta, variables(project_name=goal.project_name, project_id=goal.project_id, version_id=goal.version_id,
                           service_id=service_id, spec=goal.spec, scale=goal.scale, instance_id=instance_id,
                           instance_name=instance_name)
