"""The Docker compute type on a Swarm (``cluster = "swarm"``): what the daemon sees of it.

Why a driver at all: everything that lists instances (``mariposa get``, the reconciler, DNS, the
health monitor, metrics) reads ``Driver.inventory``; on a Swarm an instance is a Swarm *task*, so
this driver reports tasks as ``Instance``s. What it does not do is make or stop them one by one:
the Swarm owns its tasks (it restarts and reschedules them itself), and Mariposa changes a Swarm
*service* as a whole (``swarm/converge.py``). ``create``/``start``/``stop``/``remove``/``signal``
therefore refuse with a clear ``DriverError`` for a cluster service; only the local containers of
scheduled and event services' runs (``mariposa/runs/``, never placed on the Swarm) go through them,
to the local Docker driver this one wraps.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import structlog
import trio

from mariposa.drivers.base import DriverError, DriverEvent, LogLine, RegistryAuth, RuntimeUnavailable
from mariposa.drivers.docker import DockerDriver, _event_data, _filters
from mariposa.model import (
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_PROJECT_NAME,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    CreateRequest,
    Instance,
    InstanceState,
    InstanceStats,
    PublishedPort,
    VolumeInfo,
)
from mariposa.swarm.anchor import ensure_anchor, remove_anchors
from mariposa.swarm.client import SwarmClient
from mariposa.swarm.netns import SocketFactory, factory, namespace_of
from mariposa.swarm.spec import overlay_name

log = structlog.get_logger()

CANARY = "-canary"  # a canary's Swarm service is its service's name and this
_STATES = {
    "running": InstanceState.RUNNING,
    "complete": InstanceState.EXITED, "failed": InstanceState.EXITED, "rejected": InstanceState.EXITED,
    "shutdown": InstanceState.EXITED, "orphaned": InstanceState.UNKNOWN, "remove": InstanceState.REMOVING,
}
_FAILED = ("failed", "rejected")
TASK_ID = "com.docker.swarm.task.id"
ANCHOR_RETRY = 30.0  # s between a probe's attempts to make a missing overlay anchor


def parse_time(text: str | None) -> float:
    """The Engine's RFC 3339 times carry nanoseconds; Python reads microseconds."""
    if not text:
        return 0.0
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def task_state(task: Mapping[str, Any]) -> tuple[InstanceState, int | None]:
    """A task's state in Mariposa's vocabulary, and its exit code when it has ended."""
    status = task.get("Status") or {}
    state = status.get("State") or ""
    mapped = _STATES.get(state, InstanceState.CREATING)  # new ... starting: made, not running yet
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if state == "complete":
        return mapped, 0
    if state in _FAILED:
        return mapped, int(code) if code is not None else 1
    return mapped, None


def reported(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks shown as instances: those meant to run, and, per slot that has no running one,
    the newest failed one (so an exit is seen). Shut-down history is the Swarm's own."""
    out = [t for t in tasks if t.get("DesiredState") == "running"]
    up = {(t.get("ServiceID"), t.get("Slot")) for t in out if (t.get("Status") or {}).get("State") == "running"}
    newest: dict[tuple, dict[str, Any]] = {}
    for t in tasks:
        if t.get("DesiredState") == "running" or (t.get("Status") or {}).get("State") not in _FAILED:
            continue
        key = (t.get("ServiceID"), t.get("Slot"))
        if key in up:
            continue
        if key not in newest or parse_time(t.get("CreatedAt")) > parse_time(newest[key].get("CreatedAt")):
            newest[key] = t
    return out + list(newest.values())


def task_instance(task: Mapping[str, Any], service: Mapping[str, Any]) -> Instance:
    """One task as an ``Instance``: identity from its service's labels (its spec hash and version
    from its own container labels: a canary's tasks and the old ones differ), the address on the
    project's overlay, the host ports it published."""
    labels = (service.get("Spec") or {}).get("Labels") or {}
    own = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
    project_id, project_name = labels.get(LABEL_PROJECT, ""), labels.get(LABEL_PROJECT_NAME, "")
    status = task.get("Status") or {}
    state, code = task_state(task)
    address = None
    overlay = overlay_name(project_name, project_id)
    for attachment in task.get("NetworksAttachments") or ():
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == overlay:
            addresses = attachment.get("Addresses") or []
            address = addresses[0].split("/")[0] if addresses else None
    ports = tuple(
        PublishedPort(container=int(p.get("TargetPort", 0)), protocol=p.get("Protocol", "tcp"), host_ip="",
                      host_port=int(p["PublishedPort"]))
        for p in (status.get("PortStatus") or {}).get("Ports") or () if p.get("PublishedPort"))
    name = (service.get("Spec") or {}).get("Name", "")
    suffix = CANARY if name.endswith(CANARY) else ""
    container = (status.get("ContainerStatus") or {}).get("ContainerID")
    return Instance(
        id=task["ID"], runtime_id=container or task["ID"],
        name=f"{project_name}-{labels.get(LABEL_SERVICE, '')}{suffix}.{task.get('Slot') or task['ID'][:8]}",
        project_id=project_id, service=labels.get(LABEL_SERVICE, ""),
        spec_hash=own.get(LABEL_SPEC_HASH) or labels.get(LABEL_SPEC_HASH, ""),
        version_id=own.get(LABEL_VERSION) or labels.get(LABEL_VERSION, ""), state=state,
        created=parse_time(task.get("CreatedAt")), image=labels.get("io.mariposa.image", ""), exit_code=code,
        address=address if state == InstanceState.RUNNING else None, ports=ports, compute_type="docker",
        project_name=project_name)


class SwarmDriver:
    """Docker services on the Swarm this engine manages; runs' containers on the local engine."""

    compute_type = "docker"

    def __init__(self, owner: str, local: DockerDriver, docker_host: str | None = None) -> None:
        self.owner = owner
        self.local = local
        self.client = SwarmClient(docker_host)
        self.where = self.client.where
        self._nodes: dict[str, str] = {}  # task id -> node id, from the last listing
        self._node_id: str | None = None
        self._network_lock = trio.Lock()
        self._overlays: dict[str, str] = {}  # overlay name -> network id, for probes
        self._anchored: dict[str, float] = {}  # overlay name -> when probe_sockets last ensured its anchor
        self.node_changed = trio.Event()  # set on a `node` event: swarm/moves.py looks at once

    # ---- what the Swarm runs -------------------------------------------------------------------

    def _labels(self, project_id: str | None) -> dict[str, str]:
        return {LABEL_OWNER: self.owner, **({LABEL_PROJECT: project_id} if project_id else {})}

    async def services(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """This owner's Swarm services (of one project)."""
        return await self.client.services(self._labels(project_id))

    async def observe(self, project_id: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(services, every task of them): what the Swarm has, read in two calls."""
        services = await self.services(project_id)
        tasks = await self.client.tasks(labels=self._labels(project_id)) if services else []
        return services, tasks

    async def inventory(self, project_id: str | None = None) -> list[Instance]:
        services, tasks = await self.observe(project_id)
        by_id = {s["ID"]: s for s in services}
        out = []
        for task in reported([t for t in tasks if t.get("ServiceID") in by_id]):
            self._nodes[task["ID"]] = task.get("NodeID", "")
            out.append(task_instance(task, by_id[task["ServiceID"]]))
        runs = [i for i in await self.local.inventory(project_id) if i.run_id]
        return out + runs

    def events(self, since: str | None = None) -> AsyncIterator[DriverEvent]:
        """Service, task-container and node events, as wake-ups (the base protocol's cursor:
        the Engine's timeNano of the last delivered event; ones at that very nanosecond are
        replayed, which only wakes the daemon once more). The local runs' containers' events
        come through the same stream: they carry the owner label."""
        floor = time.time_ns() if since is None else int(since)
        return self._events(floor)

    async def _events(self, floor: int) -> AsyncIterator[DriverEvent]:
        params = _filters(type=["service", "container", "node"])
        params["since"] = f"{floor // 10**9}.{floor % 10**9:09d}"
        async with self.local._streaming("GET", "/events", "events", params=params, timeout=None) as resp:
            async for line in resp.aiter_lines():
                data = _event_data(line)
                if data is None:
                    continue
                event = self._event(data)
                if event is not None:
                    yield event
        raise RuntimeUnavailable(f"Docker Engine at {self.where} closed the event stream")

    def _event(self, data: Mapping[str, Any]) -> DriverEvent | None:
        attributes = (data.get("Actor") or {}).get("Attributes") or {}
        kind = data.get("Type")
        if kind == "container" and not (TASK_ID in attributes and LABEL_PROJECT in attributes) and \
                attributes.get(LABEL_OWNER) != self.owner:
            return None  # neither a Mariposa task's container nor one of this owner's runs
        if kind == "service" and not str(attributes.get("name", "")).startswith("mariposa-"):
            return None
        if kind == "node":
            self.node_changed.set()
        stamp = data.get("timeNano")
        action = (data.get("Action") or data.get("status") or "").split(":", 1)[0]
        code = attributes.get("exitCode")
        return DriverEvent(
            action=action if kind == "container" else f"{kind}_{action}",
            instance_id=attributes.get(TASK_ID) or attributes.get("io.mariposa.instance"),
            project_id=attributes.get(LABEL_PROJECT), service=attributes.get(LABEL_SERVICE),
            exit_code=int(code) if code is not None and str(code).lstrip("-").isdigit() else None,
            cursor=str(stamp) if isinstance(stamp, int) else None,
            time=stamp / 1e9 if isinstance(stamp, int) else None)

    # ---- networks ------------------------------------------------------------------------------

    async def ensure_network(self, project_id: str, project_name: str) -> None:
        """The project's overlay. Its services' tasks converge side by side: one at a time looks
        and makes (the Engine refuses a second network of a name being made: "name conflicts"),
        and a conflict with someone else's making of it is looked at again once."""
        labels = {LABEL_OWNER: self.owner, LABEL_PROJECT: project_id, LABEL_PROJECT_NAME: project_name}
        overlay = overlay_name(project_name, project_id)
        async with self._network_lock:
            try:
                self._overlays[overlay] = await self.client.ensure_overlay(overlay, labels)
            except DriverError as exc:
                if "conflict" not in str(exc):
                    raise
                await trio.sleep(0.5)
                self._overlays[overlay] = await self.client.ensure_overlay(overlay, labels)
            # the overlay's namespace on this node, for the health probes (swarm/anchor.py)
            await ensure_anchor(self.client, self.owner, project_id, project_name, overlay)
        await self.local.ensure_network(project_id, project_name)  # runs' containers

    async def remove_anchors(self, project_id: str) -> int:
        """The project's overlay anchors on this engine (they hold an endpoint on the overlay)."""
        return await remove_anchors(self.client, self.owner, project_id)

    async def remove_network(self, project_id: str, project_name: str = "") -> list[str]:
        await self.remove_anchors(project_id)
        with trio.move_on_after(30):  # a task's endpoint lingers a moment after its service went
            while networks := await self.client.networks(self._labels(project_id)):
                for net in networks:
                    try:
                        await self.client.remove_network(net["Id"])
                    except DriverError:
                        await trio.sleep(0.3)
        return await self.local.remove_network(project_id, project_name)

    async def network_exists(self, name: str) -> bool:
        return await self.local.network_exists(name)

    # ---- the rest is the local engine's --------------------------------------------------------

    async def ping(self) -> None:
        await self.local.ping()

    async def volumes(self, project_name: str) -> list[VolumeInfo]:
        return await self.local.volumes(project_name)

    async def remove_volume(self, project_name: str, volume: str) -> None:
        await self.local.remove_volume(project_name, volume)

    async def resolve_image(self, image: str) -> str:
        return await self.local.resolve_image(image)

    async def pull(self, image: str, auth: RegistryAuth | None, progress=None) -> None:
        await self.local.pull(image, auth, progress)

    async def login(self, auth: RegistryAuth) -> None:
        await self.local.login(auth)

    # ---- one instance at a time: runs only -----------------------------------------------------

    @staticmethod
    def _refuse(what: str, name: str) -> DriverError:
        return DriverError(f"{what} {name}: a Swarm task is not made, started or stopped one by one; Mariposa "
                           f"changes its Swarm service (cluster = \"swarm\")")

    async def create(self, req: CreateRequest) -> Instance:
        if req.run_id:
            return await self.local.create(req)
        raise self._refuse("create", req.name)

    async def start(self, inst: Instance) -> None:
        if not inst.run_id:
            raise self._refuse("start", inst.name)
        await self.local.start(inst)

    async def stop(self, inst: Instance, timeout: int | None = None) -> None:
        if not inst.run_id:
            raise self._refuse("stop", inst.name)
        await self.local.stop(inst, timeout)

    async def remove(self, inst: Instance) -> None:
        if not inst.run_id:
            raise self._refuse("remove", inst.name)
        await self.local.remove(inst)

    async def signal(self, inst: Instance, name: str) -> None:
        if not inst.run_id:
            raise self._refuse("signal", inst.name)
        await self.local.signal(inst, name)

    # ---- a task's container, when it is on this node -------------------------------------------

    async def _here(self, inst: Instance) -> Instance:
        if inst.run_id:
            return inst
        if self._node_id is None:
            self._node_id = ((await self.client.info()).get("Swarm") or {}).get("NodeID") or ""
        node = self._nodes.get(inst.id)
        if inst.runtime_id == inst.id or (node and node != self._node_id):
            raise DriverError(f"{inst.name} runs on Swarm node {node[:12] if node else '(none yet)'}, not on this "
                              f"one: its container is reachable from that node's engine only")
        return inst

    async def exec(self, inst: Instance, argv: list[str], timeout: float, user: str | None = None) -> tuple[int, bytes]:
        return await self.local.exec(await self._here(inst), argv, timeout, user)

    async def address(self, inst: Instance) -> str | None:
        return inst.address

    async def logs(self, inst: Instance, since: float | None = None, tail: int | None = None,
                   follow: bool = False) -> AsyncGenerator[LogLine, None]:
        here = await self._here(inst)
        async for line in self.local.logs(here, since, tail, follow):
            yield line

    async def stats(self, inst: Instance) -> InstanceStats | None:
        try:
            here = await self._here(inst)
        except DriverError:
            return None
        return await self.local.stats(here)

    async def probe_sockets(self, inst: Instance) -> SocketFactory | None:
        """For the health monitor: how to make a probe's socket for a task (inside its project's
        overlay, swarm/netns.py); None for a run's local container (the host reaches it)."""
        if inst.run_id:
            return None
        overlay = overlay_name(inst.project_name, inst.project_id)
        network_id = self._overlays.get(overlay)
        if network_id is None:
            found = [n for n in await self.client.networks(self._labels(inst.project_id)) if n.get("Name") == overlay]
            if not found:
                raise DriverError(f"{inst.name}: the project's overlay {overlay} is gone")
            network_id = self._overlays[overlay] = found[0]["Id"]
        path = namespace_of(network_id)
        # no task and no anchor here (one removed, or a project made before anchors): make it, at
        # most every ANCHOR_RETRY s per overlay (a daemon off the Swarm's nodes never sees it)
        if not os.path.exists(path) and time.monotonic() - self._anchored.get(overlay, -ANCHOR_RETRY) >= ANCHOR_RETRY:
            self._anchored[overlay] = time.monotonic()
            async with self._network_lock:
                await ensure_anchor(self.client, self.owner, inst.project_id, inst.project_name, overlay)
            with trio.move_on_after(5):
                while not os.path.exists(path):
                    await trio.sleep(0.1)
        return factory(path)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.local.aclose()


def is_canary(name: str) -> bool:
    return name.endswith(CANARY)


