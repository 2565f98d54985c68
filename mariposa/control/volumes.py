"""A project's named volumes: its data, kept through every rollout, scale to 0 and `project
delete` (unless --purge-volumes), so what removes it is always a deliberate act by someone."""

from __future__ import annotations

from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.errors import NotFound
from mariposa.model import LABEL_OWNER, LABEL_PROJECT_NAME, LABEL_VOLUME, VolumeInfo
from mariposa.store import events as event_store

_OURS = (LABEL_OWNER, LABEL_PROJECT_NAME, LABEL_VOLUME)


def volume_json(v: VolumeInfo) -> dict:
    return {"name": v.name, "runtime_name": v.runtime_name, "size": v.size, "used_by": list(v.used_by),
            "labels": {k: val for k, val in v.labels if k not in _OURS}}


class Volumes(Area):
    async def rows(self, project_name: str) -> list[VolumeInfo]:
        found: list[VolumeInfo] = []
        for driver in self.ctx.drivers.values():
            found.extend(await driver.volumes(project_name))
        return found

    @operation("volume.list", target="project")
    async def list(self, caller: Caller, project: str) -> list[dict]:
        p = await self._project(project)
        return [volume_json(v) for v in await self.rows(p.name)]

    @operation("volume.remove", target="project")
    async def remove(self, caller: Caller, project: str, name: str) -> dict:
        """Remove one named volume and its data; refused while an instance mounts it."""
        p = await self._project(project)
        for driver in self.ctx.drivers.values():
            if any(v.name == name for v in await driver.volumes(p.name)):
                await driver.remove_volume(p.name, name)
                await self.ctx.store.call(lambda db: event_store.record(
                    db, "volume.remove", f"volume {name} of project {p.name} removed", project_id=p.id,
                    author=caller.author))
                return {"removed": name}
        raise NotFound(f"project '{p.name}' has no volume '{name}'")
