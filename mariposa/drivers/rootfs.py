"""Root filesystems for the drivers that run an image's files themselves (LXC, QEMU): an image
reference resolved to what a version pins, and its filesystem made once per content id into a
cache directory that instances then use read-only (an overlay's lower dir, a VM's base disk).

``image:`` may be ``template:NAME`` (an LXC template that needs no network), a rootfs directory or
tarball path, or a Docker image, whose filesystem comes through the Engine (``docker create`` +
``docker export``, the stream fed to ``tar -x``): that is how users bring their own OS images, and
why the cache is keyed by the Docker content id, or the tarball's sha256, the same ids a version
pins for Docker.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import trio

from mariposa.drivers.base import DriverError, ImageNotFound, Progress, RegistryAuth, RuntimeUnavailable
from mariposa.drivers.docker import DockerDriver
from mariposa.model import LABEL_OWNER


def safe_id(content_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", content_id)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _untar(path: Path, into: Path) -> None:
    with tarfile.open(path) as tar:
        if hasattr(tarfile, "tar_filter"):  # Python 3.11.4 and later (Debian 12 has 3.11.2)
            tar.extractall(into, filter="tar")
        else:
            tar.extractall(into)  # noqa: S202 - a rootfs the operator named, owners and modes kept


async def _run(*argv: str, what: str) -> None:
    try:
        done = await trio.run_process(list(argv), capture_stdout=True, capture_stderr=True, check=False)
    except FileNotFoundError:
        raise RuntimeUnavailable(f"{argv[0]} not found") from None
    if done.returncode != 0:
        out = (done.stdout + done.stderr).decode(errors="replace").strip()
        raise DriverError(f"{what}: {out or f'exit {done.returncode}'}")


def passwd_lookup(roots: list[Path], user: str) -> tuple[int, int]:
    """NAME, UID or UID:GID as (uid, gid), names looked up in the container's /etc/passwd."""
    name, _, group = user.partition(":")
    entries: dict[str, tuple[int, int]] = {}
    for root in roots:
        try:
            for line in (root / "etc/passwd").read_text().splitlines():
                parts = line.split(":")
                if len(parts) >= 4 and parts[0] not in entries and parts[2].isdigit() and parts[3].isdigit():
                    entries[parts[0]] = (int(parts[2]), int(parts[3]))
        except OSError:
            continue
    if name.isdigit():
        uid = int(name)
        gid = next((g for u, g in entries.values() if u == uid), uid)
    elif name in entries:
        uid, gid = entries[name]
    else:
        raise DriverError(f"user {name!r} is not in the image's /etc/passwd")
    if group:
        if not group.isdigit():
            raise DriverError(f"group {group!r} must be a number")
        gid = int(group)
    return uid, gid


class RootfsCache:
    """The cache under ``path``: ``ID/rootfs`` (never written once made) and ``ID/image``."""

    def __init__(self, owner: str, path: Path, docker_host: str | None = None) -> None:
        self.owner = owner
        self.path = path
        # Registry images come through Docker: pulled and resolved there, exported once per id.
        self.docker = DockerDriver(owner, docker_host)
        self._locks: dict[str, trio.Lock] = {}

    async def resolve(self, image: str) -> str:
        """``template:NAME``, a rootfs directory or tarball path, or a Docker image (its id)."""
        if image.startswith("template:"):
            template = image.split(":", 1)[1]
            if not await trio.Path(f"/usr/share/lxc/templates/lxc-{template}").exists():
                raise ImageNotFound(f"LXC template '{template}' is not on this host (image '{image}')")
            return image
        if image.startswith("/"):
            path = Path(image)
            if await trio.Path(path).is_dir():
                return f"dir:{path}"
            if await trio.Path(path).is_file():
                digest = await trio.to_thread.run_sync(sha256_of, path)
                return f"sha256:{digest}"
            raise ImageNotFound(f"image '{image}' is not on this host (no such rootfs directory or tarball)")
        return await self.docker.resolve_image(image)

    async def content_id(self, image: str, pinned: str | None) -> str:
        """What an instance of a version is made from: the pinned id. A local rootfs or template was
        pinned as ``dir:PATH``, ``sha256:HEX`` of the tarball or ``template:NAME``, which Docker
        does not know: those are checked on the host (a tarball only when its base is not cached
        yet, and refused when its content changed since the version was made)."""
        if not image.startswith(("/", "template:")):
            return await self.resolve(pinned or image)
        if pinned and await trio.Path(self.path / safe_id(pinned) / "rootfs").is_dir():
            return pinned
        found = await self.resolve(image)
        if pinned and found != pinned:
            raise ImageNotFound(f"image '{image}' changed since the version was made (pinned {pinned}, now "
                                f"{found}): update the project to pin it anew")
        return found

    async def pull(self, image: str, auth: RegistryAuth | None, progress: Progress | None = None) -> None:
        """A registry image comes through Docker's pull; its filesystem is exported at first use."""
        if image.startswith(("template:", "/")):
            await self.resolve(image)  # nothing to fetch: it is here or it is not
            return
        await self.docker.pull(image, auth, progress)

    async def rootfs(self, image: str, content_id: str) -> Path:
        """The cached base rootfs of ``content_id``, made once (under a lock, into a temporary
        directory renamed into place, so a crash half way leaves no half base)."""
        root = self.path / safe_id(content_id)
        lock = self._locks.setdefault(content_id, trio.Lock())
        async with lock:
            if await trio.Path(root / "rootfs").is_dir():
                return root / "rootfs"
            tmp = self.path / f".tmp-{safe_id(content_id)}-{os.getpid()}"
            await trio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))
            (tmp / "rootfs").mkdir(parents=True)
            try:
                if content_id.startswith("template:"):
                    await self._from_template(content_id.split(":", 1)[1], tmp)
                elif content_id.startswith("dir:"):
                    await _run("cp", "-a", f"{image}/.", str(tmp / "rootfs"), what=f"copy rootfs {image}")
                elif image.startswith("/"):
                    await trio.to_thread.run_sync(_untar, Path(image), tmp / "rootfs")
                else:
                    await self._export(content_id, tmp / "rootfs")
                (tmp / "image").write_text(json.dumps({"image": image, "id": content_id}))
                os.replace(tmp, root)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))
                raise
            return root / "rootfs"

    async def _export(self, content_id: str, into: Path) -> None:
        """``docker create`` + ``docker export`` through the Engine API (the daemon's own
        ``docker_host``, no docker CLI needed), the tar stream fed to ``tar -x`` as it comes: the
        image's filesystem, once per content id. The container is never started."""
        docker = self.docker
        body = {"Image": content_id, "Cmd": ["true"], "Labels": {LABEL_OWNER: self.owner}}
        try:
            resp = await docker._call("POST", "/containers/create", f"create a container of {content_id} to export",
                                      json=body)
        except ImageNotFound:
            raise ImageNotFound(f"image '{content_id}' is not on this host") from None
        cid = resp.json()["Id"]
        try:
            async with docker._streaming("GET", f"/containers/{cid}/export", f"export {content_id}",
                                         timeout=None) as stream:
                tar = await trio.lowlevel.open_process(["tar", "-x", "-C", str(into)], stdin=subprocess.PIPE,
                                                       stderr=subprocess.PIPE)
                problem = bytearray()

                async def complaints() -> None:  # read as it comes, so tar never blocks on a full pipe
                    assert tar.stderr is not None
                    while chunk := await tar.stderr.receive_some(65536):
                        problem.extend(chunk[: max(0, 4096 - len(problem))])

                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(complaints)
                        assert tar.stdin is not None
                        async for chunk in stream.aiter_bytes():
                            await tar.stdin.send_all(chunk)
                        await tar.stdin.aclose()
                        await tar.wait()
                finally:
                    if tar.returncode is None:
                        tar.kill()
                        with trio.CancelScope(shield=True):
                            await tar.wait()
            if tar.returncode != 0:
                raise DriverError(f"export {content_id}: tar: {problem.decode(errors='replace').strip()}")
        finally:
            with trio.CancelScope(shield=True):
                await docker._call("DELETE", f"/containers/{cid}", f"remove export container {cid[:12]}",
                                   params={"force": "true"}, allow=(404, 409))

    async def _from_template(self, template: str, into: Path) -> None:
        """``lxc-create -t NAME`` into a scratch path, its rootfs moved to the cache."""
        scratch = into / "scratch"
        scratch.mkdir()
        await _run("lxc-create", "-P", str(scratch), "-n", "base", "-t", template,
                        what=f"lxc-create -t {template}")
        os.rmdir(into / "rootfs")
        os.replace(scratch / "base" / "rootfs", into / "rootfs")
        await trio.to_thread.run_sync(lambda: shutil.rmtree(scratch, ignore_errors=True))
