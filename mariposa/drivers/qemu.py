"""The QEMU driver: virtual machines (``compute_type: kvm | vm | hvm``), KVM where the host's KVM
boots a kernel, software emulation (TCG) where it does not.

Each instance is one ``qemu-system-x86_64`` process, started with ``-daemonize`` (QEMU forks, and
its parent exits once the VM is set up, reporting any error), so it is in a session of its own
and a daemon SIGKILL never takes VMs with it. What the driver knows lives on disk under its path
(``/var/lib/mariposa/qemu`` by default), so a new driver object rebuilds the same inventory:

- ``NAME/mariposa.json``: the sidecar (labels, address, tap, network, volumes, stop timeout).
- ``NAME/root.qcow2``: the root disk, a qcow2 overlay over the image's raw ext4 base
  (``images/ID/disk.raw``, made once per content id from the image's files, never written).
- ``NAME/config.img``: the config disk our init reads (mariposa/vm/): command, environment, user,
  working directory, the volumes to mount, secrets and mdata files as they were at create.
- ``NAME/qemu.pid``, ``NAME/qmp.sock`` (QMP), ``NAME/ctl.sock`` (the control channel to our init:
  signals and exec), ``NAME/log/out`` (the serial console, appended across boots, stamped by
  ``log/index`` as LXC's output is) and ``NAME/boot`` (where in the log the last boot began).
- ``events.log``: the event journal (drivers/journal.py). The driver appends create, start,
  stop and destroy; a watcher appends ``die`` when a VM's process is gone, with the exit code our
  init printed (``MARIPOSA EXIT N``), or 137 when the process was killed before it could.

Networks: a tap (``mvm`` + 12 hex of the instance id) on the project's bridge (mariposa/bridges.py,
shared with Docker and LXC), an address from the upper half of the subnet given on the kernel
command line, and the project's DNS responder as the VM's name server.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal as signals
import stat
import tarfile
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio

from mariposa.bridges import Bridges, gateway, mac_for, prefix, project_network
from mariposa.drivers import kernelstats
from mariposa.drivers.base import (
    DriverError,
    DriverEvent,
    ImageNotFound,
    LogLine,
    RuntimeUnavailable,
    VolumeInUse,
    identity_from_labels,
)
from mariposa.drivers.books import OwnBooks
from mariposa.drivers.journal import Journal, read_log
from mariposa.drivers.rootfs import RootfsCache, passwd_lookup, sha256_of
from mariposa.drivers.tools import run_tool, write_file
from mariposa.manifest.vm import is_disk_image
from mariposa.model import (
    LABEL_INSTANCE,
    LABEL_NETWORK,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_PROJECT_NAME,
    LABEL_VOLUME,
    CreateRequest,
    Instance,
    InstanceState,
    InstanceStats,
    VolumeInfo,
    volume_name,
)
from mariposa.vm import accel as accelerators
from mariposa.vm import console, dhcp, disks, guest_agent, initramfs, kernel

log = structlog.get_logger()

DEFAULT_PATH = "/var/lib/mariposa/qemu"
DEFAULT_STOP_TIMEOUT = 10
BOOT_TIMEOUT = {"tcg": 60.0, "kvm": 20.0}
WATCH = 0.5  # how often the watcher looks for VMs whose process is gone
READY, EXIT = "MARIPOSA READY", "MARIPOSA EXIT"


def tap_name(instance_id: str, index: int = 0) -> str:
    """The tap of a VM's network ``index`` (0: its project's), 15 bytes as an interface name allows."""
    return f"mv{index}{instance_id[:12]}"


def _mac(address: str | None, instance_id: str, index: int) -> str:
    """Derived from the address (bridges.mac_for, 02:4d: a prefix of our own); on a network without
    addresses (a bridge made outside Mariposa), from the instance."""
    if address is None:
        return f"02:4e:{index:02x}:" + ":".join(instance_id[i:i + 2] for i in range(0, 6, 2))
    return mac_for(address, "02:4d")




def _pid_of(home: Path) -> int | None:
    """The VM's process, if it is alive: its pid file names it, it is no zombie, and its command
    line names this instance's directory (a pid used again by another process is not ours)."""
    try:
        pid = int((home / "qemu.pid").read_text().strip())
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        if stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] in (b"Z", b"X"):
            return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if os.fsencode(str(home)) not in f.read():
                return None
        return pid
    except (OSError, ValueError):
        return None


def _vm_reading(home: Path, taps: list[str], memory: int, cpus: float) -> InstanceStats | None:
    """The QEMU process's CPU and resident memory and its taps' bytes (see ``QemuDriver.stats``);
    None when it is not running or is paused. Blocking."""
    pid = _pid_of(home)
    if pid is None or (home / "paused").exists():
        return None
    got = kernelstats.read_process(pid)
    if got is kernelstats.GONE or not isinstance(got, tuple):
        return None
    rx = tx = 0
    for tap in taps:
        counters = kernelstats.read_iface(tap)
        if counters is not None:  # the host's side of a tap receives what the guest sends
            tx += counters[0]
            rx += counters[1]
    return InstanceStats(when=time.time(), cpu_ns=got[0], memory=got[1], memory_limit=memory, cpu_limit=cpus,
                         net_rx=rx, net_tx=tx)


def _sent_a_frame(tap: str) -> bool:
    """Whether the guest behind ``tap`` has sent anything yet (what the host's side of a tap
    receives is what the guest sent): a guest of its own is up once its network is."""
    try:
        return int(Path(f"/sys/class/net/{tap}/statistics/rx_packets").read_text()) > 0
    except (OSError, ValueError):
        return False


def _console_since(home: Path) -> str:
    """The console output of the last boot."""
    try:
        offset = int((home / "boot").read_text().strip() or 0)
        with open(home / "log" / "out", "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except (OSError, ValueError):
        return ""


def _exit_code(home: Path, own_os: bool = False) -> int:
    """What our init printed when the command ended in the last boot; 137 (killed) without it.
    A VM that boots its own OS has no such line: QEMU removes its pid file when it ends cleanly
    (the guest powered off, or ``quit``), which is 0; a pid file left behind is a kill, 137."""
    if own_os:
        return 137 if (home / "qemu.pid").exists() else 0
    for line in reversed(_console_since(home).splitlines()):
        if line.strip().startswith(EXIT):
            try:
                return int(line.strip().split()[2])
            except (IndexError, ValueError):
                break
    return 137


class QemuDriver(OwnBooks):
    """Driver protocol over QEMU; see the module docstring for the layout on disk."""

    compute_type = "kvm"  # what the manifest's kvm, vm and hvm mean

    def __init__(self, owner: str, path: str | os.PathLike[str] | None = None, docker_host: str | None = None,
                 bridges: Bridges | None = None, kernel_dir: str | os.PathLike[str] | None = None,
                 accel: str = "auto", run_dir: str | os.PathLike[str] | None = None) -> None:
        if not owner:
            raise ValueError("owner must not be empty: it is what keeps daemons apart")
        self.owner = owner
        self.path = Path(path or os.environ.get("MARIPOSA_QEMU_PATH") or DEFAULT_PATH)
        self.images = RootfsCache(owner, self.path / "images", docker_host)
        self.journal = Journal(self.path, "qemu", tick=self._reap_all, poll=WATCH)
        self.bridges = bridges or Bridges(self.path / "networks")
        self.bridges.add_user(self._members)
        self.kernel_dir = Path(kernel_dir) if kernel_dir else None
        self.run_dir = Path(run_dir or "/run/mariposa/qemu")
        self.accel = accel  # auto | kvm | tcg: the configuration's default; a service's own wins
        self._disk_locks: dict[str, trio.Lock] = {}
        self._control_locks: dict[str, trio.Lock] = {}
        self._initrd: Path | None = None
        self._working_kvm: bool | None = None
        self._digests: dict[tuple[str, int, int, int], str] = {}
        # stats: the readings of one moment share a worker thread; the last block counters of
        # each VM stand in when QMP does not answer in time, so no counter ever goes down
        self._read = kernelstats.Batched(_vm_reading, None)
        self._blocks: dict[str, tuple[int, int]] = {}

    # ---- plumbing -----------------------------------------------------------------------------

    def _sockets(self, side: dict[str, Any]) -> Path:
        """Where a VM's QMP and control sockets are: a short path of their own (a socket's path is
        108 bytes at most, and an instance's directory can be deeper than that)."""
        return self.run_dir / side["tap"]




    def _members(self, network: str) -> dict[str, tuple[str, str | None]]:
        """This driver's VMs on ``network`` (blocking): see Bridges.add_user."""
        return {name: (side["labels"].get(LABEL_PROJECT_NAME, ""), nic.get("address"))
                for name, side in self._all_sidecars().items()
                for nic in side.get("nics", ()) if nic["network"] == network}

    async def _run(self, *argv: str, check: bool = True, what: str = "") -> tuple[int, str]:
        return await run_tool("qemu", "apt-get install qemu-system-x86 qemu-utils", *argv, check=check, what=what)

    async def _journal(self, action: str, side: dict[str, Any], name: str, exit_code: int | None = None) -> None:
        await trio.to_thread.run_sync(self.journal.append, action, side.get("labels", {}), name, exit_code)

    # ---- protocol: runtime and images ---------------------------------------------------------

    async def ping(self) -> None:
        if shutil.which("qemu-system-x86_64") is None:
            raise RuntimeUnavailable("qemu: qemu-system-x86_64 not found: apt-get install qemu-system-x86 qemu-utils")
        try:
            await trio.to_thread.run_sync(lambda: self.path.mkdir(parents=True, exist_ok=True))
            await trio.to_thread.run_sync(self.journal.rotate)
        except OSError as exc:
            raise RuntimeUnavailable(f"qemu: cannot use {self.path}: {exc}") from None
        await trio.to_thread.run_sync(_ensure_tun)
        await trio.to_thread.run_sync(kernel.find, self.kernel_dir)





    async def resolve_image(self, image: str) -> str:
        """A disk image's content id is the sha256 of its bytes (hashed again only when its size,
        mtime or inode changed); any other image is resolved as LXC resolves it."""
        if not is_disk_image(image):
            return await self.images.resolve(image)

        def digest() -> str:
            try:
                st = os.stat(image)
                disks.probe_image(Path(image), standalone=True)
            except (OSError, DriverError) as exc:
                why = str(exc) if isinstance(exc, DriverError) else f"disk image {image} does not exist"
                raise ImageNotFound(why) from None
            key = (image, st.st_size, st.st_mtime_ns, st.st_ino)
            if key not in self._digests:
                self._digests[key] = "sha256:" + sha256_of(Path(image))
            return self._digests[key]

        return await trio.to_thread.run_sync(digest)

    async def pull(self, image: str, auth: Any = None, progress: Any = None) -> None:
        if is_disk_image(image):
            await self.resolve_image(image)  # nothing to fetch: it is here or it is not
            return
        await self.images.pull(image, auth, progress)

    async def vet(self, spec: Any) -> str | None:
        """What would make a version's VM fail to boot, said when the version is made: a disk
        image larger than the disk it is given, a kernel or initrd that is not there."""
        if not is_disk_image(spec.image):
            return None
        for key in ("kernel", "initrd"):
            path = getattr(spec, key, None)
            if path and not await trio.Path(path).is_file():
                return f"{key} {path} does not exist"
        try:
            _, size = await trio.to_thread.run_sync(disks.probe_image, Path(spec.image), True)
        except DriverError as exc:
            return str(exc)
        if spec.disk is not None and size > spec.disk:
            return (f"disk image {spec.image} is {size / (1 << 30):.2f} GiB, larger than the service's disk of "
                    f"{spec.disk / (1 << 30):.2f} GiB (its package's, or 'disk')")
        return None

    async def _base_disk(self, image: str, content_id: str, disk: int | None) -> Path:
        """The image's raw ext4 base disk, made once per content id and size from its root
        filesystem: of the service's ``disk`` (its package's) when given, so the guest's root
        filesystem has that room; refused when the image's files need more."""
        rootfs = await self.images.rootfs(image, content_id)
        size_mb = -(-disk // disks.MB) if disk is not None else None
        path = rootfs.parent / (f"disk-{size_mb}m.raw" if size_mb else "disk.raw")
        async with self._disk_locks.setdefault(content_id, trio.Lock()):
            if not await trio.Path(path).exists():
                if size_mb is not None:
                    needed = await trio.to_thread.run_sync(disks.needed_mb, rootfs)
                    if needed > size_mb:
                        raise DriverError(f"qemu: image {image} needs a disk of {needed} MB, more than the "
                                          f"service's disk of {size_mb} MB (its package's, or 'disk')")
                await trio.to_thread.run_sync(disks.base_disk, rootfs, path, size_mb)
        return path

    async def _boot_files(self) -> tuple[kernel.Kernel, Path]:
        found = await trio.to_thread.run_sync(kernel.find, self.kernel_dir)
        if self._initrd is None or not await trio.Path(self._initrd).exists():
            self._initrd = await trio.to_thread.run_sync(initramfs.build, found, self.path / "initrd")
        return found, self._initrd

    async def accelerator(self, wanted: str = "auto") -> str:
        """``kvm`` or ``tcg``: KVM only where it boots a kernel here (probed once, mariposa/vm/accel.py)."""
        wanted = self.accel if wanted == "auto" else wanted
        if wanted == "tcg":
            return "tcg"
        if self._working_kvm is None:
            found, initrd = await self._boot_files()
            self._working_kvm, why = await accelerators.probe(found, self.path)
            log.info("qemu: accelerator", kvm=self._working_kvm, why=why)
        if wanted == "kvm" and not self._working_kvm:
            raise DriverError("qemu: accel kvm was asked for, but KVM cannot boot a kernel on this host "
                              "(mariposa doctor says why); use accel: auto or tcg")
        return "kvm" if self._working_kvm else "tcg"

    async def leases(self) -> dict[str, tuple[str, dict[str, dhcp.Lease]]]:
        """What the DHCP server hands out (mariposa/vm/dhcp.py): the addresses Mariposa allocated
        to the VMs that boot their own OS. Guests Mariposa's init configures ask for nothing:
        their address is on their kernel's command line."""
        return await trio.to_thread.run_sync(lambda: dhcp.leases_from_sidecars(
            side for side in self._all_sidecars().values() if side.get("boot") == "disk"))

    # ---- protocol: networks (mariposa/bridges.py) ---------------------------------------------

    async def ensure_network(self, project_id: str, project_name: str) -> None:
        await self.bridges.ensure(project_network(project_id), {
            LABEL_OWNER: self.owner, LABEL_PROJECT: project_id, LABEL_PROJECT_NAME: project_name})

    async def remove_network(self, project_id: str, project_name: str = "") -> list[str]:
        return await self.bridges.remove_project(project_id, project_name)

    async def network_exists(self, name: str) -> bool:
        return await self.bridges.exists(name)

    # ---- protocol: volumes (a disk each, kept under volumes/PROJECT/) ---------------------------

    def _volume_path(self, project_name: str, volume: str) -> Path:
        return self.path / "volumes" / project_name / f"{volume}.img"

    async def volumes(self, project_name: str) -> list[VolumeInfo]:
        def scan() -> list[VolumeInfo]:
            folder = self.path / "volumes" / project_name
            if not folder.is_dir():
                return []
            sides = self._all_sidecars()
            out = []
            for disk in sorted(folder.glob("*.img")):
                name = disk.stem
                try:
                    labels = json.loads(disk.with_suffix(".json").read_text())
                except (OSError, ValueError):
                    labels = {LABEL_VOLUME: name}
                if labels.get(LABEL_OWNER, self.owner) != self.owner:
                    continue
                users = tuple(sorted(n for n, s in sides.items()
                                     if volume_name(project_name, name) in s.get("volumes", ())))
                out.append(VolumeInfo(name, volume_name(project_name, name), tuple(sorted(labels.items())),
                                      disk.stat().st_blocks * 512, users))
            return out

        return await trio.to_thread.run_sync(scan)

    async def remove_volume(self, project_name: str, volume: str) -> None:
        for v in await self.volumes(project_name):
            if v.name == volume and v.used_by:
                raise VolumeInUse(f"volume {volume} of project {project_name} is in use by {', '.join(v.used_by)}")
        await trio.Path(self._volume_path(project_name, volume)).unlink(missing_ok=True)
        await trio.Path(self._volume_path(project_name, volume).with_suffix(".json")).unlink(missing_ok=True)

    # ---- protocol: instances ------------------------------------------------------------------

    async def create(self, req: CreateRequest) -> Instance:
        name = req.name
        side = await self._side(name)
        if side is not None:
            if side["labels"].get(LABEL_INSTANCE) != req.instance_id:
                raise DriverError(f"qemu: create {name}: a VM of that name exists and is not this instance")
            inst = await self._instance(name, side)
            if inst is not None and inst.state != InstanceState.RUNNING:
                await self.start(inst)
                inst = await self._instance(name, side)
            if inst is None:
                raise DriverError(f"qemu: create {name}: the VM vanished")
            return inst
        spec = req.spec
        for ref in spec.networks:  # an external network must be there before anything is made
            if ref.external and not await self.network_exists(ref.runtime(req.project_name)):
                raise DriverError(f"qemu: external network {ref.runtime(req.project_name)} (network {ref.name!r} "
                                  "of the manifest) does not exist; create it first")
        if is_disk_image(spec.image):  # copied once into our cache, checked against the version's pin
            base = await trio.to_thread.run_sync(disks.import_image, Path(spec.image), self.path / "disks",
                                                 spec.image_id)
        else:
            content_id = await self.images.content_id(spec.image, spec.image_id)
            base = await self._base_disk(spec.image, content_id, spec.disk)
        home = self._dir(name)
        if await trio.Path(home).exists():  # a create a crash cut short (no sidecar yet): afresh
            await trio.to_thread.run_sync(lambda: shutil.rmtree(home, ignore_errors=True))
        try:
            made = await self._make(req, name, home, base)
            await self._journal("create", made, name)
            await self._start(name, made)
        except BaseException:
            with trio.move_on_after(30, shield=True):
                await self._destroy(name, journal=False)
            raise
        inst = await self._instance(name, await self._side(name) or {})
        if inst is None:
            raise DriverError(f"qemu: create {name}: the VM vanished right after start")
        return inst

    async def _make(self, req: CreateRequest, name: str, home: Path, base: Path) -> dict[str, Any]:
        """The instance's disks, then its sidecar (last: inventory lists a VM by its sidecar)."""
        spec = req.spec
        nets = [await self.bridges.ensure(project_network(req.project_id), {
            LABEL_OWNER: self.owner, LABEL_PROJECT: req.project_id, LABEL_PROJECT_NAME: req.project_name})]
        for ref in spec.networks:
            runtime = ref.runtime(req.project_name)
            if ref.external:
                nets.append(await self.bridges.get(runtime) or {"name": runtime, "bridge": runtime, "subnet": None})
            else:
                nets.append(await self.bridges.ensure(runtime, {
                    LABEL_OWNER: self.owner, LABEL_PROJECT_NAME: req.project_name, LABEL_NETWORK: ref.name}))
        mounts: list[tuple[str, str, bool]] = []
        volume_disks: list[str] = []
        volumes: list[str] = []
        for m in spec.volumes:
            if m.type != "volume":
                raise DriverError(f"qemu: create {name}: a {m.type} mount ({m.target}) is not supported for VMs: "
                                  "use a named volume (a disk of its own)")
            assert m.source is not None
            disk = self._volume_path(req.project_name, m.source)
            labels = {**dict(m.labels), LABEL_OWNER: self.owner, LABEL_PROJECT_NAME: req.project_name,
                      LABEL_VOLUME: m.source}
            await trio.to_thread.run_sync(_volume_disk, disk, labels)
            mounts.append((f"/dev/vd{chr(ord('c') + len(volume_disks))}", m.target, m.read_only))
            volume_disks.append(str(disk))
            volumes.append(volume_name(req.project_name, m.source))
        files: dict[str, bytes] = {}
        for folder, prefix_ in ((req.secrets_dir, "secrets"),):  # the mdata: a disk of its own, each boot
            if folder:
                files.update(await trio.to_thread.run_sync(_files_under, Path(folder), prefix_))
        own_os = is_disk_image(spec.image)
        await trio.to_thread.run_sync(lambda: (home / "log").mkdir(parents=True))
        _, base_size = await trio.to_thread.run_sync(disks.probe_image, base)
        if own_os and spec.disk is not None and spec.disk < base_size:
            raise DriverError(f"qemu: create {name}: disk image {spec.image} ({base_size} bytes) is larger than "
                              f"the service's disk ({spec.disk} bytes)")
        # a disk image of the user's grows into its disk itself (growpart, cloud-init); ours is made of that size
        size_mb = -(-spec.disk // disks.MB) if own_os and spec.disk is not None and spec.disk > base_size else None
        await trio.to_thread.run_sync(disks.overlay, base, home / "root.qcow2", size_mb)
        user = None
        if spec.user:  # a name is looked up in the image's /etc/passwd, as Docker and LXC do
            user = await trio.to_thread.run_sync(passwd_lookup, [base.parent / "rootfs"], spec.user)
        await trio.to_thread.run_sync(lambda: disks.config_disk(
            home / "config.img", command=list(spec.command) if spec.command is not None else None,
            env=dict(spec.environment), workdir=spec.working_dir, user=user, mounts=mounts, files=files))
        async with self.bridges.allocation:
            nics = []
            for index, rec in enumerate(nets):
                address = await self.bridges.free(rec) if rec.get("subnet") else None
                nics.append({"network": rec["name"], "bridge": rec["bridge"], "tap": tap_name(req.instance_id, index),
                             "address": address, "prefix": prefix(rec) if address else None,
                             "labels": rec.get("labels"), "mac": _mac(address, req.instance_id, index)})
            side = {
                "labels": req.labels(),
                "compute_type": self.compute_type,
                "nics": nics,
                "address": nics[0]["address"],
                "prefix": nics[0]["prefix"],
                "gateway": gateway(nets[0]),
                "dns": [gateway(nets[0]), *spec.dns],
                "tap": nics[0]["tap"],
                "image_root": str(base.parent / "rootfs"),
                "boot": "disk" if own_os else "mariposa",  # disk: the image boots its own OS
                "machine": spec.machine or ("q35" if own_os and not spec.kernel else "microvm"),
                "kernel": spec.kernel, "initrd": spec.initrd, "cmdline": spec.cmdline,
                # our init runs the command and reads the control channel (not so for the image's own
                # init or OS); the live mdata it is sent after each boot and change (push_mdata)
                "control": spec.command is not None and not own_os,
                "mdata_dir": req.mdata_dir,
                "volumes": volumes,
                "volume_disks": volume_disks,
                "memory_mb": max(64, int(spec.memory) // (1 << 20)) if spec.memory else 128,
                "cpus": max(1, int(round(spec.cpus))) if spec.cpus else 1,
                "accel": getattr(spec, "accel", None) or "auto",
                "boot_timeout": getattr(spec, "boot_timeout", None),
                "stop_timeout": spec.stop_timeout,
                "hostname": spec.hostname or name,
            }
            await trio.to_thread.run_sync(write_file, home / "mariposa.json", json.dumps(side), 0o600)
        return side

    async def _taps(self, side: dict[str, Any], labels: dict[str, str]) -> None:
        """The VM's taps, one on each of its networks' bridges (a bridge Mariposa made is made
        again if it went since the VM stopped; one made outside must be there)."""
        for index, nic in enumerate(side["nics"]):
            if index == 0:
                await self.ensure_network(labels.get(LABEL_PROJECT, ""), labels.get(LABEL_PROJECT_NAME, ""))
            elif nic.get("labels"):
                await self.bridges.ensure(nic["network"], nic["labels"])
            elif not await self.bridges.is_up(nic["bridge"]):
                raise DriverError(f"qemu: external network {nic['network']} does not exist; create it first")
            tap = nic["tap"]
            if not await self.bridges.is_up(tap):
                await self._run("ip", "tuntap", "add", "dev", tap, "mode", "tap", what=f"make tap {tap}")
            await self._run("ip", "link", "set", tap, "master", nic["bridge"], "up", what=f"attach tap {tap}")

    async def _start(self, name: str, side: dict[str, Any]) -> None:
        home = self._dir(name)
        labels = side.get("labels", {})
        await self._taps(side, labels)
        found, initrd = await self._boot_files()
        accel = await self.accelerator(side.get("accel") or "auto")
        for stale in (self._sockets(side) / "qmp.sock", self._sockets(side) / "ctl.sock",
                      self._sockets(side) / "qga.sock", home / "qemu.pid", home / "paused"):
            await trio.Path(stale).unlink(missing_ok=True)
        offset = await trio.to_thread.run_sync(lambda: (home / "log" / "out").stat().st_size
                                               if (home / "log" / "out").exists() else 0)
        await trio.to_thread.run_sync(write_file, home / "boot", str(offset))
        sockets = self._sockets(side)
        await trio.to_thread.run_sync(lambda: sockets.mkdir(parents=True, exist_ok=True))
        own_os = side.get("boot") == "disk"
        machine = side.get("machine") or "microvm"
        tsc = None if accel == "kvm" else console.TSC_KHZ
        if own_os:
            vmlinux, initrd_ = (Path(side["kernel"]), Path(side["initrd"]) if side.get("initrd") else None) \
                if side.get("kernel") else (None, None)
            cmdline = side.get("cmdline") if side.get("kernel") else None
            if vmlinux is not None and tsc is not None and "tsc_early_khz=" not in (cmdline or ""):
                cmdline = f"{cmdline or ''} tsc_early_khz={tsc}".strip()  # TCG: or half the boots hang
        else:
            vmlinux, initrd_ = found.vmlinux, initrd
            cmdline = console.command_line(f"{side['address']}/{side['prefix']}", side["gateway"], side["dns"],
                                           side["hostname"], tsc_khz=tsc)
        volume_disks = [Path(p) for p in side.get("volume_disks", ())]
        if side.get("mdata_dir"):  # the mdata of now, not of the create: a disk made at each boot, last
            volume_disks.append(await trio.to_thread.run_sync(_mdata_disk, Path(side["mdata_dir"]), home))
            if cmdline is not None and not own_os:
                cmdline += f" mariposa.mdata=/dev/vd{chr(ord('c') + len(volume_disks) - 1)}"
        argv = console.qemu_argv(
            vmlinux=vmlinux, initrd=initrd_, root_disk=home / "root.qcow2", config_disk=home / "config.img",
            volume_disks=volume_disks, console_log=home / "log" / "out",
            control_socket=sockets / "ctl.sock", qmp_socket=sockets / "qmp.sock", tap=side["tap"],
            mac=side["nics"][0]["mac"], memory_mb=side["memory_mb"], cpus=side["cpus"], accel=accel,
            cmdline=cmdline, console_append=True, machine=machine,
            guest_agent=sockets / "qga.sock" if own_os else None)
        for index, nic in enumerate(side["nics"][1:], start=1):  # the other networks: eth1, eth2, ...
            argv += ["-netdev", f"tap,id=net{index},ifname={nic['tap']},script=no,downscript=no",
                     "-device", f"virtio-net-{console.virtio_kind(machine)},netdev=net{index},mac={nic['mac']}"]
            if not own_os:  # a guest of its own takes every address by DHCP (mariposa/vm/dhcp.py)
                argv[argv.index("-append") + 1] += (f" mariposa.ip{index}=" +
                                                    (f"{nic['address']}/{nic['prefix']}" if nic["address"] else ""))
        await self._run(*argv, "-daemonize", "-pidfile", str(home / "qemu.pid"), what=f"start {name}")
        await trio.to_thread.run_sync(write_file, home / "up", "")  # its end is to be journaled (_reap)
        await self._journal("start", side, name)
        limit = side.get("boot_timeout") or BOOT_TIMEOUT[accel]
        text = ""
        with trio.move_on_after(limit) as waited:
            while True:
                if own_os:  # ready once its network is up: the guest sent its first frame
                    if await trio.to_thread.run_sync(_sent_a_frame, side["tap"]):
                        return
                else:
                    text = await trio.to_thread.run_sync(_console_since, home)
                    if READY in text:
                        break
                if await trio.to_thread.run_sync(_pid_of, home) is None:
                    text = await trio.to_thread.run_sync(_console_since, home)
                    if "MARIPOSA START" in text and EXIT in text:
                        return  # started and already done (exit 3 at once): its exit code tells
                    break  # the VM ended before its command ran: its console says why
                await trio.sleep(0.05)
        if not own_os and not waited.cancelled_caught and READY in text:
            return
        tail = "\n".join((await trio.to_thread.run_sync(_console_since, home)).splitlines()[-20:])
        await self._kill(name)
        why = f"not ready within its boot timeout of {limit:g} s" if waited.cancelled_caught else "ended before ready"
        if own_os and waited.cancelled_caught:
            why += " (its network never came up: the guest sent no frame on its tap)"
        raise DriverError(f"qemu: start {name}: {why} ({accel}, {machine}); the console's last lines:\n{tail}")

    async def _kill(self, name: str) -> None:
        pid = await trio.to_thread.run_sync(_pid_of, self._dir(name))
        if pid is None:
            return
        try:
            os.kill(pid, signals.SIGKILL)
        except ProcessLookupError:
            return
        with trio.move_on_after(10):
            while await trio.to_thread.run_sync(_pid_of, self._dir(name)) is not None:
                await trio.sleep(0.02)

    async def _destroy(self, name: str, journal: bool = True) -> None:
        home = self._dir(name)
        side = await self._side(name) or {}
        await self._kill(name)
        for nic in side.get("nics", ()):
            if await self.bridges.is_up(nic["tap"]):
                await self._run("ip", "link", "del", nic["tap"], check=False)
        await trio.to_thread.run_sync(lambda: shutil.rmtree(home, ignore_errors=True))
        if side.get("tap"):
            await trio.to_thread.run_sync(lambda: shutil.rmtree(self._sockets(side), ignore_errors=True))
        if journal and side:
            await self._journal("destroy", side, name)

    async def _instance(self, name: str, side: dict[str, Any]) -> Instance | None:
        return await trio.to_thread.run_sync(self._build, name, side)

    def _reap(self, name: str, side: dict[str, Any]) -> None:
        """Journal the end of a VM that was started and whose process is gone, once (the ``up``
        marker goes with it; whoever unlinks it journals), whoever sees it first: the watcher,
        or a listing, which so journals a death that happened while no one listened before
        anything the listing's caller does next. Blocking."""
        home = self._dir(name)
        if (home / "up").exists() and _pid_of(home) is None:
            try:
                os.unlink(home / "up")
            except FileNotFoundError:
                return
            self.journal.append("die", side.get("labels", {}), name, _exit_code(home, side.get("boot") == "disk"))

    def _build(self, name: str, side: dict[str, Any]) -> Instance | None:
        """Blocking: reads /proc and the files beside the sidecar."""
        found = identity_from_labels(side.get("labels", {}))
        if found is None:
            return None
        home = self._dir(name)
        self._reap(name, side)
        alive = _pid_of(home) is not None
        if alive:
            paused = (home / "paused").exists()
            state, exit_code = InstanceState.PAUSED if paused else InstanceState.RUNNING, None
        elif not (home / "boot").exists():
            state, exit_code = InstanceState.CREATING, None
        else:
            state, exit_code = InstanceState.EXITED, _exit_code(home, side.get("boot") == "disk")
        if "created" not in found:
            try:
                found["created"] = (home / "mariposa.json").stat().st_mtime
            except OSError:
                found["created"] = 0.0
        return Instance(**found, runtime_id=name, name=name, state=state, exit_code=exit_code,
                        address=side.get("address") if alive else None, compute_type=self.compute_type)

    async def start(self, inst: Instance) -> None:
        side = await self._side(inst.runtime_id)
        if side is None:
            raise DriverError(f"qemu: start {inst.name}: no such VM")
        if await trio.to_thread.run_sync(_pid_of, self._dir(inst.runtime_id)) is not None:
            return
        await self._start(inst.runtime_id, side)

    async def stop(self, inst: Instance, timeout: int | None = None) -> None:
        """SIGTERM to the guest's command through our init (a VM of its own OS: ACPI power
        button), then QMP ``quit`` after the timeout, then SIGKILL."""
        name = inst.runtime_id
        home = self._dir(name)
        side = await self._side(name)
        if side is None or await trio.to_thread.run_sync(_pid_of, home) is None:
            return
        if timeout is None:
            timeout = side.get("stop_timeout") or DEFAULT_STOP_TIMEOUT
        if timeout > 0:
            if side.get("boot") == "disk":  # its own OS: the ACPI power button, as a host's shutdown
                with trio.move_on_after(3), contextlib.suppress(DriverError, OSError, trio.BrokenResourceError):
                    await _qmp(self._sockets(side) / "qmp.sock", "system_powerdown")
            else:
                with trio.move_on_after(2), contextlib.suppress(DriverError):
                    await self._control(name, console.control_line("SIGNAL", "TERM"), None)
            with trio.move_on_after(timeout):
                while await trio.to_thread.run_sync(_pid_of, home) is not None:
                    await trio.sleep(0.05)
        if await trio.to_thread.run_sync(_pid_of, home) is not None:
            with trio.move_on_after(3), contextlib.suppress(DriverError, OSError, trio.BrokenResourceError):
                await _qmp(self._sockets(side) / "qmp.sock", "quit")  # best effort: SIGKILL follows
            with trio.move_on_after(3):
                while await trio.to_thread.run_sync(_pid_of, home) is not None:
                    await trio.sleep(0.05)
            await self._kill(name)
        await self._journal("stop", side, name)

    async def signal(self, inst: Instance, name: str) -> None:
        home = self._dir(inst.runtime_id)
        if await trio.to_thread.run_sync(_pid_of, home) is None:
            if await self._side(inst.runtime_id) is None:
                return
            raise DriverError(f"qemu: signal {inst.name}: it is not running")
        side = await self._side(inst.runtime_id) or {}
        if side.get("boot") == "disk":
            raise DriverError(f"qemu: signal {inst.name}: unsupported: it boots its own OS from a disk image, "
                              "without Mariposa's init to deliver signals (stop and restart work)")
        sig = name.upper().removeprefix("SIG") if not name.isdigit() else name
        try:
            line = console.control_line("SIGNAL", sig)
        except ValueError:
            raise DriverError(f"qemu: signal {inst.name}: unknown signal {name!r}") from None
        await self._control(inst.runtime_id, line, None)

    async def pause(self, inst: Instance) -> None:
        """Freeze the VM's CPUs (QMP ``stop``): it keeps its memory and devices, answers nothing,
        and is listed paused (counted neither up nor down, as a frozen container is)."""
        await self._pause(inst, True)

    async def unpause(self, inst: Instance) -> None:
        """Thaw it (QMP ``cont``)."""
        await self._pause(inst, False)

    async def status(self, inst: Instance) -> str:
        """QEMU's own word for the VM's run state (QMP ``query-status``: running, paused, ...)."""
        side = await self._running_side(inst, "status of")
        with trio.fail_after(5):
            answer = await _qmp(self._sockets(side) / "qmp.sock", "query-status")
        return str(answer.get("status", "unknown"))

    async def _running_side(self, inst: Instance, what: str) -> dict[str, Any]:
        """The sidecar of a VM whose process runs; ``DriverError`` naming ``what`` otherwise."""
        side = await self._side(inst.runtime_id)
        if side is None or await trio.to_thread.run_sync(_pid_of, self._dir(inst.runtime_id)) is None:
            raise DriverError(f"qemu: {what} {inst.name}: it is not running")
        return side

    async def _pause(self, inst: Instance, frozen: bool) -> None:
        side = await self._running_side(inst, "pause" if frozen else "unpause")
        home = self._dir(inst.runtime_id)
        with trio.fail_after(5):
            await _qmp(self._sockets(side) / "qmp.sock", "stop" if frozen else "cont")
        if frozen:
            await trio.to_thread.run_sync(write_file, home / "paused", "")
        else:
            await trio.Path(home / "paused").unlink(missing_ok=True)

    async def remove(self, inst: Instance) -> None:
        self._blocks.pop(inst.runtime_id, None)
        if await self._side(inst.runtime_id) is None and not await trio.Path(self._dir(inst.runtime_id)).exists():
            return
        await self._destroy(inst.runtime_id)

    async def stats(self, inst: Instance) -> InstanceStats | None:
        """The VM as the host sees it: CPU is the QEMU process's (utime + stime: the guest's
        vCPUs and QEMU's own work for it, which under TCG is the emulation), memory its resident
        set (the guest memory it touched plus QEMU's own, so it can pass ``memory_limit``, the
        VM's configured memory), ``cpu_limit`` its vCPUs. Network from its taps, turned round to
        the guest's point of view (what the tap sends, the guest receives). Block I/O from QMP
        ``query-blockstats`` (every disk: root, config, volumes). Measured on this host (TCG), a
        reading costs 1.2 ms of the daemon's CPU, 0.45 ms of it the QMP exchange, and about
        0.6 ms of QEMU's. When QMP does not answer within a second (another client holds the
        monitor) the last figures stand. None when it is not running or paused."""
        name = inst.runtime_id
        side = await self._side(name)
        if side is None:
            return None
        taps = [nic["tap"] for nic in side.get("nics", ())]
        got = await self._read(self._dir(name), taps, int(side.get("memory_mb") or 128) << 20,
                               float(side.get("cpus") or 1))
        if got is None:
            return None
        block = self._blocks.get(name, (0, 0))
        with trio.move_on_after(1), contextlib.suppress(DriverError, OSError, trio.BrokenResourceError, ValueError):
            devices: Any = await _qmp(self._sockets(side) / "qmp.sock", "query-blockstats")  # a list
            block = (sum(int((d.get("stats") or {}).get("rd_bytes", 0)) for d in devices),
                     sum(int((d.get("stats") or {}).get("wr_bytes", 0)) for d in devices))
        self._blocks[name] = block
        return attrs.evolve(got, block_read=block[0], block_write=block[1])

    async def inventory(self, project_id: str | None = None) -> list[Instance]:
        def build() -> list[Instance]:
            out = []
            for name, side in sorted(self._all_sidecars().items()):
                if project_id is None or side["labels"].get(LABEL_PROJECT) == project_id:
                    inst = self._build(name, side)
                    if inst is not None:
                        out.append(inst)
            return out

        return await trio.to_thread.run_sync(build)

    def events(self, since: str | None = None) -> AsyncIterator[DriverEvent]:
        """The journal (drivers/journal.py); before each read, ended VMs are looked for
        (``_reap_all``), so a ``die`` is journaled whoever ended the VM: its command, a kill -9,
        the host, even while no daemon ran."""
        return self.journal.events(since)

    async def _reap_all(self) -> None:
        def look() -> None:
            for name, side in self._all_sidecars().items():
                self._reap(name, side)

        await trio.to_thread.run_sync(look)

    async def _control(self, name: str, line: bytes, reply_to: str | None) -> str | None:
        """One line to our init over the control channel (one user at a time: QEMU's socket
        chardev serves one client); with ``reply_to``, the guest's line that starts with it.
        Without, a PING follows and its PONG is awaited: QEMU drops what the guest has not read
        yet when the client hangs up, so a SIGNAL sent and hung up on was lost."""
        side = await self._side(name)
        if side is None:
            raise DriverError(f"qemu: control channel of {name}: no such VM")
        sock_path = self._sockets(side) / "ctl.sock"
        async with self._control_locks.setdefault(name, trio.Lock()):
            try:
                stream = await trio.open_unix_socket(str(sock_path))
            except OSError as exc:
                raise DriverError(f"qemu: control channel of {name}: {exc}") from None
            async with stream:
                if reply_to is None:
                    token = os.urandom(6).hex()
                    line += console.control_line("PING", token)
                    reply_to = f"PONG {token}"
                buffer = b""
                while True:
                    try:
                        if line:
                            await stream.send_all(line)
                            line = b""
                        data = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        data = b""  # reset by QEMU as the VM ended: the same as a hang-up
                    if not data:
                        if reply_to.startswith("PONG "):
                            return None  # the VM ended (the signal ended its command): nothing lost
                        raise DriverError(f"qemu: control channel of {name} closed before the answer")
                    buffer += data
                    while b"\n" in buffer:
                        raw, buffer = buffer.split(b"\n", 1)
                        text = raw.decode(errors="replace").strip()
                        if text.startswith(reply_to):
                            return text

    async def push_mdata(self, inst: Instance) -> bool:
        """The instance's live mdata files as they are on the host now, sent to our init, which
        swaps them in whole at /run/mariposa/mdata (a container sees the host's directory through
        its bind mount; a VM boots with a disk of them, _mdata_disk). False when there is no one
        to send them to: a VM that boots its own OS or the image's init reads that disk only."""
        side = await self._side(inst.runtime_id)
        if not side or not side.get("control") or not side.get("mdata_dir"):
            return False
        if await trio.to_thread.run_sync(_pid_of, self._dir(inst.runtime_id)) is None:
            return False  # it reads them when it starts (_mdata_disk)
        data = await trio.to_thread.run_sync(_mdata_tar, Path(side["mdata_dir"]))
        with trio.fail_after(10):
            await self._control(inst.runtime_id, console.control_line("MDATA", base64.b64encode(data).decode()), None)
        return True

    async def exec(self, inst: Instance, argv: list[str], timeout: float, user: str | None = None
                   ) -> tuple[int, bytes]:
        name = inst.runtime_id
        if await trio.to_thread.run_sync(_pid_of, self._dir(name)) is None:
            raise DriverError(f"qemu: exec in {inst.name}: it is not running")
        side = await self._side(name) or {}
        if side.get("boot") == "disk":  # its own OS: the QEMU guest agent runs it, when the image has one
            if user is not None:
                raise DriverError(f"qemu: exec in {inst.name} as {user}: unsupported: the QEMU guest agent "
                                  "runs commands as its own user")
            with trio.fail_after(timeout):
                return await guest_agent.run(self._sockets(side) / "qga.sock", list(argv), inst.name)
        token = os.urandom(6).hex()
        line = console.control_line("EXEC", token, list(argv))
        if user is not None:
            side = await self._side(name) or {}
            uid, gid = await trio.to_thread.run_sync(
                passwd_lookup, [Path(side.get("image_root", "/nonexistent"))], user)
            line = console.control_line("EXEC", token, list(argv), f"{uid}:{gid}")
        with trio.fail_after(timeout):
            answer = await self._control(name, line, f"EXITED {token} ")
        assert answer is not None
        parts = answer.split(" ")
        output = console.decode_output(parts[3]) if len(parts) > 3 else b""
        return int(parts[2]), output or b""

    async def address(self, inst: Instance) -> str | None:
        side = await self._side(inst.runtime_id)
        if side is None or await trio.to_thread.run_sync(_pid_of, self._dir(inst.runtime_id)) is None:
            return None
        return side.get("address")

    async def logs(self, inst: Instance, since: float | None = None, tail: int | None = None,
                   follow: bool = False) -> AsyncGenerator[LogLine, None]:
        """What the command wrote: the serial console between our init's START and EXIT lines of
        each boot (the kernel's and the init's own lines left out)."""
        home = self._dir(inst.runtime_id)
        if not await trio.Path(home / "log" / "out").exists():
            raise DriverError(f"qemu: logs of {inst.name}: no such VM")

        own_os = ((await self._side(inst.runtime_id)) or {}).get("boot") == "disk"
        inside = [own_os]  # between our init's START and the command's EXIT: the command's output

        def wanted(line: LogLine) -> bool:
            if own_os:  # its own OS: its whole console is its output
                return since is None or line.when >= since
            if line.line.startswith(b"MARIPOSA "):
                if not line.line.startswith(READY.encode()):
                    inside[0] = line.line.startswith(b"MARIPOSA START")
                return False
            return inside[0] and (since is None or line.when >= since)

        lines, offset = await trio.to_thread.run_sync(read_log, home / "log", 0, not follow)
        picked = [line for line in lines if wanted(line)]
        if tail is not None:
            picked = picked[-tail:] if tail > 0 else []
        for line in picked:
            yield line
        if not follow:
            return
        while True:
            running = await trio.to_thread.run_sync(_pid_of, home) is not None
            more, offset = await trio.to_thread.run_sync(read_log, home / "log", offset, not running)
            for line in more:
                if wanted(line):
                    yield line
            if not running:
                return
            await trio.sleep(0.1)


def _ensure_tun() -> None:
    """``/dev/net/tun``, which taps need: a container host (Docker allows the device, 10:200, but
    makes no node for it) may lack the node; made when it can be."""
    tun = Path("/dev/net/tun")
    if tun.exists():
        return
    try:
        tun.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(tun, stat.S_IFCHR | 0o666, os.makedev(10, 200))
    except OSError as exc:
        raise RuntimeUnavailable(f"qemu: no /dev/net/tun for the VMs' taps and none can be made ({exc}): "
                                 "modprobe tun") from None


def _volume_disk(disk: Path, labels: dict[str, str]) -> None:
    """A named volume's disk and its labels beside it, made once and kept."""
    disk.parent.mkdir(parents=True, exist_ok=True)
    meta = disk.with_suffix(".json")
    if not meta.exists():
        write_file(meta, json.dumps(labels))
    disks.volume_disk(disk)


def _mdata_disk(folder: Path, home: Path) -> Path:
    """The mdata files of ``folder`` on a small ext4 disk (label ``mariposa-mdata``), made again
    at each boot, so a VM restarted reads today's values; our init copies them to a tmpfs, which
    MDATA lines keep current while it runs."""
    files = {name.lstrip("/"): data for name, data in _files_under(folder, "").items()}
    return disks.files_disk(home / "mdata.img", files, "mariposa-mdata")


def _mdata_tar(folder: Path) -> bytes:
    """The mdata files of ``folder`` (its ``..data`` link followed) as a tar of KEY files."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(_files_under(folder, "").items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(data), 0o444
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _files_under(folder: Path, prefix_: str) -> dict[str, bytes]:
    """The files of a secrets or mdata directory as the config disk holds them (its ``..data``
    link followed: mdata/files.py swaps directories behind it)."""
    out: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith("..") for part in rel.parts):
            out[f"{prefix_}/{rel}"] = path.read_bytes()
    return out


async def _qmp(sock: Path, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """One QMP command: the greeting, ``qmp_capabilities``, the command; its ``return``."""
    stream = await trio.open_unix_socket(str(sock))
    async with stream:
        buffer = b""

        async def message() -> dict[str, Any]:
            nonlocal buffer
            while b"\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    raise DriverError(f"qemu: QMP {sock} closed")
                buffer += data
            raw, buffer = buffer.split(b"\n", 1)
            return json.loads(raw)

        async def reply() -> dict[str, Any]:
            while "return" not in (m := await message()) and "error" not in m:
                pass  # events
            if "error" in m:
                raise DriverError(f"qemu: QMP {command}: {m['error'].get('desc')}")
            return m

        await message()  # the greeting
        await stream.send_all(b'{"execute": "qmp_capabilities"}\n')
        await reply()
        body: dict[str, Any] = {"execute": command, **({"arguments": arguments} if arguments else {})}
        await stream.send_all(json.dumps(body).encode() + b"\n")
        if command == "quit":
            return {}
        return (await reply()).get("return", {})

