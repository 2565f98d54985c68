"""The Docker driver's ``stats``: a container's counters, from its cgroup files when the Engine is
on this host, else from the Engine's one-shot stats.

Why the cgroup files by default: measured on this project's 2-core test host (Engine 20.10,
cgroup v1, idle busybox containers, ``tests/bench/bench_metrics.py``, medians), a round of
readings of all of them at once costs

- from the cgroup files: 0.34-0.36 ms of the daemon's CPU a container (20 and 100 containers) and
  nothing of the Engine's; 0.03 s of wall time for 100;
- from ``GET /containers/ID/stats?stream=false&one-shot=true``: 6.1-8.7 ms a container (2-3 ms
  the daemon's HTTP and JSON, the rest dockerd's, containerd's and the shims'), and 1.1 s (20)
  to 4.4 s (100) of wall time: the Engine's collector ticks once a second and every one-shot call
  waits for a tick, holding one of the driver's 32 pooled connections meanwhile;
- (the peer, ``docker stats --no-stream`` of the same 100: 6.8 ms a container, 3 s);

so the files are about 20 times cheaper, leave the Engine and the connection pool alone, and are
the default. The numbers are the same ones ``docker stats`` shows, read from the same files
(drivers/kernelstats.py).

Finding the cgroup: the container's init pid (``State.Pid`` of an inspect) is cached per container;
each reading checks that the pid is still alive and still in a cgroup that names the container
(``/proc/PID/cgroup``), so a restart (a new pid) or a pid used again by another process is
noticed at the next reading, which inspects again. The Engine is asked for stats instead when the
Engine is not local (``tcp://``), or when the files cannot be read from here (the daemon in
another cgroup or pid namespace than the Engine's containers): three fresh pids that do not lead
to a running container's cgroup, with none that ever did, switch the driver to the API for good.

A container that is not running, paused, or that vanishes half way through a reading gives None,
never an error: it may have stopped a moment ago. (Through the API, a container paused after its
first reading still gives readings, with its CPU flat: the Engine's stats do not say paused, and an
inspect per reading would double the cost of the slow path.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import httpx

from mariposa.drivers import kernelstats
from mariposa.drivers.base import DriverError
from mariposa.model import InstanceStats

Call = Callable[..., Awaitable[httpx.Response]]
SOURCES = ("auto", "cgroup", "api")


def _inspect_limit(host: Mapping[str, Any]) -> float | None:
    """Cores from an inspect's ``HostConfig`` (``--cpus`` is NanoCpus; ``--cpu-quota`` the other way)."""
    if host.get("NanoCpus"):
        return int(host["NanoCpus"]) / 1e9
    quota, period = host.get("CpuQuota") or 0, host.get("CpuPeriod") or 100_000
    return quota / period if quota > 0 else None


def from_api(data: Mapping[str, Any], host_memory: int | None, cpu_limit: float | None) -> InstanceStats | None:
    """One reading from the Engine's stats JSON (pure); None for a container that is not running
    (the Engine then answers with zeros and a zero ``read`` time). Memory in use is usage minus
    the inactive file cache, as ``docker stats`` shows it; a limit equal to the host's memory is
    the Engine's way of saying none."""
    read = str(data.get("read") or "")
    if not read or read.startswith("0001-"):
        return None
    memory_stats = data.get("memory_stats") or {}
    mstat = memory_stats.get("stats") or {}
    inactive = mstat.get("total_inactive_file", mstat.get("inactive_file", 0)) or 0
    limit = memory_stats.get("limit")
    if not limit or (host_memory is not None and limit >= host_memory) or limit >= 1 << 60:
        limit = None
    rx = tx = 0
    for counters in (data.get("networks") or {}).values():
        rx += int(counters.get("rx_bytes", 0))
        tx += int(counters.get("tx_bytes", 0))
    blk_read = blk_write = 0
    for entry in (data.get("blkio_stats") or {}).get("io_service_bytes_recursive") or ():
        op = str(entry.get("op", "")).lower()
        if op == "read":
            blk_read += int(entry.get("value", 0))
        elif op == "write":
            blk_write += int(entry.get("value", 0))
    cpu_ns = int(((data.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage", 0))
    return InstanceStats(
        when=_parse_time(read), cpu_ns=cpu_ns,
        memory=max(0, int(memory_stats.get("usage", 0)) - int(inactive)), memory_limit=limit, cpu_limit=cpu_limit,
        net_rx=rx, net_tx=tx, block_read=blk_read, block_write=blk_write)


def _parse_time(stamp: str) -> float:
    """The Engine's RFC 3339 time with nanoseconds, as epoch seconds."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    try:
        base = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return 0.0
    return base + (float("0." + frac[:9]) if frac.isdigit() else 0.0)


class DockerStats:
    """The readings of one driver: the pid cache and the choice of source (see the module docstring).

    ``source``: "auto" (cgroup files when the Engine is local and they can be read, else the
    API), "cgroup" (files only: a container they cannot be read for gives None; for the benchmark)
    or "api" (the Engine's one-shot stats only)."""

    def __init__(self, call: Call, local: bool, source: str = "auto") -> None:
        if source not in SOURCES:
            raise ValueError(f"stats source {source!r}: one of {', '.join(SOURCES)}")
        self._call = call
        self.source = source if local or source == "api" else "api"
        self._pids: dict[str, int] = {}  # runtime id -> init pid, checked at each reading
        self._limits: dict[str, float | None] = {}  # runtime id -> cores, for the API's readings
        self._host_memory: int | None = None
        self._files_work = False  # a reading came from the cgroup files
        self._misses = 0  # fresh pids that did not lead to the files while the container ran
        self._read = kernelstats.Batched(kernelstats.read_cgroup, None)

    async def read(self, runtime_id: str) -> InstanceStats | None:
        if self.source != "api":
            pid = self._pids.get(runtime_id)
            if pid is not None:
                got = await self._read(pid, runtime_id)
                if isinstance(got, InstanceStats):
                    return got
                if got is kernelstats.FROZEN:
                    return None  # paused
                self._pids.pop(runtime_id, None)  # restarted or gone: ask the Engine again
            inspect = await self._inspect(runtime_id)
            if inspect is None:
                return None
            state = inspect.get("State") or {}
            pid = int(state.get("Pid") or 0)
            if not state.get("Running") or state.get("Paused") or pid <= 0:
                return None
            got = await self._read(pid, runtime_id)
            if isinstance(got, InstanceStats):
                self._pids[runtime_id] = pid
                self._files_work = True
                return got
            if self.source == "cgroup" or got is kernelstats.FROZEN:
                return None
            # A pid the Engine has just given that does not lead to the container's files: the
            # Engine's containers are not where this process can see them (another pid or cgroup
            # namespace), or it restarted a moment ago. Three of those, and never a reading from
            # the files, and the API it is.
            reading = await self._from_api(runtime_id, _inspect_limit(inspect.get("HostConfig") or {}))
            if reading is not None and not self._files_work:
                self._misses += 1
                if self._misses >= 3:
                    self.source = "api"
            return reading
        if runtime_id not in self._limits:
            inspect = await self._inspect(runtime_id)
            if inspect is None:
                return None
            state = inspect.get("State") or {}
            if not state.get("Running") or state.get("Paused"):
                return None
            self._limits[runtime_id] = _inspect_limit(inspect.get("HostConfig") or {})
        reading = await self._from_api(runtime_id, self._limits[runtime_id])
        if reading is None:
            self._limits.pop(runtime_id, None)  # stopped: its limits are asked again at its next start
        return reading

    async def _inspect(self, runtime_id: str) -> dict[str, Any] | None:
        try:
            resp = await self._call("GET", f"/containers/{runtime_id}/json", "inspect for stats", allow=(404,))
        except DriverError:
            return None
        return resp.json() if resp.status_code == 200 else None

    async def _from_api(self, runtime_id: str, cpu_limit: float | None) -> InstanceStats | None:
        if self._host_memory is None:
            info = (await self._call("GET", "/info", "info")).json()
            self._host_memory = int(info.get("MemTotal") or 0) or None
        try:
            resp = await self._call("GET", f"/containers/{runtime_id}/stats", "stats",
                                    params={"stream": "false", "one-shot": "true"}, allow=(404, 409))
        except DriverError:
            return None
        if resp.status_code != 200:
            return None
        data = resp.json()
        return from_api(data, self._host_memory, cpu_limit)

    def forget(self, runtime_id: str) -> None:
        """Drop what is cached of a removed container."""
        self._pids.pop(runtime_id, None)
        self._limits.pop(runtime_id, None)
