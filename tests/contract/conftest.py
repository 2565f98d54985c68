"""One driver contract, every driver: the ``kit`` fixture gives each test a driver and the few
runtime-side things a test cannot do through the protocol (kill an instance behind the driver's
back, make one without starting it, look at the runtime directly, restart the driver).

A new driver (LXC, QEMU) joins by adding one ``_kit`` branch; the tests themselves speak only the
protocol. The Docker branch runs on the real Engine with an owner label of its own per test and
removes whatever carries that label afterwards, pass or fail; no branch skips.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from mariposa.drivers.base import Driver, RegistryAuth, RuntimeUnavailable
from mariposa.model import LABEL_OWNER, CreateRequest, Instance, ServiceSpec


@attrs.define
class Kit:
    driver: Driver
    image: str  # an image the runtime has
    missing_image: str  # one it has not
    owner: str
    restart: Callable[[], Awaitable[Driver]]  # the old driver closed, a new one over the same runtime
    kill: Callable[[Instance], Awaitable[None]]  # SIGKILL (or the runtime's hard stop), not through the driver
    create_unstarted: Callable[[CreateRequest], Awaitable[Instance]]
    leftovers: Callable[[], Awaitable[list[str]]]  # what the runtime holds of this owner, not asking the driver
    make_network: Callable[[str], Awaitable[None]]  # a network made outside Mariposa (to join as external)
    pullable: str = ""  # in a registry, not on the host (before each test)
    unpullable: str = ""  # in no registry
    login: RegistryAuth | None = None  # credentials a registry takes
    silent: str = ""  # an image of a registry that accepts connections and never answers
    project: str = attrs.field(factory=lambda: uuid.uuid4().hex)

    def request(self, service: str, script: str | None, *, project: str | None = None,
                image: str | None = None, instance_id: str | None = None, **spec) -> CreateRequest:
        """A request for an instance running ``sh -c script`` (None: the image's own command)."""
        command = None if script is None else ("sh", "-c", script)
        return CreateRequest(
            instance_id=instance_id or uuid.uuid4().hex, owner=self.owner, project_id=project or self.project,
            project_name="ctest", version_id="v1", created=time.time(),
            spec=ServiceSpec(name=service, image=image or self.image, command=command, **spec),
        )


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="session")
def docker_image(docker_images) -> str:
    """The image the Docker kit runs, built by the suite's one image fixture (tests/conftest.py)."""
    from tests.integration.harness import IMAGE

    return IMAGE


@asynccontextmanager
async def _fake_kit():
    from mariposa.drivers.fake import FakeDriver, FakeRuntime

    runtime = FakeRuntime(images=("busybox",))
    owner = f"contract-{uuid.uuid4().hex[:12]}"
    kit: Kit

    async def restart() -> Driver:
        await kit.driver.aclose()
        kit.driver = FakeDriver(runtime=runtime, owner=owner)
        return kit.driver

    async def kill(inst: Instance) -> None:
        kit.driver.kill(inst.id)  # type: ignore[attr-defined]

    async def create_unstarted(req: CreateRequest) -> Instance:
        return await kit.driver.create_unstarted(req)  # type: ignore[attr-defined]

    async def leftovers() -> list[str]:
        return [b.runtime_id for b in runtime.boxes.values() if b.labels.get(LABEL_OWNER) == owner]

    async def make_network(name: str) -> None:
        kit.driver.add_network(name)  # type: ignore[attr-defined]

    runtime.registry["registry.test:5000/team/app:v1"] = "sha256:" + "ab" * 32
    runtime.registry_users["registry.test:5001"] = ("alice", "s3cret-pw")
    runtime.silent_registries.add("registry.test:5002")
    kit = Kit(FakeDriver(runtime=runtime, owner=owner), "busybox", "not-there:1.0", owner, restart, kill,
              create_unstarted, leftovers, make_network, "registry.test:5000/team/app:v1",
              "registry.test:5000/team/nope:v1",
              RegistryAuth("registry.test:5001", "alice", "s3cret-pw"), "registry.test:5002/team/app:v1")
    try:
        yield kit
    finally:
        await kit.driver.aclose()


@asynccontextmanager
async def _docker_kit(image: str, registries):
    from mariposa.drivers.docker import DockerDriver

    owner = f"contract-{uuid.uuid4().hex[:12]}"
    label = f"label={LABEL_OWNER}={owner}"
    kit: Kit

    async def restart() -> Driver:
        await kit.driver.aclose()
        kit.driver = DockerDriver(owner)
        return kit.driver

    async def kill(inst: Instance) -> None:
        await trio.run_process(["docker", "kill", inst.runtime_id], capture_stdout=True, capture_stderr=True)

    async def create_unstarted(req: CreateRequest) -> Instance:
        argv = ["docker", "create", "--name", req.name, "--init"]
        for key, value in req.labels().items():
            argv += ["--label", f"{key}={value}"]
        argv += [req.spec.image, *(req.spec.command or ())]
        out = await trio.run_process(argv, capture_stdout=True, capture_stderr=True)
        runtime_id = out.stdout.decode().strip()
        [inst] = [i for i in await kit.driver.inventory() if i.runtime_id == runtime_id]
        return inst

    async def leftovers() -> list[str]:
        return (await trio.to_thread.run_sync(_run, "docker", "ps", "-aq", "--filter", label)).split()

    async def make_network(name: str) -> None:
        # labelled with the owner only so that the clean-up below finds it; it is not any project's
        await trio.run_process(["docker", "network", "create", "--label", f"{LABEL_OWNER}={owner}", name],
                               capture_stdout=True, capture_stderr=True)

    def purge() -> None:
        ids = _run("docker", "ps", "-aq", "--filter", label).split()
        if ids:
            subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, timeout=120)
        nets = _run("docker", "network", "ls", "-q", "--filter", label).split()
        if nets:
            subprocess.run(["docker", "network", "rm", *nets], capture_output=True, timeout=60)
        volumes = _run("docker", "volume", "ls", "-q", "--filter", label).split()
        if volumes:
            subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True, timeout=60)

    driver = DockerDriver(owner)
    try:
        await driver.ping()
    except RuntimeUnavailable as exc:
        pytest.fail(f"the docker contract tests need a running Docker Engine: {exc}")
    pullable = registries.ref(registries.open_host, "busybox")
    registries.remove_local(pullable)  # a test before may have pulled it
    silent = socket.socket()  # the kernel accepts connections into the backlog; nobody ever answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    kit = Kit(driver, image, "mariposa-test/not-there:1.0", owner, restart, kill, create_unstarted, leftovers,
              make_network, pullable, registries.ref(registries.open_host, "nope"),
              RegistryAuth(registries.auth_host, registries.user, registries.password),
              f"127.0.0.1:{silent.getsockname()[1]}/{registries.prefix}/silent:v1")
    try:
        yield kit
    finally:
        silent.close()
        await kit.driver.aclose()
        await trio.to_thread.run_sync(purge)
        registries.remove_local(pullable)


@asynccontextmanager
async def _lxc_kit(image: str, registries, path):
    """Real LXC under a path of the test's own (the driver's whole world: containers, bases,
    journal, network records); the image is the Docker test image, exported by the driver. The
    bridges it made (found by the records under the path) and the ones the test made go after."""
    from mariposa.drivers.lxc import LxcDriver

    owner = f"contract-{uuid.uuid4().hex[:12]}"
    lxc_path = str(path / "lxc")
    made_bridges: list[str] = []
    kit: Kit

    async def restart() -> Driver:
        await kit.driver.aclose()
        kit.driver = LxcDriver(owner, lxc_path)
        return kit.driver

    async def kill(inst: Instance) -> None:
        await trio.run_process(["lxc-stop", "-P", lxc_path, "-n", inst.runtime_id, "-k"], capture_stdout=True,
                               capture_stderr=True)

    async def create_unstarted(req: CreateRequest) -> Instance:
        driver: LxcDriver = kit.driver  # type: ignore[assignment]
        base = await driver._base(req.spec.image, await driver.resolve_image(req.spec.image))
        await driver._make(req, req.name, driver._dir(req.name), base)
        [inst] = [i for i in await driver.inventory() if i.id == req.instance_id]
        return inst

    async def leftovers() -> list[str]:
        root = path / "lxc"
        return sorted(d.name for d in root.iterdir() if (d / "config").exists()) if root.is_dir() else []

    async def make_network(name: str) -> None:
        await trio.run_process(["ip", "link", "add", name, "type", "bridge"], capture_stdout=True)
        made_bridges.append(name)

    def purge() -> None:
        import json

        root = path / "lxc"
        if root.is_dir():
            for d in root.iterdir():
                if (d / "config").exists():
                    subprocess.run(["lxc-stop", "-P", lxc_path, "-n", d.name, "-k"], capture_output=True, timeout=60)
            for rec in (root / "networks").glob("*.json"):
                made_bridges.append(json.loads(rec.read_text())["bridge"])
        for bridge in made_bridges:
            subprocess.run(["iptables", "-w", "-D", "DOCKER-USER", "-i", bridge, "-o", bridge, "-j", "ACCEPT"],
                           capture_output=True, timeout=60)
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=60)

    pullable = registries.ref(registries.open_host, "busybox")
    registries.remove_local(pullable)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    driver = LxcDriver(owner, lxc_path)
    try:
        await driver.ping()
    except RuntimeUnavailable as exc:
        pytest.fail(f"the lxc contract tests need LXC (apt-get install lxc): {exc}")
    kit = Kit(driver, image, "mariposa-test/not-there:1.0", owner, restart, kill, create_unstarted, leftovers,
              make_network, pullable, registries.ref(registries.open_host, "nope"),
              RegistryAuth(registries.auth_host, registries.user, registries.password),
              f"127.0.0.1:{silent.getsockname()[1]}/{registries.prefix}/silent:v1")
    try:
        yield kit
    finally:
        silent.close()
        await kit.driver.aclose()
        await trio.to_thread.run_sync(purge)
        registries.remove_local(pullable)


@asynccontextmanager
async def _qemu_kit(image: str, registries, path):
    """Real QEMU (TCG here: mariposa/vm/accel.py says why) under a path of the test's own; the image
    is the Docker test image, its files made into a base disk by the driver. VMs, taps and bridges
    it made go after, pass or fail."""
    import json
    import os
    import signal

    from mariposa.drivers.qemu import QemuDriver, _pid_of

    owner = f"contract-{uuid.uuid4().hex[:12]}"
    qemu_path = path / "qemu"
    made_bridges: list[str] = []
    kit: Kit

    async def restart() -> Driver:
        await kit.driver.aclose()
        kit.driver = QemuDriver(owner, qemu_path)
        return kit.driver

    async def kill(inst: Instance) -> None:
        pid = _pid_of(qemu_path / inst.runtime_id)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    async def create_unstarted(req: CreateRequest) -> Instance:
        driver: QemuDriver = kit.driver  # type: ignore[assignment]
        content_id = await driver.images.content_id(req.spec.image, req.spec.image_id)
        base = await driver._base_disk(req.spec.image, content_id, req.spec.disk)
        await driver._make(req, req.name, driver._dir(req.name), base)
        [inst] = [i for i in await driver.inventory() if i.id == req.instance_id]
        return inst

    async def leftovers() -> list[str]:
        return sorted(d.name for d in qemu_path.iterdir() if (d / "mariposa.json").exists()) \
            if qemu_path.is_dir() else []

    async def make_network(name: str) -> None:
        await trio.run_process(["ip", "link", "add", name, "type", "bridge"], capture_stdout=True)
        made_bridges.append(name)

    def purge() -> None:
        if qemu_path.is_dir():
            for d in qemu_path.iterdir():
                pid = _pid_of(d)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                side = d / "mariposa.json"
                if side.exists():
                    for nic in json.loads(side.read_text()).get("nics", ()):
                        subprocess.run(["ip", "link", "del", nic["tap"]], capture_output=True, timeout=60)
                    shutil.rmtree(Path("/run/mariposa/qemu") / json.loads(side.read_text())["tap"],
                                  ignore_errors=True)
            for rec in (qemu_path / "networks").glob("*.json"):
                made_bridges.append(json.loads(rec.read_text())["bridge"])
        for bridge in made_bridges:
            subprocess.run(["iptables", "-w", "-D", "DOCKER-USER", "-i", bridge, "-o", bridge, "-j", "ACCEPT"],
                           capture_output=True, timeout=60)
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=60)

    pullable = registries.ref(registries.open_host, "busybox")
    registries.remove_local(pullable)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    driver = QemuDriver(owner, qemu_path)
    try:
        await driver.ping()
    except RuntimeUnavailable as exc:
        pytest.fail(f"the qemu contract tests need QEMU and Mariposa's kernel (tests/run.sh installs both): {exc}")
    kit = Kit(driver, image, "mariposa-test/not-there:1.0", owner, restart, kill, create_unstarted, leftovers,
              make_network, pullable, registries.ref(registries.open_host, "nope"),
              RegistryAuth(registries.auth_host, registries.user, registries.password),
              f"127.0.0.1:{silent.getsockname()[1]}/{registries.prefix}/silent:v1")
    try:
        yield kit
    finally:
        silent.close()
        await kit.driver.aclose()
        await trio.to_thread.run_sync(purge)
        registries.remove_local(pullable)


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.docker),
                        pytest.param("lxc", marks=[pytest.mark.docker, pytest.mark.lxc]),
                        pytest.param("qemu", marks=[pytest.mark.docker, pytest.mark.qemu])])
async def kit(request, tmp_path):
    if request.param == "fake":
        made = _fake_kit()
    elif request.param == "docker":
        made = _docker_kit(request.getfixturevalue("docker_image"), request.getfixturevalue("registries"))
    elif request.param == "qemu":
        made = _qemu_kit(request.getfixturevalue("docker_image"), request.getfixturevalue("registries"), tmp_path)
    else:
        made = _lxc_kit(request.getfixturevalue("docker_image"), request.getfixturevalue("registries"), tmp_path)
    async with made as kit:
        yield kit
