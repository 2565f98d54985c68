"""The pure parts of the drivers' stats: the kernel's files (drivers/kernelstats.py), the Engine's
stats JSON (drivers/docker_stats.py), and the batching of worker-thread readings. The file
readers themselves run on real cgroups in the contract and Docker driver tests."""

from __future__ import annotations

import threading

import trio

from mariposa.drivers import kernelstats as k
from mariposa.drivers.docker_stats import from_api
from mariposa.model import InstanceStats

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 /outer /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_mounts_of_a_hybrid_host_and_paths_below_them():
    mounts = k.parse_mountinfo(HYBRID)
    assert mounts.v2 == ("/sys/fs/cgroup/unified", "/")
    assert mounts.v1 == {"cpu": ("/sys/fs/cgroup/cpu", "/"), "cpuacct": ("/sys/fs/cgroup/cpuacct", "/"),
                         "memory": ("/sys/fs/cgroup/memory", "/outer")}
    groups = k.parse_proc_cgroup("4:memory:/outer/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/docker/abc\n")
    assert groups == {"memory": "/outer/docker/abc", "cpu": "/docker/abc", "cpuacct": "/docker/abc", "": "/docker/abc"}
    assert k._dir(mounts.v1["memory"], groups["memory"]) == "/sys/fs/cgroup/memory/docker/abc"
    assert k._dir(mounts.v1["memory"], "/elsewhere/x") is None  # not below the mount: another namespace
    assert k._dir(mounts.v2, groups[""]) == "/sys/fs/cgroup/unified/docker/abc"


def test_a_cgroup_path_names_its_container_and_no_other():
    cid = "62a177296241ae6139d79dbd6293ab37509c309708f2288042fe6061881ba5ca"
    assert k.names(f"/docker/{cid}", cid)
    assert k.names(f"/system.slice/docker-{cid}.scope", cid)
    assert k.names("/lxc.payload.web-1", "lxc.payload.web-1")
    assert not k.names("/lxc.payload.web-10", "lxc.payload.web-1")
    assert not k.names("/user.slice", cid)


def test_flat_keyed_io_blkio_and_net_dev():
    stat = "cache 827392\nrss 49152\ninactive_file 430080\ntotal_inactive_file 512\n"
    assert k.keyed(stat, "inactive_file") == 430080  # not the total_ line that ends with the same words
    assert k.keyed(stat, "total_inactive_file") == 512
    assert k.keyed(stat, "swap") is None
    assert k.parse_io_stat("8:0 rbytes=4096 wbytes=512 rios=1 wios=1\n8:16 rbytes=1 wbytes=2\n") == (4097, 514)
    assert k.parse_blkio("8:0 Read 100\n8:0 Write 7\n8:0 Sync 107\n8:16 Read 1\nTotal 108\n") == (101, 7)
    net = ("Inter-|   Receive                                                |  Transmit\n"
           " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls\n"
           "    lo:     500       5    0    0    0     0          0         0      500       5    0    0    0     0\n"
           "  eth0:     876      10    0    0    0     0          0         0       42       1    0    0    0     0\n"
           "  eth1:     100       1    0    0    0     0          0         0        8       1    0    0    0     0\n")
    assert k.parse_net_dev(net) == (976, 50)


def test_limits_and_a_process_stat_with_blanks_in_its_name():
    assert k._limit("max\n") is None and k._limit("9223372036854771712\n") is None
    assert k._limit("67108864\n") == 64 << 20
    assert k._cores("50000", "100000") == 0.5 and k._cores("-1", "100000") is None and k._cores("max", "100000") is None
    ticks = k._CLOCK_TICKS
    stat = f"42 (qemu system (x)) S 1 42 42 0 -1 0 0 0 0 0 {3 * ticks} {ticks} 0 0 20 0 1 0 5 0 0"
    assert k.parse_proc_stat_cpu(stat) == 4_000_000_000
    assert k.parse_vm_rss("Name:\tqemu\nVmRSS:\t  1024 kB\n") == 1 << 20


def test_a_process_and_a_cgroup_that_are_not_there_are_gone():
    assert k.read_process(2**22 + 7) is k.GONE
    assert k.read_cgroup(2**22 + 7, "x") is k.GONE
    assert k.read_iface("no-such-if0") is None


def test_engine_stats_json():
    data = {
        "read": "2026-11-27T06:00:54.116493901Z",
        "cpu_stats": {"cpu_usage": {"total_usage": 30906116}},
        "memory_stats": {"usage": 1114112, "limit": 67108864, "stats": {"total_inactive_file": 405504}},
        "networks": {"eth0": {"rx_bytes": 1016, "tx_bytes": 10}, "eth1": {"rx_bytes": 4, "tx_bytes": 0}},
        "blkio_stats": {"io_service_bytes_recursive": [{"op": "Read", "value": 9}, {"op": "Write", "value": 3},
                                                       {"op": "Total", "value": 12}]},
    }
    got = from_api(data, host_memory=25276063744, cpu_limit=0.5)
    assert got is not None
    assert (got.cpu_ns, got.memory, got.memory_limit, got.cpu_limit) == (30906116, 708608, 64 << 20, 0.5)
    assert (got.net_rx, got.net_tx, got.block_read, got.block_write) == (1020, 10, 9, 3)
    assert abs(got.when - 1795759254.116494) < 1e-3
    # without a limit the Engine gives the host's memory; cgroup v2 names the cache inactive_file
    unlimited = {**data, "memory_stats": {"usage": 100, "limit": 25276063744, "stats": {"inactive_file": 40}}}
    got = from_api(unlimited, host_memory=25276063744, cpu_limit=None)
    assert got is not None and got.memory_limit is None and got.memory == 60
    # a container that is not running: zeros and a zero time
    assert from_api({"read": "0001-01-01T00:00:00Z", "cpu_stats": {}}, None, None) is None


async def test_readings_of_one_moment_share_one_worker_thread(monkeypatch):
    handoffs = []
    real = trio.to_thread.run_sync

    async def counted(fn, *args, **kwargs):
        handoffs.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)

    def reading(n: int) -> int:
        assert threading.current_thread() is not threading.main_thread()
        return n * 2

    batched = k.Batched(reading, -1)
    got: dict[int, int] = {}

    async def one(n: int) -> None:
        got[n] = await batched(n)

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(one, n)
    assert got == {n: n * 2 for n in range(20)}
    assert len(handoffs) == 1  # one hand-off for the twenty
    assert await batched(5) == 10  # and the next moment's is a batch of its own
    assert len(handoffs) == 2


NET_DEV = ("Inter-|   Receive\n face |bytes\n"
           "    lo:     500  5 0 0 0 0 0 0      500  5 0 0 0 0 0 0\n"
           "  eth0:     876 10 0 0 0 0 0 0       42  1 0 0 0 0 0 0\n")


def _tree(tmp_path, files: dict[str, str]):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "proc/7/ns").mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc/7/ns/net").symlink_to("net:[0]")  # no namespace has inode 0: never the host's
    return str(tmp_path / "proc")


def test_a_pure_v2_cgroup_read_whole(tmp_path):
    cid = "ab" * 32
    proc = _tree(tmp_path, {
        "proc/7/cgroup": f"0::/system.slice/docker-{cid}.scope\n",
        "proc/7/net/dev": NET_DEV,
        f"cg/system.slice/docker-{cid}.scope/cgroup.events": "populated 1\nfrozen 0\n",
        f"cg/system.slice/docker-{cid}.scope/cpu.stat": "usage_usec 2500\nuser_usec 2000\n",
        f"cg/system.slice/docker-{cid}.scope/cpu.max": "150000 100000\n",
        f"cg/system.slice/docker-{cid}.scope/memory.current": "1000000\n",
        f"cg/system.slice/docker-{cid}.scope/memory.stat": "anon 10\ninactive_file 400000\nactive_file 1\n",
        f"cg/system.slice/docker-{cid}.scope/memory.max": "max\n",
        f"cg/system.slice/docker-{cid}.scope/io.stat": "8:0 rbytes=4096 wbytes=512 rios=1 wios=1\n",
    })
    mounts = k.Mounts({}, (str(tmp_path / "cg"), "/"))
    got = k.read_cgroup(7, cid, mounts, proc)
    assert isinstance(got, InstanceStats)
    assert (got.cpu_ns, got.memory, got.memory_limit, got.cpu_limit) == (2_500_000, 600_000, None, 1.5)
    assert (got.net_rx, got.net_tx, got.block_read, got.block_write) == (876, 42, 4096, 512)
    assert k.read_cgroup(7, "cd" * 32, mounts, proc) is k.GONE  # the pid is someone else's now
    (tmp_path / f"cg/system.slice/docker-{cid}.scope/cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert k.read_cgroup(7, cid, mounts, proc) is k.FROZEN


def test_v1_a_container_that_stops_half_way_and_files_out_of_reach(tmp_path):
    proc = _tree(tmp_path, {
        "proc/7/cgroup": "4:memory:/lxc.payload.web\n2:cpu,cpuacct:/lxc.payload.web\n1:freezer:/lxc.payload.web\n",
        "proc/7/net/dev": NET_DEV,
        "freezer/lxc.payload.web/freezer.state": "THAWED\n",
        "cpuacct/lxc.payload.web/cpuacct.usage": "123456789\n",
        "cpu/lxc.payload.web/cpu.cfs_quota_us": "-1\n",
        "cpu/lxc.payload.web/cpu.cfs_period_us": "100000\n",
        "memory/lxc.payload.web/memory.usage_in_bytes": "5000\n",
        "memory/lxc.payload.web/memory.stat": "inactive_file 1\ntotal_inactive_file 1000\n",
        "memory/lxc.payload.web/memory.limit_in_bytes": "67108864\n",
    })
    mounts = k.Mounts({c: (str(tmp_path / c), "/") for c in ("cpu", "cpuacct", "memory", "freezer")}, None)
    got = k.read_cgroup(7, "lxc.payload.web", mounts, proc)
    assert isinstance(got, InstanceStats)
    assert (got.cpu_ns, got.memory, got.memory_limit, got.cpu_limit) == (123456789, 4000, 64 << 20, None)
    assert (got.block_read, got.block_write) == (0, 0)  # no blkio controller mounted: none to read
    (tmp_path / "memory/lxc.payload.web/memory.usage_in_bytes").unlink()  # its cgroup went
    assert k.read_cgroup(7, "lxc.payload.web", mounts, proc) is k.GONE
    outside = k.Mounts({c: (str(tmp_path / c), "/nested") for c in ("cpu", "cpuacct", "memory")}, None)
    assert k.read_cgroup(7, "lxc.payload.web", outside, proc) is None  # not below our mounts: ask the runtime
