"""The LXC driver on this host's real LXC: what is LXC's own (the image kinds, the overlay rootfs,
cgroup limits, two instances talking over the project's bridge). What every driver owes is in
``tests/contract/`` (its ``lxc`` kit). Each test has an LXC path of its own under its tmp dir; the
fixture kills what it made and removes the bridges its network records name, pass or fail."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from mariposa.drivers.base import ImageNotFound
from mariposa.drivers.lxc import LxcDriver
from mariposa.model import CreateRequest, InstanceState, ServiceSpec
from tests.integration.harness import IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.lxc]

SLEEPER = ("sh", "-c", "exec sleep 3600")


@asynccontextmanager
async def driver_at(path: Path, **options) -> AsyncIterator[LxcDriver]:
    driver = LxcDriver(f"lxctest-{uuid.uuid4().hex[:12]}", path, **options)
    await driver.ping()
    try:
        yield driver
    finally:
        await driver.aclose()
        for d in path.iterdir():
            if (d / "config").exists():
                subprocess.run(["lxc-stop", "-P", str(path), "-n", d.name, "-k"], capture_output=True, timeout=60)
        for rec in (path / "networks").glob("*.json"):
            bridge = json.loads(rec.read_text())["bridge"]
            subprocess.run(["iptables", "-w", "-D", "DOCKER-USER", "-i", bridge, "-o", bridge, "-j", "ACCEPT"],
                           capture_output=True, timeout=60)
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=60)


@pytest.fixture
async def lxc(tmp_path):
    async with driver_at(tmp_path / "lxc") as driver:
        yield driver


@pytest.fixture
def tmpfs_dir():
    """A directory on a tmpfs: an overlay's upper dir works there even when the tmp dir is itself
    on overlayfs (a test run inside a container), where the driver copies images instead."""
    path = Path(tempfile.mkdtemp(prefix="mariposa-lxc-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def request(driver: LxcDriver, image: str, command=SLEEPER, project: str = "c" * 32, **spec) -> CreateRequest:
    return CreateRequest(instance_id=uuid.uuid4().hex, owner=driver.owner, project_id=project, project_name="lt",
                         version_id="v1", created=time.time(),
                         spec=ServiceSpec(name="svc", image=image, command=command, compute_type="infrastructure",
                                          **spec))


async def test_images_a_template_a_rootfs_directory_and_a_tarball(lxc, tmp_path):
    # the exported Docker image, as a directory and as a tarball of it
    base = await lxc._base(IMAGE, await lxc.resolve_image(IMAGE))
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", str(base), str(rootfs)], check=True)
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs, arcname=".")
    digest = await lxc.resolve_image(str(tarball))
    assert digest.startswith("sha256:") and digest == await lxc.resolve_image(str(tarball))
    assert await lxc.resolve_image(str(rootfs)) == f"dir:{rootfs}"
    assert await lxc.resolve_image("template:busybox") == "template:busybox"
    for image in (str(rootfs), str(tarball), "template:busybox"):
        # as a version pins them (image_id): the daemon hands the pin back at every create
        req = request(lxc, image)
        req = attrs.evolve(req, spec=attrs.evolve(req.spec, image_id=await lxc.resolve_image(image)))
        inst = await lxc.create(req)
        assert inst.state == InstanceState.RUNNING, image
        assert await lxc.exec(inst, ["sh", "-c", "echo ok"], timeout=20) == (0, b"ok\n"), image
        await lxc.remove(inst)
    # a tarball that changed after its version pinned it is refused, not silently taken
    stale = request(lxc, str(tarball))
    stale = attrs.evolve(stale, spec=attrs.evolve(stale.spec, image_id="sha256:" + "0" * 64))
    with pytest.raises(ImageNotFound, match="changed since the version was made"):
        await lxc.create(stale)
    for missing in (str(tmp_path / "nope"), "template:no-such-template"):
        with pytest.raises(ImageNotFound, match=missing):
            await lxc.resolve_image(missing)


async def test_overlay_rootfs_removing_an_instance_keeps_the_base(tmpfs_dir):
    async with driver_at(tmpfs_dir / "lxc", copy_rootfs=None) as lxc:  # found out: tmpfs takes an overlay
        inst = await lxc.create(request(lxc, IMAGE, ("sh", "-c", "echo mine > /etc/mine; exec sleep 3600")))
        home = lxc.path / inst.name
        config = (home / "config").read_text()
        [rootfs] = [line for line in config.splitlines() if line.startswith("lxc.rootfs.path")]
        lower, upper = rootfs.split(" = overlay:", 1)[1].split(":")
        assert upper == str(home / "delta") and lower.startswith(str(lxc.path / "images"))
        with trio.fail_after(10):
            while not (home / "delta" / "etc" / "mine").exists():  # the instance writes its upper dir only
                await trio.sleep(0.05)
        assert not (Path(lower) / "etc" / "mine").exists()
        await lxc.remove(inst)
        assert not home.exists() and (Path(lower) / "bin" / "busybox").exists()  # the base stays


async def test_a_removed_instance_stays_gone_while_lxc_tools_read_its_config(lxc):
    """Every lxc-* tool that reads a config makes its log file's directory (mkdir -p): the
    inventory's ``lxc-ls -f`` and ``lxc-info`` running while a big upper dir is deleted made the
    instance directory again, holding only lxc.log, for good (found in CI: a project delete left
    one). The remove must leave nothing, however busy the tools are meanwhile."""
    inst = await lxc.create(request(lxc, IMAGE))
    home = lxc.path / inst.name
    junk = home / "delta" / "junk"
    junk.mkdir(parents=True)
    for n in range(4000):  # a rootfs that takes a while to delete
        (junk / str(n)).write_bytes(b"x")
    done = False

    def hammer() -> int:
        runs = 0
        while not done:
            for argv in (["lxc-ls", "-P", str(lxc.path), "-f"], ["lxc-info", "-P", str(lxc.path), "-n", inst.name]):
                subprocess.run(argv, capture_output=True, timeout=60)
                runs += 1
        return runs

    async with trio.open_nursery() as nursery:
        results: list[int] = []
        nursery.start_soon(lambda: _collect(results, hammer))
        await trio.sleep(0.2)
        await lxc.remove(inst)
        await trio.sleep(0.5)  # the tools go on a while after
        done = True
    assert results[0] > 4
    assert not home.exists(), sorted(p.name for p in home.iterdir())
    assert not any(p.name.startswith(inst.name) for p in (lxc.path / ".removing").iterdir())


async def _collect(results: list[int], fn) -> None:
    results.append(await trio.to_thread.run_sync(fn))


async def test_where_an_overlay_cannot_be_made_each_instance_runs_on_a_copy_of_its_own(tmp_path):
    """A state dir on overlayfs (the daemon in a container) cannot hold an overlay's upper dir."""
    async with driver_at(tmp_path / "lxc", copy_rootfs=True) as lxc:
        made = [await lxc.create(request(lxc, IMAGE, ("sh", "-c", "echo mine > /etc/mine; exec sleep 3600")))
                for _ in range(2)]
        for inst in made:
            home = lxc.path / inst.name
            [rootfs] = [line for line in (home / "config").read_text().splitlines()
                        if line.startswith("lxc.rootfs.path")]
            assert rootfs == f"lxc.rootfs.path = dir:{home / 'delta'}"  # its own, never shared
            with trio.fail_after(10):
                while not (home / "delta" / "etc" / "mine").exists():
                    await trio.sleep(0.05)
            assert (await lxc.exec(inst, ["cat", "/etc/mine"], timeout=20)) == (0, b"mine\n")
        base = await lxc._base(IMAGE, await lxc.resolve_image(IMAGE))
        await lxc.remove(made[0])
        assert not (lxc.path / made[0].name).exists() and (base / "bin" / "busybox").exists()
        assert not (base / "etc" / "mine").exists()
        assert (await lxc.exec(made[1], ["cat", "/etc/mine"], timeout=20)) == (0, b"mine\n")


async def test_memory_and_cpus_become_cgroup_limits_and_no_cgroup_outlives_the_instance(lxc):
    inst = await lxc.create(request(lxc, IMAGE, memory=64 * 1024 * 1024, cpus=0.5))
    root = Path("/sys/fs/cgroup")

    def cgroup(key: str) -> str:  # where LXC put it (nested, when the host is itself a container)
        return subprocess.run(["lxc-cgroup", "-P", str(lxc.path), "-n", inst.name, key], capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()

    if (root / "cgroup.controllers").exists():  # v2
        assert cgroup("memory.max").split() == ["67108864"]
        assert cgroup("cpu.max").split() == ["50000", "100000"]
    else:
        assert cgroup("memory.limit_in_bytes") == "67108864"
        assert cgroup("cpu.cfs_quota_us") == "50000"
    await lxc.remove(inst)
    assert [str(p) for p in root.glob(f"**/lxc.*.{inst.name}")] == []  # neither payload nor monitor


async def test_stats_from_its_cgroup_and_network_namespace(lxc):
    """Limits as LXC set them in its cgroup, bytes sent to its address counted as received, and
    a start again (a new init, another pid) read as well."""
    inst = await lxc.create(request(lxc, IMAGE, memory=64 * 1024 * 1024, cpus=0.5))
    first = await lxc.stats(inst)
    assert first is not None and (first.memory_limit, first.cpu_limit) == (64 << 20, 0.5)
    assert 0 < first.memory < 64 << 20 and first.cpu_ns > 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(10):
            s.sendto(b"x" * 1000, (inst.address, 9))
    await trio.sleep(0.5)
    second = await lxc.stats(inst)
    assert second is not None and second.net_rx - first.net_rx >= 10_000 and second.cpu_ns >= first.cpu_ns
    await lxc.stop(inst, timeout=1)
    assert await lxc.stats(inst) is None
    await lxc.start(inst)
    again = await lxc.stats(inst)
    assert again is not None and again.memory_limit == 64 << 20


async def test_two_instances_reach_each_other_over_the_project_bridge(lxc):
    server = await lxc.create(request(lxc, IMAGE, ("sh", "-c", "echo hi > /www/index.html; "
                                                   "exec httpd -f -p 8080 -h /www")))
    client = await lxc.create(request(lxc, IMAGE))
    assert server.address != client.address
    with trio.fail_after(20):
        while True:
            code, out = await lxc.exec(client, ["wget", "-q", "-O", "-", f"http://{server.address}:8080/"], timeout=5)
            if code == 0:
                break
            await trio.sleep(0.1)
    assert out == b"hi\n"


async def test_exec_ends_with_its_command_even_when_a_process_it_left_holds_the_output(lxc):
    """A command that starts a daemon returns when the command does, not when the daemon closes
    the pipe it inherited; and a command that outlives its timeout is cut off at the timeout."""
    inst = await lxc.create(request(lxc, IMAGE))
    t0 = time.monotonic()
    assert await lxc.exec(inst, ["sh", "-c", "sleep 61 & echo started"], timeout=20) == (0, b"started\n")
    assert time.monotonic() - t0 < 10
    t0 = time.monotonic()
    with pytest.raises(trio.TooSlowError):
        await lxc.exec(inst, ["sleep", "62"], timeout=1)
    assert time.monotonic() - t0 < 10
    # the command was killed, not orphaned: a zombie no one reaps kept the container from stopping
    _, ps = await lxc.exec(inst, ["ps"], timeout=20)
    assert b"sleep 61" in ps and b"sleep 62" not in ps
    with trio.fail_after(30):
        await lxc.stop(inst, timeout=5)


async def test_a_bind_mount_whose_path_has_a_blank_and_a_read_only_one(lxc, tmp_path):
    from mariposa.model import MountSpec

    src = tmp_path / "my data"
    src.mkdir()
    (src / "f").write_text("from the host\n")
    inst = await lxc.create(request(lxc, IMAGE, volumes=(MountSpec("bind", str(src), "/srv/my data"),
                                                         MountSpec("bind", str(src), "/ro", read_only=True))))
    assert await lxc.exec(inst, ["cat", "/srv/my data/f"], timeout=20) == (0, b"from the host\n")
    assert (await lxc.exec(inst, ["sh", "-c", "echo x > /ro/g"], timeout=20))[0] != 0
    assert await lxc.exec(inst, ["sh", "-c", "echo back > '/srv/my data/g'"], timeout=20) == (0, b"")
    assert (src / "g").read_text() == "back\n"
