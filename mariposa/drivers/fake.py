"""An in-memory driver for unit, property and scale tests: same protocol, no runtime."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import attrs
import trio

from mariposa.drivers.base import DriverError, DriverEvent, ImageNotFound
from mariposa.model import CreateRequest, Instance


class FakeDriver:
    compute_type = "docker"

    def __init__(self, images: tuple[str, ...] = ("busybox",), latency: float = 0.0, crash_images: tuple[str, ...] = ()):
        self.images = set(images)
        self.crash_images = set(crash_images)  # instances of these exit right after start
        self.latency = latency
        self.instances: dict[str, Instance] = {}
        self.networks: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self._counter = itertools.count(1)
        self._send, self._recv = trio.open_memory_channel(10_000)

    async def ping(self) -> None:
        return None

    async def ensure_network(self, project_id: str, project_name: str) -> None:
        self.networks.add(project_id)

    async def remove_network(self, project_id: str) -> None:
        self.networks.discard(project_id)

    async def check_image(self, image: str) -> str:
        if image not in self.images:
            raise ImageNotFound(f"image '{image}' is not on this host")
        return "sha256:" + image.encode().hex()

    async def create(self, req: CreateRequest) -> Instance:
        await self.check_image(req.spec.image)
        await trio.sleep(self.latency)
        self.calls.append(("create", req.instance_id))
        labels = req.labels()
        state = "exited" if req.spec.image in self.crash_images else "running"
        inst = Instance(
            id=req.instance_id, runtime_id=f"fake{next(self._counter):08d}", name=req.name,
            project_id=req.project_id, service=req.spec.name, spec_hash=req.spec.spec_hash,
            version_id=req.version_id, state=state, created=float(labels["io.mariposa.created"]),
            image=req.spec.image, exit_code=1 if state == "exited" else None, address="127.0.0.1",
        )
        self.instances[inst.id] = inst
        self._emit("die" if state == "exited" else "start", inst)
        return inst

    def _get(self, inst: Instance) -> Instance:
        try:
            return self.instances[inst.id]
        except KeyError:
            raise DriverError(f"no such instance {inst.id}") from None

    def _emit(self, action: str, inst: Instance) -> None:
        try:
            self._send.send_nowait(DriverEvent(action, inst.id, inst.project_id, inst.service))
        except trio.WouldBlock:
            pass

    async def start(self, inst: Instance) -> None:
        await trio.sleep(self.latency)
        self.calls.append(("start", inst.id))
        cur = self._get(inst)
        crashed = cur.image in self.crash_images
        self.instances[inst.id] = attrs.evolve(cur, state="exited" if crashed else "running", exit_code=1 if crashed else None)
        if crashed:
            self._emit("die", cur)

    async def stop(self, inst: Instance, timeout: int | None = None) -> None:
        await trio.sleep(self.latency)
        self.calls.append(("stop", inst.id))
        cur = self._get(inst)
        self.instances[inst.id] = attrs.evolve(cur, state="exited", exit_code=0)

    async def remove(self, inst: Instance) -> None:
        await trio.sleep(self.latency)
        self.calls.append(("remove", inst.id))
        gone = self.instances.pop(inst.id, None)
        if gone:
            self._emit("destroy", gone)

    async def inventory(self, project_id: str | None = None) -> list[Instance]:
        return [i for i in self.instances.values() if project_id is None or i.project_id == project_id]

    def kill(self, instance_id: str, exit_code: int = 137) -> None:
        """Test hook: the process died behind our back."""
        inst = self.instances[instance_id]
        self.instances[instance_id] = attrs.evolve(inst, state="exited", exit_code=exit_code)
        self._emit("die", inst)

    async def events(self) -> AsyncIterator[DriverEvent]:
        async for event in self._recv:
            yield event

    async def aclose(self) -> None:
        return None
