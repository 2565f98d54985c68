"""The overlay anchor: a tiny container that keeps a project's overlay namespace on the daemon's node.

The health probes reach a Swarm task's address from inside its overlay's network namespace on the
daemon's own node (swarm/netns.py). The Engine makes that namespace only while some container on
this node is attached to the overlay; on a multi-node Swarm a manager with no task of the project
has none, and a service stopped to 0 replicas leaves none either. So, for as long as the project
exists, the daemon keeps one container of its own on the (attachable) overlay on its engine: the
anchor. It runs busybox's ``sleep`` under ``Init`` (docker-init forwards SIGTERM, so it stops at
once), restarts unless stopped, and is capped at a few megabytes.

Its image is made here, once, from the host's static busybox (Debian's busybox-static, which
.ci/setup.sh installs) by importing a two-file tar: no registry, no network. The anchor carries its
own labels (``io.mariposa.anchor=<owner>``, ``io.mariposa.anchor-project=<project id>``) and NOT
``io.mariposa.owner``: the Docker driver lists its instances by the owner label, and an anchor must
never look like one.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

import structlog
import trio

from mariposa.drivers.base import DriverError
from mariposa.swarm.client import SwarmClient, _filters

log = structlog.get_logger()

IMAGE_REPO = "mariposa/anchor"
IMAGE_TAG = "1"
IMAGE = f"{IMAGE_REPO}:{IMAGE_TAG}"
LABEL_ANCHOR = "io.mariposa.anchor"  # the owning daemon's owner name
LABEL_ANCHOR_PROJECT = "io.mariposa.anchor-project"  # the project's id
MEMORY = 8 * 1024 * 1024  # the Engine's floor is 6 MB; sleep needs a few hundred KB
# sleeps in the background and waits, so a TERM (from docker-init) ends it at once
COMMAND = ["/bin/sh", "-c", "trap exit TERM; while :; do sleep 3600 & wait; done"]
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox")


def anchor_name(project_name: str, project_id: str) -> str:
    return f"mariposa-anchor-{project_name}-{project_id[:8]}"


def anchor_labels(owner: str, project_id: str, project_name: str) -> dict[str, str]:
    """The anchor's labels: its own keys, none of the instances' (see the module's docstring)."""
    return {LABEL_ANCHOR: owner, LABEL_ANCHOR_PROJECT: project_id, f"{LABEL_ANCHOR}-project-name": project_name}


def is_static(path: str) -> bool:
    """An ELF executable with no program interpreter (PT_INTERP): it needs no loader nor libc."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only: the hosts Mariposa runs on
            return False
        order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
        phoff, phentsize, phnum = (int.from_bytes(head[32:40], order), int.from_bytes(head[54:56], order),
                                   int.from_bytes(head[56:58], order))
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i:i + 4], order) != 3 for i in range(0, len(table), phentsize))


def find_busybox() -> str:
    """The host's busybox, which must be statically linked: the image holds nothing else."""
    for path in (shutil.which("busybox"), *BUSYBOX_PATHS):
        if path and os.path.isfile(path) and is_static(path):
            return path
    raise DriverError("the Swarm overlay anchor needs a static busybox on the daemon's host "
                      "(Debian: apt-get install busybox-static), and there is none")


def image_tar(busybox: str) -> bytes:
    """A root filesystem of busybox as /bin/busybox, with /bin/sh and /bin/sleep linked to it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("bin")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        with open(busybox, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "sleep"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)
    return buf.getvalue()


async def ensure_image(client: SwarmClient) -> bool:
    """The anchor's image on the engine (made when missing); True when it was made now."""
    resp = await client._call("GET", f"/images/{IMAGE}/json", f"inspect image {IMAGE}", allow=(404,))
    if resp.status_code == 200:
        return False
    t0 = time.perf_counter()
    body = await trio.to_thread.run_sync(lambda: image_tar(find_busybox()))
    await client._call("POST", "/images/create", f"import image {IMAGE}", content=body,
                       params={"fromSrc": "-", "repo": IMAGE_REPO, "tag": IMAGE_TAG,
                               "message": "built by mariposa: the Swarm overlay anchor"},
                       headers={"Content-Type": "application/x-tar"}, timeout=120)
    log.info("built the overlay anchor's image", image=IMAGE, seconds=round(time.perf_counter() - t0, 3))
    return True


def _on_overlay(found: Mapping[str, Any], overlay: str) -> bool:
    return overlay in ((found.get("NetworkSettings") or {}).get("Networks") or {})


async def ensure_anchor(client: SwarmClient, owner: str, project_id: str, project_name: str,
                        overlay: str) -> str:
    """The project's anchor running on the engine, attached to ``overlay``: reused when there,
    started when it exited, made anew when it is someone else's or on another (older) overlay."""
    name = anchor_name(project_name, project_id)
    labels = anchor_labels(owner, project_id, project_name)
    path = f"/containers/{quote(name, safe='')}"
    resp = await client._call("GET", f"{path}/json", f"inspect anchor {name}", allow=(404,))
    make = resp.status_code == 404
    if resp.status_code == 200:
        found = resp.json()
        mine = all(((found.get("Config") or {}).get("Labels") or {}).get(k) == v for k, v in labels.items())
        if not mine:
            raise DriverError(f"a container named {name} exists and is not this daemon's overlay anchor "
                              f"for project {project_name}; remove or rename it")
        if not _on_overlay(found, overlay):
            await client._call("DELETE", path, f"remove anchor {name}", params={"force": "true"}, allow=(404,))
            make = True
    if make:
        await ensure_image(client)
        body = {"Image": IMAGE, "Cmd": COMMAND, "Labels": labels,
                "HostConfig": {"Init": True, "NetworkMode": overlay, "Memory": MEMORY,
                               "RestartPolicy": {"Name": "unless-stopped"}}}
        await client._call("POST", "/containers/create", f"create anchor {name}", params={"name": name},
                           json=body)
    t0 = time.perf_counter()
    started = await client._call("POST", f"{path}/start", f"start anchor {name}", allow=(304,))
    if started.status_code != 304:
        log.info("started the overlay anchor", anchor=name, seconds=round(time.perf_counter() - t0, 3))
    return name


async def remove_anchors(client: SwarmClient, owner: str, project_id: str) -> int:
    """Every anchor of the project on the engine (before its overlay goes: it holds an endpoint)."""
    resp = await client._call("GET", "/containers/json", "list anchors", params={
        "all": "true", **_filters(label=[f"{LABEL_ANCHOR}={owner}", f"{LABEL_ANCHOR_PROJECT}={project_id}"])})
    for c in resp.json():
        await client._call("DELETE", f"/containers/{c['Id']}", f"remove anchor {c['Id'][:12]}",
                           params={"force": "true"}, allow=(404,))
    return len(resp.json())
