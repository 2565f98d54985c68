"""What the drivers that keep their own books on disk (LXC, QEMU) share: an instance is a
directory under the driver's path with a ``mariposa.json`` sidecar of its labels, images come
through ``drivers/rootfs.py``, and the host's tools are called through ``drivers/tools.py``. The
Docker driver has none of this: the Engine keeps its books."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from mariposa.drivers.base import Progress, RegistryAuth
from mariposa.drivers.rootfs import RootfsCache
from mariposa.model import LABEL_OWNER


class OwnBooks:
    """The sidecars and the images of a driver over ``path``, for ``owner``."""

    owner: str
    path: Path
    images: RootfsCache
    RESERVED: frozenset[str] = frozenset({"images", "networks", "volumes", "initrd"})

    def _dir(self, name: str) -> Path:
        return self.path / name

    def _sidecar(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self._dir(name) / "mariposa.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    async def _side(self, name: str) -> dict[str, Any] | None:
        return await trio.to_thread.run_sync(self._sidecar, name)

    def _all_sidecars(self) -> dict[str, dict[str, Any]]:
        """Every instance of this owner under the path (blocking)."""
        out: dict[str, dict[str, Any]] = {}
        try:
            entries = list(self.path.iterdir())
        except FileNotFoundError:
            return out
        for d in entries:
            side = self._sidecar(d.name) if d.name not in self.RESERVED and d.is_dir() else None
            if side is not None and side.get("labels", {}).get(LABEL_OWNER) == self.owner:
                out[d.name] = side
        return out

    async def aclose(self) -> None:
        await self.images.docker.aclose()

    async def resolve_image(self, image: str) -> str:
        return await self.images.resolve(image)

    async def pull(self, image: str, auth: RegistryAuth | None, progress: Progress | None = None) -> None:
        await self.images.pull(image, auth, progress)

    async def login(self, auth: RegistryAuth) -> None:
        await self.images.docker.login(auth)
