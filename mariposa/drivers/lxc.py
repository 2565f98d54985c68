"""The LXC driver: system containers (``compute_type: infrastructure | lx | smartmachine``),
made and run with the ``lxc-*`` tools under a path of its own.

Why the tools and not a binding: Debian's ``python3-lxc`` imports only into Debian's own Python
(or a venv with system site-packages), and PyPI's ``lxc`` must be compiled against ``lxc-dev``;
either is a compiled dependency for what five commands do. The binding's calls also block
(start waits for the container), so each would need a worker thread, while ``trio.run_process``
waits on the child without blocking the loop; and its ``set_config_item("lxc.rootfs.path")``
silently reverts and its starts leave ``lxc.monitor.NAME`` cgroups behind. A tool call costs a
few milliseconds of fork and exec, small next to the 15-100 ms a container takes to start.

Everything the driver knows lives on disk under its LXC path (``/var/lib/mariposa/lxc`` by
default), so a new driver object, after a daemon SIGKILL, rebuilds the same inventory:

- ``NAME/config``: LXC's own config. The rootfs is always an **overlay** of a cached base
  (``images/ID/rootfs``, never written) and the instance's upper dir ``NAME/delta``: an instance
  never gets a shared ``dir:`` rootfs, which ``lxc-destroy`` would delete.
- ``NAME/mariposa.json``: the sidecar with the instance's labels (identity, ``tags``), address,
  networks, volumes, user, environment and stop timeout (mode 0600: environment may hold secrets).
- ``NAME/log/out``: the program's stdout and stderr, in order (the init script redirects them
  there: a daemonised ``lxc-start`` gives init no console output to log), and ``NAME/log/index``
  which stamps the output: each time the driver finds new bytes it records "END-OFFSET MTIME", so
  a line's time is when the driver first saw it written (at most the file's mtime then), stable
  across reads and restarts.
- ``NAME/exit``: the exit code of the last run, written by the post-stop hook from LXC's own log
  line "Child <pid> ended on error (N)" / "on signal SIG(N)" (128+N); 0 when it logged none
  (LXC logs failures only).
- ``events.log``: the event journal. LXC runs ``hook.sh`` (written by the driver) at every start
  and stop of every container, whoever caused it (a crash, ``lxc-stop -k`` by hand), and the
  driver appends create, stop and destroy itself. A cursor is the journal's inode and a byte
  offset in it, so a resumed subscription replays exactly what it missed, even what happened while
  no daemon ran; the journal is rotated at start-up past 16 MiB.

The command runs under tini (Docker's ``docker-init``, a static binary from the host bind-mounted
at ``/.mariposa/init``) unless ``init: false``: PID 1 of a PID namespace ignores signals it has no
handler for, so without it ``lxc-stop`` would wait out every timeout of a plain ``sleep``. Without
a ``command`` the image's ``/sbin/init`` runs as PID 1, as a system container does, and its
console (``lxc.console.logfile``) is the log. The spec hands an infrastructure container's
``command`` over as a "user script"; here it is the container's init program, run by
``/.mariposa/run`` (a two-line sh script in the upper dir: output to the log, then ``exec`` of
the command, so the image needs a ``/bin/sh``), which keeps logs, stop signals and exit codes what they are on Docker.

Networks: each instance joins its project's bridge (mariposa/bridges.py: made by Mariposa, shared
with the project's Docker containers) and the bridges of its ``networks``, with a static address
from the upper half of each subnet (recorded in ``NAME/mariposa.json``) and a MAC derived from the
address, as Docker does, so an address handed out again never meets a stale ARP entry. The host
reaches every instance at its address (health checks need no port). Its resolv.conf names the
project's DNS responder on the bridge's gateway (mariposa/dns/) unless the manifest sets ``dns``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal as signals
import stat
import subprocess
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import structlog
import trio

from mariposa.bridges import Bridges, gateway, mac_for, prefix, project_network
from mariposa.drivers import kernelstats
from mariposa.drivers.base import (
    DriverError,
    DriverEvent,
    LogLine,
    RuntimeUnavailable,
    VolumeInUse,
    identity_from_labels,
)
from mariposa.drivers.books import OwnBooks
from mariposa.drivers.journal import Journal, read_log
from mariposa.drivers.rootfs import RootfsCache
from mariposa.drivers.rootfs import passwd_lookup as _passwd_lookup
from mariposa.drivers.tools import run_tool, write_file
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
    MountSpec,
    VolumeInfo,
    volume_name,
)

log = structlog.get_logger()

DEFAULT_PATH = "/var/lib/mariposa/lxc"
DEFAULT_STOP_TIMEOUT = 10
TINI = ("/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/sbin/docker-init")
SECRETS_TARGET = "run/secrets"
MDATA_TARGET = "run/mariposa/mdata"
DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The journal is read when inotify says the LXC path changed, and at least this often (a thread
# hop and a read: at 0.1 s, polling alone cost an idle daemon 1.2 % of a core).
HOOK_GRACE = 3.0
HALF_MADE_AGE = 60.0
REMOVING = ".removing"  # instance directories being deleted: renamed here first (LxcDriver._remove_home)
LAYOUT = ("images", "networks", "volumes", REMOVING)  # the path's own directories: no instance's

_STATES = {
    "RUNNING": InstanceState.RUNNING,
    "STARTING": InstanceState.RUNNING,
    "STOPPING": InstanceState.STOPPING,
    "ABORTING": InstanceState.STOPPING,
    "FREEZING": InstanceState.PAUSED,
    "FROZEN": InstanceState.PAUSED,
    "THAWED": InstanceState.RUNNING,
    "STOPPED": InstanceState.EXITED,
}

# Run by LXC on the host: ``hook.sh ACTION INSTANCE PROJECT SERVICE JOURNAL`` (LXC appends the
# container's name, "lxc" and the hook type). A stop takes the exit code from LXC's own log line.
HOOK = r"""#!/bin/sh
# Written by mariposa's LXC driver (mariposa/drivers/lxc.py): journal a start or stop.
dir=$(dirname "$LXC_CONFIG_FILE")
code=
if [ "$1" = die ]; then
    code=$(sed -n -e 's/.*Child <[0-9]*> ended on error (\([0-9]*\)).*/\1/p' \
        -e 's/.*Child <[0-9]*> ended on signal [A-Za-z0-9]*(\([0-9]*\)).*/S\1/p' "$dir/lxc.log" | tail -n 1)
    case "$code" in
        S*) code=$((128 + ${code#S})) ;;
        "") code=0 ;;
    esac
    echo "$code" > "$dir/exit.tmp" && mv "$dir/exit.tmp" "$dir/exit"
else
    rm -f "$dir/exit"
fi
printf '{"t": %s, "a": "%s", "i": "%s", "p": "%s", "s": "%s", "n": "%s", "x": "%s"}\n' \
    "$(date +%s.%N)" "$1" "$2" "$3" "$4" "$LXC_NAME" "$code" >> "$5"
exit 0
"""


def _mac(address: str) -> str:
    return mac_for(address, "02:4c")


def _cgroup_v2() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def _resource_keys(memory: int | None, cpus: float | None, v2: bool) -> list[str]:
    """``memory``/``cpus`` as cgroup limits in whichever hierarchy the host has."""
    out = []
    if memory:
        key = "lxc.cgroup2.memory.max" if v2 else "lxc.cgroup.memory.limit_in_bytes"
        out.append(f"{key} = {int(memory)}")
    if cpus:
        quota = max(1000, int(cpus * 100_000))
        if v2:
            out.append(f"lxc.cgroup2.cpu.max = {quota} 100000")
        else:
            out += ["lxc.cgroup.cpu.cfs_period_us = 100000", f"lxc.cgroup.cpu.cfs_quota_us = {quota}"]
    return out


def _fstab(path: str) -> str:
    """A path in an ``lxc.mount.entry``, which LXC reads as an fstab line (blanks escaped)."""
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


def _safe_id(content_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", content_id)


def _signal_number(name: str) -> int:
    if name.isdigit():
        return int(name)
    upper = name.upper()
    try:
        return int(getattr(signals, upper if upper.startswith("SIG") else f"SIG{upper}"))
    except AttributeError:
        raise DriverError(f"lxc: unknown signal {name!r}") from None





class LxcDriver(OwnBooks):
    """Driver protocol over LXC; see the module docstring for the layout on disk."""

    compute_type = "infrastructure"  # what the manifest's lx, smartmachine and infrastructure mean

    def __init__(self, owner: str, lxc_path: str | os.PathLike[str] | None = None,
                 docker_host: str | None = None, copy_rootfs: bool | None = None,
                 bridges: Bridges | None = None) -> None:
        if not owner:
            raise ValueError("owner must not be empty: it is what keeps daemons apart")

        self.owner = owner
        self.path = Path(lxc_path or os.environ.get("MARIPOSA_LXC_PATH") or DEFAULT_PATH)
        self.images = RootfsCache(owner, self.path / "images", docker_host)
        self.journal = Journal(self.path, "lxc")
        # The bridges: the daemon's, shared with the Docker driver (one project network across
        # runtimes), or the driver's own under its path.
        self.bridges = bridges or Bridges(self.path / "networks")
        self.bridges.add_user(self._members)
        self._first_ping = True
        self._v2 = _cgroup_v2()
        # An overlay's upper dir cannot itself be on overlayfs (the kernel refuses the mount), as
        # when the daemon's state dir is inside a container: then each instance gets a copy of
        # the base of its own (a dir: rootfs no other instance shares). None: found out when needed.
        self._copy_rootfs = copy_rootfs
        # stats: each container's init pid (``lxc-info -p``, a fork and exec: asked once per run),
        # checked at every reading against the cgroup it is in (kernelstats.read_cgroup)
        self._pids: dict[str, int] = {}
        self._read = kernelstats.Batched(kernelstats.read_cgroup, None)

    # ---- plumbing -----------------------------------------------------------------------------

    async def _run(self, *argv: str, check: bool = True, what: str = "") -> tuple[int, str]:
        return await run_tool("lxc", "apt-get install lxc", *argv, check=check, what=what)

    def _ensure_layout(self) -> None:
        for sub in LAYOUT:
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        hook = self.path / "hook.sh"
        if not hook.exists() or hook.read_text() != HOOK:
            write_file(hook, HOOK, 0o755)



    # ---- protocol: runtime and images ---------------------------------------------------------

    async def ping(self) -> None:
        if shutil.which("lxc-start") is None:
            raise RuntimeUnavailable("lxc: lxc-start not found: apt-get install lxc")
        try:
            await trio.to_thread.run_sync(self._ensure_layout)
            await trio.to_thread.run_sync(self._sweep_half_made, 0.0 if self._first_ping else HALF_MADE_AGE)
            self._first_ping = False
            await trio.to_thread.run_sync(self.journal.rotate)
        except OSError as exc:
            raise RuntimeUnavailable(f"lxc: cannot use {self.path}: {exc}") from None

    def _sweep_half_made(self, age: float) -> None:
        """Instance directories without a config are creates a crash cut short (the config is
        written last): no inventory lists them, so nobody else would ever remove them. The
        first ping (the daemon's start, before it creates anything) sweeps them all; a later one
        (a runtime back after an outage) only those untouched for ``HALF_MADE_AGE``, so a create
        in flight is never swept."""
        for d in self.path.iterdir():
            if d.name in LAYOUT or not d.is_dir() or (d / "config").exists():
                continue
            if time.time() - d.stat().st_mtime >= age:
                log.info("removing a half-made LXC instance directory", path=str(d))
                shutil.rmtree(d, ignore_errors=True)
        for d in (self.path / REMOVING).iterdir():  # removes a crash cut short
            if time.time() - d.stat().st_mtime >= age:
                shutil.rmtree(d, ignore_errors=True)





    async def _base(self, image: str, content_id: str) -> Path:
        return await self.images.rootfs(image, content_id)

    # ---- protocol: networks (mariposa/bridges.py) ---------------------------------------------

    async def _ensure_net(self, network: str, labels: dict[str, str]) -> dict[str, Any]:
        return await self.bridges.ensure(network, labels)

    async def _anet(self, network: str) -> dict[str, Any] | None:
        return await self.bridges.get(network)

    async def ensure_network(self, project_id: str, project_name: str) -> None:
        await self._ensure_net(project_network(project_id), {LABEL_OWNER: self.owner, LABEL_PROJECT: project_id,
                                                             LABEL_PROJECT_NAME: project_name})

    async def remove_network(self, project_id: str, project_name: str = "") -> list[str]:
        return await self.bridges.remove_project(project_id, project_name)

    async def network_exists(self, name: str) -> bool:
        return await self.bridges.exists(name)

    # ---- protocol: volumes --------------------------------------------------------------------


    def _members(self, network: str) -> dict[str, tuple[str, str | None]]:
        """This driver's instances on ``network`` (blocking): see Bridges.add_user."""
        return {name: (side["labels"].get(LABEL_PROJECT_NAME, ""), side.get("addresses", {}).get(network))
                for name, side in self._all_sidecars().items() if network in side.get("networks", ())}

    async def volumes(self, project_name: str) -> list[VolumeInfo]:
        def scan() -> list[VolumeInfo]:
            sides = self._all_sidecars()
            out = []
            for meta in sorted((self.path / "volumes").glob("*/volume.json")):
                try:
                    labels = json.loads(meta.read_text())
                except (OSError, ValueError):
                    continue
                if labels.get(LABEL_OWNER) != self.owner or labels.get(LABEL_PROJECT_NAME) != project_name:
                    continue
                runtime = meta.parent.name
                users = sorted(n for n, s in sides.items() if runtime in s.get("volumes", ()))
                out.append(VolumeInfo(labels.get(LABEL_VOLUME, runtime), runtime, tuple(sorted(labels.items())),
                                      _du(meta.parent / "_data"), tuple(users)))
            return out

        return await trio.to_thread.run_sync(scan)

    async def remove_volume(self, project_name: str, volume: str) -> None:
        name = volume_name(project_name, volume)
        users = [n for n, s in (await trio.to_thread.run_sync(self._all_sidecars)).items()
                 if name in s.get("volumes", ())]
        if users:
            raise VolumeInUse(f"volume {volume} of project {project_name} is in use by {', '.join(sorted(users))}")
        await trio.to_thread.run_sync(lambda: shutil.rmtree(self.path / "volumes" / name, ignore_errors=True))

    def _ensure_volume(self, req: CreateRequest, m: MountSpec) -> Path:
        assert m.source is not None
        name = volume_name(req.project_name, m.source)
        home = self.path / "volumes" / name
        labels = {**dict(m.labels), LABEL_OWNER: self.owner, LABEL_PROJECT_NAME: req.project_name,
                  LABEL_VOLUME: m.source}
        meta = home / "volume.json"
        if meta.exists():
            found = json.loads(meta.read_text())
            if any(found.get(k) != labels[k] for k in (LABEL_OWNER, LABEL_PROJECT_NAME, LABEL_VOLUME)):
                raise DriverError(f"lxc: volume {name} exists and is not project {req.project_name}'s "
                                  f"(labels {found}); remove or rename it")
        else:
            (home / "_data").mkdir(parents=True, exist_ok=True)
            write_file(meta, json.dumps(labels))
        return home / "_data"

    # ---- protocol: instances ------------------------------------------------------------------

    async def create(self, req: CreateRequest) -> Instance:
        name = req.name
        side = await self._side(name)
        if side is not None:

            if side["labels"].get(LABEL_INSTANCE) != req.instance_id or side["labels"].get(LABEL_OWNER) != self.owner:
                raise DriverError(f"lxc: create {name}: a container of that name exists and is not this instance")
            inst = await self._instance(name, side)
            if inst is not None and inst.state != InstanceState.RUNNING:
                await self.start(inst)
                inst = await self._instance(name, side)
            if inst is None:
                raise DriverError(f"lxc: create {name}: the container vanished")
            return inst
        spec = req.spec
        content_id = await self.images.content_id(spec.image, spec.image_id)
        for ref in spec.networks:  # an external network must be there before anything is made
            if ref.external and not await self.network_exists(ref.runtime(req.project_name)):
                raise DriverError(f"lxc: external network {ref.runtime(req.project_name)} (network {ref.name!r} "
                                  "of the manifest) does not exist; create it first")
        base = await self._base(spec.image, content_id)
        home = self._dir(name)
        if await trio.Path(home).exists():  # a create of this name a crash cut short (no sidecar yet): afresh
            await trio.to_thread.run_sync(lambda: shutil.rmtree(home, ignore_errors=True))
        try:
            await self._make(req, name, home, base)
            made = await self._side(name) or {}
            await self._journal_async("create", made, name)
            await self._start(name, made)
        except BaseException:
            with trio.move_on_after(30, shield=True):
                await self._destroy(name, journal=False)
            raise
        inst = await self._instance(name, await self._side(name) or {})
        if inst is None:
            raise DriverError(f"lxc: create {name}: the container vanished right after start")
        return inst

    async def _journal_async(self, action: str, side: dict[str, Any], name: str) -> None:
        await trio.to_thread.run_sync(self.journal.append, action, side.get("labels", {}), name)

    async def _make(self, req: CreateRequest, name: str, home: Path, base: Path) -> None:
        """The instance's directory, sidecar and LXC config (written last: ``lxc-ls`` lists a
        container by its config)."""

        spec = req.spec
        project_net = await self._ensure_net(project_network(req.project_id), {
            LABEL_OWNER: self.owner, LABEL_PROJECT: req.project_id, LABEL_PROJECT_NAME: req.project_name})
        nets = [project_net]
        for ref in spec.networks:
            runtime = ref.runtime(req.project_name)
            if ref.external:
                rec = await self._anet(runtime) or {"name": runtime, "bridge": runtime, "subnet": None}
            else:
                rec = await self._ensure_net(runtime, {LABEL_OWNER: self.owner, LABEL_PROJECT_NAME: req.project_name,
                                                       LABEL_NETWORK: ref.name})
            nets.append(rec)
        async with self.bridges.allocation:
            await trio.to_thread.run_sync(self._ensure_layout)
            addresses: dict[str, str] = {}
            for rec in nets:
                if rec.get("subnet"):
                    addresses[rec["name"]] = await self.bridges.free(rec)
            await trio.to_thread.run_sync(self._write_instance, req, name, home, base, nets, addresses)

    def _rootfs_copied(self) -> bool:
        """Whether instances get a copy of their base rather than an overlay (blocking: a thread's)."""
        if self._copy_rootfs is None:
            from mariposa.vault.delivery import filesystem_of

            self._copy_rootfs = filesystem_of(self.path) == "overlay"
            if self._copy_rootfs:
                log.warning("lxc: the LXC path is on overlayfs, which cannot hold an overlay's upper dir: "
                            "each instance gets a copy of its image instead", path=str(self.path))
        return self._copy_rootfs

    def _write_instance(self, req: CreateRequest, name: str, home: Path, base: Path,
                        nets: list[dict[str, Any]], addresses: dict[str, str]) -> None:
        spec = req.spec
        copy = self._rootfs_copied()
        if copy:
            (home / "delta").mkdir(parents=True)
            done = subprocess.run(["cp", "-a", f"{base}/.", str(home / "delta")], capture_output=True, text=True)
            if done.returncode != 0:
                raise DriverError(f"lxc: copy of the image for {name}: {done.stderr.strip()}")
        (home / "delta" / ".mariposa").mkdir(parents=True, exist_ok=True)
        (home / "log").mkdir()
        roots = [home / "delta", base]
        uid, gid = _passwd_lookup(roots, spec.user) if spec.user else (0, 0)
        out = home / "log" / "out"
        out.touch()
        os.chown(out, uid, gid)
        mounts: list[str] = []
        volumes: list[str] = []
        for m in spec.volumes:
            target = m.target.lstrip("/")
            ro = ",ro" if m.read_only else ""
            if m.type == "tmpfs":
                size = f",size={m.size}" if m.size else ""
                mounts.append(f"tmpfs {_fstab(target)} tmpfs create=dir{ro}{size} 0 0")
                continue
            assert m.source is not None
            if m.type == "volume":
                source = self._ensure_volume(req, m)
                volumes.append(volume_name(req.project_name, m.source))
            else:
                source = Path(m.source)
            kind = "dir" if source.is_dir() or not source.exists() else "file"
            mounts.append(f"{_fstab(str(source))} {_fstab(target)} none bind,create={kind}{ro} 0 0")
        if req.secrets_dir is not None:
            mounts.append(f"{_fstab(req.secrets_dir)} {SECRETS_TARGET} none bind,ro,create=dir 0 0")
        if req.mdata_dir is not None:
            mounts.append(f"{_fstab(req.mdata_dir)} {MDATA_TARGET} none bind,ro,create=dir 0 0")
        mounts.append(f"{_fstab(str(home / 'log'))} .mariposa/log none bind,create=dir 0 0")
        env = dict(spec.environment)
        env.setdefault("PATH", DEFAULT_PATH_ENV)
        for key, value in env.items():
            if "\n" in key + value:
                raise DriverError(f"lxc: environment variable {key} holds a newline, which LXC's config cannot carry")
        lines = [
            "# Made by mariposa (mariposa/drivers/lxc.py); labels are in mariposa.json beside this file.",
            f"lxc.uts.name = {spec.hostname or name}",
            f"lxc.rootfs.path = dir:{home / 'delta'}" if copy
            else f"lxc.rootfs.path = overlay:{base}:{home / 'delta'}",
            "lxc.autodev = 1",
            "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed",
            "lxc.tty.max = 0",
            f"lxc.log.file = {home / 'lxc.log'}",
            "lxc.log.level = INFO",
            f"lxc.hook.start-host = /bin/sh {self.path / 'hook.sh'} start {req.instance_id} {req.project_id} "
            f"{spec.name} {self.path / 'events.log'}",
            f"lxc.hook.post-stop = /bin/sh {self.path / 'hook.sh'} die {req.instance_id} {req.project_id} "
            f"{spec.name} {self.path / 'events.log'}",
        ]
        if spec.command is None:
            lines.append("lxc.init.cmd = /sbin/init")  # a system container: the image's init, SIGPWR halts it
            lines.append(f"lxc.console.logfile = {home / 'log' / 'out'}")  # its console is its log (LXC appends)
        else:
            script = ["#!/bin/sh", "exec >>/.mariposa/log/out 2>&1"]
            if spec.working_dir:
                script.append(f"cd {shlex.quote(spec.working_dir)} || exit 127")
            script.append("exec " + " ".join(shlex.quote(a) for a in spec.command))
            run = home / "delta" / ".mariposa" / "run"
            run.write_text("\n".join(script) + "\n")
            run.chmod(0o755)
            tini = next((t for t in TINI if os.path.exists(t)), None) if spec.init else None
            if tini is not None:
                mounts.append(f"{tini} .mariposa/init none bind,ro,create=file 0 0")
                lines.append("lxc.init.cmd = /.mariposa/init -s -g -- /.mariposa/run")
            else:
                lines.append("lxc.init.cmd = /.mariposa/run")
            lines.append(f"lxc.signal.halt = {spec.stop_signal or 'SIGTERM'}")
        if uid or gid:
            lines += [f"lxc.init.uid = {uid}", f"lxc.init.gid = {gid}"]
        if spec.working_dir:
            lines.append(f"lxc.init.cwd = {spec.working_dir}")
        lines += [f"lxc.environment = {k}={v}" for k, v in env.items()]
        lines += [f"lxc.mount.entry = {m}" for m in mounts]
        lines += _resource_keys(spec.memory, spec.cpus, self._v2)
        for i, rec in enumerate(nets):
            lines += [f"lxc.net.{i}.type = veth", f"lxc.net.{i}.link = {rec['bridge']}", f"lxc.net.{i}.flags = up",
                      f"lxc.net.{i}.name = eth{i}"]
            if rec["name"] in addresses:
                lines.append(f"lxc.net.{i}.ipv4.address = {addresses[rec['name']]}/{prefix(rec)}")
                lines.append(f"lxc.net.{i}.hwaddr = {_mac(addresses[rec['name']])}")
                if i == 0:
                    lines.append(f"lxc.net.{i}.ipv4.gateway = {gateway(rec)}")
        # The project's DNS responder (mariposa/dns/) answers on the gateway and forwards to the
        # manifest's ``dns`` servers, which follow it, for when the daemon is down; no ``search``
        # needed: it answers SERVICE as well as SERVICE.PROJECT.
        servers = (gateway(nets[0]), *spec.dns)
        resolv = home / "delta" / "etc" / "resolv.conf"
        resolv.parent.mkdir(parents=True, exist_ok=True)
        if resolv.is_symlink():  # e.g. to systemd-resolved's stub: the overlay's own file instead
            resolv.unlink()
        resolv.write_text("".join(f"nameserver {d}\n" for d in servers)
                          + (f"search {' '.join(spec.dns_search)}\n" if spec.dns_search else ""))
        side = {
            "labels": req.labels(),
            "compute_type": self.compute_type,
            "networks": [rec["name"] for rec in nets],
            "addresses": addresses,
            "address": addresses.get(nets[0]["name"]),
            "volumes": volumes,
            "user": [uid, gid],
            "environment": env,
            "stop_timeout": spec.stop_timeout,
            "image_root": str(base),
        }
        write_file(home / "mariposa.json", json.dumps(side), 0o600)
        write_file(home / "config", "\n".join(lines) + "\n", 0o600)

    async def _start(self, name: str, side: dict[str, Any]) -> None:
        labels = side.get("labels", {})
        home = self._dir(name)
        # the project's bridge may have gone with a remove_network since the instance stopped
        for attempt in range(2):
            for network in side.get("networks", ()):
                rec = await self._anet(network)
                if network == project_network(labels.get(LABEL_PROJECT, "")):
                    await self.ensure_network(labels.get(LABEL_PROJECT, ""), labels.get(LABEL_PROJECT_NAME, ""))
                elif rec is not None and "labels" in rec:
                    await self._ensure_net(network, rec["labels"])
            await trio.to_thread.run_sync(_prepare_start, home)
            code, out = await self._run("lxc-start", "-P", str(self.path), "-n", name, check=False)
            if code == 0:
                return
            detail = await trio.to_thread.run_sync(_log_errors, home / "lxc.log")
            if attempt == 0 and ("bridge" in detail.lower() or "link" in detail.lower()):
                for network in side.get("networks", ()):
                    self.bridges.forget(network)  # removed behind our back: made again
                continue
            raise DriverError(f"lxc: start {name}: {detail or out or f'exit {code}'}")

    async def _destroy(self, name: str, journal: bool = True) -> None:
        side = await self._side(name) or {}
        if await self._state(name) not in (None, "STOPPED"):
            await self._run("lxc-stop", "-P", str(self.path), "-n", name, "-k", check=False)
        await trio.to_thread.run_sync(self._remove_home, name)
        await trio.to_thread.run_sync(_remove_cgroups, name)
        if journal and side:
            await self._journal_async("destroy", side, name)

    def _remove_home(self, name: str) -> None:
        """Take the directory out of LXC's sight in one rename, then delete it. Every ``lxc-*``
        tool that reads a container's config creates its ``lxc.log.file``'s directory (mkdir -p):
        an ``lxc-ls -f`` or ``lxc-info`` of the inventory during a plain rmtree of a big rootfs
        made the directory again, holding just ``lxc.log``, and it stayed for good. One that read
        the config just before the rename can still do so, a moment later: that is swept here."""
        home = self._dir(name)
        trash = self.path / REMOVING / f"{name}.{secrets.token_hex(4)}"
        trash.parent.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.rename(home, trash)
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            if not (home / "config").exists():
                shutil.rmtree(home)

    async def _state(self, name: str) -> str | None:
        """LXC's word for the container's state; None when there is no such container."""
        code, out = await self._run("lxc-info", "-P", str(self.path), "-n", name, "-s", "-H", check=False)
        return out.strip() if code == 0 else None

    async def _instance(self, name: str, side: dict[str, Any], state: str | None = None) -> Instance | None:
        if state is None:
            state = await self._state(name)
            if state is None:
                return None
        return await trio.to_thread.run_sync(self._build, name, side, state)

    def _build(self, name: str, side: dict[str, Any], state: str) -> Instance | None:
        """An ``Instance`` from its sidecar, LXC's state and the files beside the config (reads
        files: run in a worker thread)."""
        found = identity_from_labels(side.get("labels", {}))
        if found is None:
            return None
        home = self._dir(name)
        mapped = _STATES.get(state, InstanceState.UNKNOWN)
        exit_code = None
        if mapped == InstanceState.EXITED:
            if not (home / "started").exists():
                mapped = InstanceState.CREATING  # made, never started
            else:
                exit_code = _exit_code(home)
                if exit_code is None:
                    mapped = InstanceState.STOPPING  # the monitor is still tearing down
        if "created" not in found:
            try:
                found["created"] = (home / "config").stat().st_mtime
            except OSError:
                found["created"] = 0.0
        return Instance(**found, runtime_id=name, name=name, state=mapped, exit_code=exit_code,
                        address=side.get("address") if mapped == InstanceState.RUNNING else None,
                        compute_type=self.compute_type)

    async def start(self, inst: Instance) -> None:
        side = await self._side(inst.runtime_id)
        state = await self._state(inst.runtime_id)
        if side is None or state is None:
            raise DriverError(f"lxc: start {inst.name}: no such container")
        if state in ("RUNNING", "STARTING"):
            return
        await self._start(inst.runtime_id, side)

    async def stop(self, inst: Instance, timeout: int | None = None) -> None:
        name = inst.runtime_id
        side = await self._side(name)
        state = await self._state(name)
        if side is None or state in (None, "STOPPED"):
            return
        if timeout is None:
            timeout = side.get("stop_timeout")
            timeout = DEFAULT_STOP_TIMEOUT if timeout is None else int(timeout)
        argv = ["lxc-stop", "-P", str(self.path), "-n", name]
        argv += ["-k"] if timeout == 0 else ["-t", str(int(timeout) if timeout > 0 else -1)]
        code, out = await self._run(*argv, check=False)
        if code != 0 and await self._state(name) not in (None, "STOPPED"):
            raise DriverError(f"lxc: stop {inst.name}: {out}")
        await self._journal_async("stop", side, name)

    async def signal(self, inst: Instance, name: str) -> None:
        number = _signal_number(name)
        state = await self._state(inst.runtime_id)
        if state is None:
            return
        if state != "RUNNING":
            raise DriverError(f"lxc: signal {inst.name}: it is not running ({state.lower()})")
        code, out = await self._run("lxc-info", "-P", str(self.path), "-n", inst.runtime_id, "-p", "-H", check=False)
        if code != 0 or not out.strip().isdigit():
            raise DriverError(f"lxc: signal {inst.name}: no init process ({out})")
        try:
            os.kill(int(out.strip()), number)
        except ProcessLookupError:
            raise DriverError(f"lxc: signal {inst.name}: it is not running") from None

    async def remove(self, inst: Instance) -> None:
        if await self._side(inst.runtime_id) is None and not await trio.Path(self._dir(inst.runtime_id)).exists():
            return
        await self._destroy(inst.runtime_id)
        self._pids.pop(inst.runtime_id, None)

    async def inventory(self, project_id: str | None = None) -> list[Instance]:
        sides = await trio.to_thread.run_sync(self._all_sidecars)
        sides = {n: s for n, s in sides.items()
                 if project_id is None or s["labels"].get(LABEL_PROJECT) == project_id}
        if not sides:
            return []
        states = await self._states()

        def build() -> list[Instance]:
            # no state: no config, a create half made or a remove half done
            made = (self._build(name, side, states[name]) for name, side in sorted(sides.items()) if name in states)
            return [inst for inst in made if inst is not None]

        return await trio.to_thread.run_sync(build)

    async def _states(self) -> dict[str, str]:
        """Every container's state under the path, in one ``lxc-ls`` call."""
        code, out = await self._run("lxc-ls", "-P", str(self.path), "-f", "-F", "NAME,STATE", check=False)
        if code != 0:
            raise RuntimeUnavailable(f"lxc: lxc-ls -P {self.path}: {out}")
        states = {}
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2:
                states[parts[0]] = parts[1]
        return states

    def events(self, since: str | None = None) -> AsyncIterator[DriverEvent]:
        return self.journal.events(since)

    async def exec(self, inst: Instance, argv: list[str], timeout: float, user: str | None = None
                   ) -> tuple[int, bytes]:
        name = inst.runtime_id
        side = await self._side(name)
        if side is None or await self._state(name) != "RUNNING":
            raise DriverError(f"lxc: exec in {inst.name}: it is not running")
        if user is None:
            uid, gid = side.get("user") or (0, 0)
        else:
            uid, gid = _passwd_lookup([self._dir(name) / "delta", Path(side.get("image_root", "/nonexistent"))], user)
        cmd = ["lxc-attach", "-P", str(self.path), "-n", name, "--clear-env", "-u", str(uid), "-g", str(gid)]
        for key, value in (side.get("environment") or {}).items():
            cmd += ["-v", f"{key}={value}"]
        cmd += ["--", *argv]
        return await _attached(cmd, timeout)

    async def address(self, inst: Instance) -> str | None:
        side = await self._side(inst.runtime_id)
        if side is None or await self._state(inst.runtime_id) != "RUNNING":
            return None
        return side.get("address")

    async def stats(self, inst: Instance) -> InstanceStats | None:
        """From the container's cgroup (``lxc.payload.NAME``: CPU, memory and its limits, block
        I/O) and its init's network namespace (drivers/kernelstats.py); None when it is not
        running, is frozen or is gone."""
        name = inst.runtime_id
        marker = f"lxc.payload.{name}"
        pid = self._pids.get(name)
        if pid is not None:
            got = await self._read(pid, marker)
            if isinstance(got, InstanceStats) or got is kernelstats.FROZEN:
                return got if isinstance(got, InstanceStats) else None
            self._pids.pop(name, None)  # stopped, or started again since: a new init
        code, out = await self._run("lxc-info", "-P", str(self.path), "-n", name, "-p", "-H", check=False)
        if code != 0 or not out.strip().isdigit():
            return None  # not running (no init pid) or no such container
        got = await self._read(int(out.strip()), marker)
        if got is None or got is kernelstats.GONE:
            return None
        self._pids[name] = int(out.strip())
        return got if isinstance(got, InstanceStats) else None

    async def logs(self, inst: Instance, since: float | None = None, tail: int | None = None,
                   follow: bool = False) -> AsyncGenerator[LogLine, None]:
        home = self._dir(inst.runtime_id)
        if not await trio.Path(home / "log" / "out").exists():
            raise DriverError(f"lxc: logs of {inst.name}: no such container")
        lines, offset = await trio.to_thread.run_sync(read_log, home / "log", 0, not follow)
        picked = [line for line in lines if since is None or line.when >= since]
        if tail is not None:
            picked = picked[-tail:] if tail > 0 else []
        for line in picked:
            yield line
        if not follow:
            return
        while True:
            running = await self._state(inst.runtime_id) in ("RUNNING", "STARTING", "STOPPING")
            more, offset = await trio.to_thread.run_sync(read_log, home / "log", offset, not running)
            for line in more:
                if since is None or line.when >= since:
                    yield line
            if not running:
                return
            await trio.sleep(0.1)


_ENDED = re.compile(rb"Child <\d+> ended on (error|signal) [A-Za-z0-9]*\(?(\d+)\)")


def _exit_code(home: Path) -> int | None:
    """The last run's exit code: the post-stop hook's ``exit`` file; None while the hook may still
    come (LXC's log written in the last ``HOOK_GRACE`` seconds); else, for a monitor that died
    before its hook, LXC's own log line, and no such line is an exit 0 (LXC logs only failures)."""
    try:
        return int((home / "exit").read_text().strip())
    except (OSError, ValueError):
        pass
    try:
        if time.time() - (home / "lxc.log").stat().st_mtime < HOOK_GRACE:
            return None  # LXC says STOPPED a moment before it logs the exit and runs the hook
        found = _ENDED.findall((home / "lxc.log").read_bytes())
    except OSError:
        return None
    if not found:
        return 0
    kind, number = found[-1]
    return int(number) + (128 if kind == b"signal" else 0)


def _prepare_start(home: Path) -> None:
    """Before each start: this run's LXC log only (the exit code is its last word), no exit code
    of the run before, and the mark that the instance was started once (else it is CREATING)."""
    (home / "lxc.log").write_bytes(b"")
    (home / "exit").unlink(missing_ok=True)
    (home / "started").touch()


def _log_errors(path: Path) -> str:
    try:
        rows = [r for r in path.read_text(errors="replace").splitlines() if " ERROR " in r]
    except OSError:
        return ""
    return "; ".join(r.split(" - ", 2)[-1] for r in rows[-3:] if "seccomp" not in r)


def _remove_cgroups(name: str) -> None:
    """The empty ``lxc.monitor.NAME`` and ``lxc.payload.NAME`` cgroups LXC can leave behind."""
    root = Path("/sys/fs/cgroup")
    for pattern in (f"lxc.monitor.{name}", f"lxc.payload.{name}", f"*/lxc.monitor.{name}", f"*/lxc.payload.{name}"):
        for d in root.glob(pattern):
            try:
                os.rmdir(d)
            except OSError:
                pass


def _du(path: Path) -> int | None:
    total = 0
    try:
        for root, _dirs, files in os.walk(path):
            for f in files:
                try:
                    st = os.lstat(os.path.join(root, f))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    except OSError:
        return None
    return total


async def _attached(cmd: list[str], timeout: float) -> tuple[int, bytes]:
    """``lxc-attach``'s exit code and output (stderr in it), within ``timeout`` seconds.

    Why not ``trio.run_process(capture_stdout=True)``: it reads until every holder of the pipe
    closes it, and a process the command left behind in the container (a daemon it started) holds
    it for as long as it lives, so the call outlived its timeout, cancelled or not. Here the output
    is read until ``lxc-attach`` exits and for a moment after (what was still in the pipe), then
    the pipe is closed whoever still holds it. At the timeout the command and what it started are
    killed, then ``lxc-attach`` if it is still there."""
    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    chunks: list[bytes] = []

    async def read(scope: trio.CancelScope) -> None:
        with scope:
            while data := await proc.stdout.receive_some(65536):  # type: ignore[union-attr]
                chunks.append(bytes(data))

    try:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                reading = trio.CancelScope()
                nursery.start_soon(read, reading)
                code = await proc.wait()
                reading.deadline = trio.current_time() + 0.5
    finally:
        if proc.returncode is None:
            with trio.CancelScope(shield=True):
                # the command first, while lxc-attach lives to reap it: killed first, lxc-attach
                # would leave it to the host's PID 1 (the reaper of lxc-attach's namespace), and
                # where that never reaps (a container's "sleep"), the zombie held the container
                # from stopping for good
                for pid in await trio.to_thread.run_sync(_attached_processes, proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signals.SIGKILL)
                with trio.move_on_after(2):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    with trio.move_on_after(5):
                        await proc.wait()
        await proc.stdout.aclose()
    return code, b"".join(chunks)


def _attached_processes(root: int) -> list[int]:
    """The descendants of ``lxc-attach`` (pid ``root``) inside the container: those in another PID
    namespace than its own (blocking: reads /proc)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    found, todo = [], [root]
    while todo:
        parent = todo.pop()
        kids = [pid for pid, ppid in parents.items() if ppid == parent]
        found += kids
        todo += kids
    try:
        own = os.readlink(f"/proc/{root}/ns/pid")
    except OSError:
        return []
    inside = []
    for pid in found:
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != own:
                inside.append(pid)
        except OSError:
            continue
    return inside
