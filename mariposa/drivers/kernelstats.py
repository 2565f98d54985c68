"""An instance's counters read from the kernel itself: its cgroup's files and its network
namespace's ``/proc/PID/net/dev`` (Docker and LXC), or one process's ``/proc`` files (QEMU).

Why not the runtimes' own stats: a reading here is a dozen small file reads (about 0.2 ms of
CPU), where the Docker Engine's one-shot stats cost 6-9 ms a container, most of it the Engine's
(figures in drivers/docker_stats.py), and LXC has no API but ``lxc-info`` (a fork and exec per
reading). The numbers are the ones ``docker stats`` shows, from the same files.

Which files: cgroup v2 (``cpu.stat``, ``memory.current``, ``memory.stat``, ``memory.max``,
``cpu.max``, ``io.stat``), v1 (``cpuacct.usage``, ``memory.usage_in_bytes``, ``memory.stat``,
``memory.limit_in_bytes``, ``cpu.cfs_quota_us``/``cpu.cfs_period_us``,
``blkio.throttle.io_service_bytes_recursive``), or the hybrid of both that a host without systemd
often has (v1 controllers, an empty v2 tree beside them): each counter is read from the v1
controller when one is mounted, else from the v2 tree. The mounts come from
``/proc/self/mountinfo``, once.

Memory "in use" is usage minus the inactive file cache (``inactive_file``, v1
``total_inactive_file``), which is what ``docker stats`` shows: page cache the kernel drops at
the first pressure is not what a service needs.

Everything here blocks (file reads): callers run ``read_cgroup`` and ``read_process`` in a worker
thread, through a ``Batched``: the readings a collector asks for at the same moment (one task per
instance) share one worker thread, since a thread hand-off costs as much as a reading (0.15 ms).
A process that is gone, or no longer in the cgroup the caller expects
(its pid was used again), gives ``GONE``; the caller asks its runtime again.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
import trio

from mariposa.model import InstanceStats

# memory.limit_in_bytes without a limit is PAGE_COUNTER_MAX pages (9223372036854771712 on x86-64);
# anything this large is no limit a service was given
_NO_LIMIT = 1 << 60
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


T = TypeVar("T")


class Batched(Generic[T]):
    """Calls of one blocking function made in the same scheduling pass of the trio loop, run
    together in one worker thread. The first caller waits one pass for the others to join; a
    batch cut short (its first caller cancelled) gives the others ``failed``."""

    def __init__(self, fn: Callable[..., T], failed: T) -> None:
        self._fn = fn
        self._failed = failed
        self._open: tuple[list[tuple[Any, ...]], list[T], trio.Event] | None = None

    async def __call__(self, *args: Any) -> T:
        if self._open is not None:
            calls, results, done = self._open
            key = len(calls)
            calls.append(args)
            await done.wait()
            return results[key] if key < len(results) else self._failed
        calls, results, done = self._open = ([args], [], trio.Event())
        try:
            await trio.sleep(0)  # the others of this moment join
            self._open = None
            results.extend(await trio.to_thread.run_sync(lambda: [self._fn(*a) for a in calls]))
        finally:
            if self._open is not None and self._open[2] is done:
                self._open = None
            done.set()
        return results[0]


class Gone:
    """The process is not there, or not the instance's any more (see the module docstring); or,
    as ``FROZEN``, its cgroup is frozen (a paused instance: no reading, and the pid stays good)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


GONE = Gone("GONE")
FROZEN = Gone("FROZEN")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def names(path: str, marker: str) -> bool:
    """Whether a component of cgroup ``path`` names ``marker``: is it, or holds it followed by
    no more name characters (``docker/ID``, ``docker-ID.scope``, ``lxc.payload.NAME``; not
    ``lxc.payload.NAME0``, another container's)."""
    for part in path.split("/"):
        at = part.find(marker)
        while at >= 0:
            end = at + len(marker)
            if end == len(part) or part[end] not in _NAME_CHARS:
                return True
            at = part.find(marker, at + 1)
    return False


@attrs.frozen
class Mounts:
    """Where the cgroup hierarchies are mounted: ``v1`` maps a controller to (mount point, the
    mount's root in the hierarchy); ``v2`` is the unified tree's (mount point, root), if any."""

    v1: dict[str, tuple[str, str]]
    v2: tuple[str, str] | None


def parse_mountinfo(text: str) -> Mounts:
    """The cgroup mounts of a ``/proc/self/mountinfo`` (pure)."""
    v1: dict[str, tuple[str, str]] = {}
    v2 = None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2" and v2 is None:
            v2 = (point, root)
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in ("cpu", "cpuacct", "memory", "blkio", "freezer") and option not in v1:
                    v1[option] = (point, root)
    return Mounts(v1, v2)


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


@functools.cache
def host_mounts() -> Mounts:
    with open("/proc/self/mountinfo") as f:
        return parse_mountinfo(f.read())


@functools.cache
def _host_netns() -> str:
    return os.readlink("/proc/self/ns/net")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` as {controller: path}; the v2 entry (``0::PATH``) under ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            out[""] = parts[2]
        else:
            for controller in parts[1].split(","):
                out[controller] = parts[2]
    return out


def _dir(mount: tuple[str, str] | None, path: str | None) -> str | None:
    """The directory of cgroup ``path`` under ``mount``; None when the process's cgroup is not
    below the mount's root (another cgroup namespace: then the caller's fallback reads)."""
    if mount is None or path is None:
        return None
    point, root = mount
    if root != "/":
        if path != root and not path.startswith(root.rstrip("/") + "/"):
            return None
        path = path[len(root):]
    return point.rstrip("/") + "/" + path.lstrip("/")


def _read(path: str) -> str:
    # os.read, not open(): a third of the cost, and these files are small and read whole
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 16).decode()
    finally:
        os.close(fd)


def keyed(text: str, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed file (``memory.stat``, ``cpu.stat``: "key value" per
    line), without splitting the other lines."""
    at = text.find(key + " ")
    while at > 0 and text[at - 1] != "\n":
        at = text.find(key + " ", at + 1)
    if at < 0:
        return None
    return int(text[at + len(key) + 1:].split("\n", 1)[0])


def parse_io_stat(text: str) -> tuple[int, int]:
    """v2 ``io.stat`` ("MAJ:MIN rbytes=N wbytes=N ..." per device): (read, written) summed."""
    read = written = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                written += int(value)
    return read, written


def parse_blkio(text: str) -> tuple[int, int]:
    """v1 ``blkio.*io_service_bytes*`` ("MAJ:MIN Read N" per device and operation): summed."""
    read = written = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                read += int(parts[2])
            elif parts[1] == "Write":
                written += int(parts[2])
    return read, written


def parse_net_dev(text: str) -> tuple[int, int]:
    """``/proc/PID/net/dev``: (received, sent) bytes over every interface but ``lo``."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            continue
        fields = counters.split()
        if len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def _limit(text: str) -> int | None:
    text = text.strip()
    if text == "max" or not text.isdigit() or int(text) >= _NO_LIMIT:
        return None
    return int(text)


def _cores(quota: str, period: str) -> float | None:
    if quota.strip() in ("max", "-1") or not period.strip().isdigit() or int(period) <= 0:
        return None
    return int(quota) / int(period)


def read_cgroup(pid: int, marker: str, mounts: Mounts | None = None,
                proc: str = "/proc") -> InstanceStats | Gone | None:
    """One reading of the cgroup that process ``pid`` is in, which must name ``marker`` (see
    ``names``: the container's id, ``lxc.payload.NAME``; a pid used again by another process is
    not the instance's). ``mounts`` and ``proc``: the host's, unless a test gives a tree of its own.
    ``GONE``: the process is not there or not the instance's; None: the cgroup's files cannot be
    read from here (another cgroup namespace, no such controller): the caller asks its runtime.
    A frozen (paused) cgroup gives ``FROZEN``: a paused instance is not running. Blocking."""
    try:
        groups = parse_proc_cgroup(_read(f"{proc}/{pid}/cgroup"))
    except (FileNotFoundError, ProcessLookupError):
        return GONE
    except OSError:
        return None
    v2path = groups.get("")
    if not any(names(path, marker) for path in groups.values() if path):
        return GONE
    mounts = mounts or host_mounts()
    when = time.time()
    v2 = _dir(mounts.v2, v2path)

    def v1(controller: str) -> str | None:
        return _dir(mounts.v1.get(controller), groups.get(controller))

    try:
        freezer = v1("freezer")
        if freezer is not None:
            if _read(f"{freezer}/freezer.state").strip() != "THAWED":
                return FROZEN
        elif v2 is not None and "frozen 1" in _read(f"{v2}/cgroup.events"):
            return FROZEN
        if (d := v1("cpuacct")) is not None:
            cpu_ns = int(_read(f"{d}/cpuacct.usage"))
        elif v2 is not None:
            usec = keyed(_read(f"{v2}/cpu.stat"), "usage_usec")
            if usec is None:
                return None
            cpu_ns = usec * 1000
        else:
            return None
        cpu_limit = None
        if (d := v1("cpu")) is not None:
            cpu_limit = _cores(_read(f"{d}/cpu.cfs_quota_us"), _read(f"{d}/cpu.cfs_period_us"))
        elif v2 is not None and os.path.exists(f"{v2}/cpu.max"):
            quota, _, period = _read(f"{v2}/cpu.max").partition(" ")
            cpu_limit = _cores(quota, period)
        if (d := v1("memory")) is not None:
            inactive = keyed(_read(f"{d}/memory.stat"), "total_inactive_file") or 0
            memory = int(_read(f"{d}/memory.usage_in_bytes")) - inactive
            memory_limit = _limit(_read(f"{d}/memory.limit_in_bytes"))
        elif v2 is not None and os.path.exists(f"{v2}/memory.current"):
            inactive = keyed(_read(f"{v2}/memory.stat"), "inactive_file") or 0
            memory = int(_read(f"{v2}/memory.current")) - inactive
            memory_limit = _limit(_read(f"{v2}/memory.max"))
        else:
            return None
        block = (0, 0)
        if (d := v1("blkio")) is not None:
            block = parse_blkio(_read(f"{d}/blkio.throttle.io_service_bytes_recursive"))
        elif v2 is not None and os.path.exists(f"{v2}/io.stat"):
            block = parse_io_stat(_read(f"{v2}/io.stat"))
        net = _net(pid, proc)
    except (FileNotFoundError, ProcessLookupError):
        return GONE  # it stopped while being read: its cgroup went
    except (OSError, ValueError):
        return None
    if net is None:
        return GONE
    return InstanceStats(when=when, cpu_ns=cpu_ns, memory=max(0, memory), memory_limit=memory_limit,
                         cpu_limit=cpu_limit, net_rx=net[0], net_tx=net[1], block_read=block[0],
                         block_write=block[1])


def _net(pid: int, proc: str = "/proc") -> tuple[int, int] | None:
    """The bytes through the network namespace of ``pid``; (0, 0) on the host's own (a container
    on the host's network has none of its own to count); None when the process is gone."""
    try:
        if os.readlink(f"{proc}/{pid}/ns/net") == _host_netns():
            return 0, 0
        return parse_net_dev(_read(f"{proc}/{pid}/net/dev"))
    except (FileNotFoundError, ProcessLookupError):
        return None


def parse_proc_stat_cpu(text: str) -> int:
    """utime + stime of a ``/proc/PID/stat``, in nanoseconds (the name in parentheses may hold
    blanks, so fields are counted after its closing one)."""
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // _CLOCK_TICKS


def parse_vm_rss(text: str) -> int:
    """``VmRSS`` of a ``/proc/PID/status``, in bytes."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def read_process(pid: int) -> tuple[int, int] | Gone:
    """(CPU ns, resident bytes) of one process; ``GONE`` when it is not there. Blocking."""
    try:
        return parse_proc_stat_cpu(_read(f"/proc/{pid}/stat")), parse_vm_rss(_read(f"/proc/{pid}/status"))
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return GONE


def read_iface(name: str) -> tuple[int, int] | None:
    """(rx, tx) bytes of a host interface (``/sys/class/net/NAME/statistics``); None when it is gone."""
    try:
        base = f"/sys/class/net/{name}/statistics"
        return int(_read(f"{base}/rx_bytes")), int(_read(f"{base}/tx_bytes"))
    except (OSError, ValueError):
        return None
