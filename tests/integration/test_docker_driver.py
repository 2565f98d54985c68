"""The Docker driver against the real Engine on this host: what is Docker's own (the container's
configuration, ports, names, the init, conflicts). What every driver owes (idempotency, events,
exec, stop timeouts, a missing image, identity across restarts) is in ``tests/contract/``.

Nothing here skips: a missing Engine fails loudly, because a green run that tested nothing is
worse than a red one (CI starts dockerd). Every test has its own owner label, so tests running side
by side, and any daemon on the host, never see each other's containers; the fixture removes
whatever carries that label, pass or fail.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from contextlib import aclosing

import httpx
import pytest
import trio

from mariposa.drivers.base import DriverError, ImageNotFound, RuntimeUnavailable
from mariposa.drivers.docker import DockerDriver, network_name
from mariposa.model import (
    LABEL_INSTANCE,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_SERVICE,
    CreateRequest,
    InstanceState,
    PortSpec,
    ServiceSpec,
)
from tests.integration.harness import IMAGE

pytestmark = pytest.mark.docker

HTTPD = ("sh", "-c", "echo hello > /www/index.html && exec httpd -f -p 8080 -h /www")
SLEEPER = ("sh", "-c", "exec sleep 3600")


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=60
    )


def purge(owner: str) -> None:
    label = f"label={LABEL_OWNER}={owner}"
    ids = docker("ps", "-aq", "--filter", label).stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)
    nets = docker("network", "ls", "-q", "--filter", label).stdout.split()
    if nets:
        docker("network", "rm", *nets, check=False)


@pytest.fixture
def owner():
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    purge(name)


@pytest.fixture
async def driver(owner):
    d = DockerDriver(owner)
    try:
        await d.ping()
    except RuntimeUnavailable as exc:
        pytest.fail(f"these tests need a running Docker Engine (start dockerd): {exc}")
    try:
        docker("image", "inspect", IMAGE)
    except subprocess.CalledProcessError:
        pytest.fail(f"test image {IMAGE} is missing; build it as described in tests/integration")
    yield d
    await d.aclose()


@pytest.fixture
def project():
    return uuid.uuid4().hex


def request(
    owner: str,
    project_id: str,
    spec: ServiceSpec,
    project_name: str = "itest",
    instance_id: str | None = None,
) -> CreateRequest:
    return CreateRequest(
        instance_id=instance_id or uuid.uuid4().hex,
        owner=owner,
        project_id=project_id,
        project_name=project_name,
        version_id="v1",
        spec=spec,
        created=time.time(),
    )


def inspect(ref: str) -> dict:
    return json.loads(docker("inspect", ref).stdout)[0]


async def wait_for(predicate, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while True:
        result = await predicate()
        if result or time.monotonic() > deadline:
            return result
        await trio.sleep(0.1)


async def test_create_applies_the_spec(driver, owner, project):
    spec = ServiceSpec(
        name="web",
        image=IMAGE,
        command=HTTPD,
        environment=(("GREETING", "hi there"), ("MODE", "test")),
        tags=(("team", "blue"),),
        ports=(PortSpec(8080),),
        memory=64 * 1024 * 1024,
        cpus=0.5,
        dns=("9.9.9.9",),
        dns_search=("example.internal",),
    )
    req = request(owner, project, spec)
    inst = await driver.create(req)

    assert inst.id == req.instance_id and inst.name == req.name
    assert (inst.project_id, inst.service, inst.spec_hash, inst.version_id) == (
        project,
        "web",
        spec.spec_hash,
        "v1",
    )
    assert inst.state == InstanceState.RUNNING and inst.image == IMAGE and inst.compute_type == "docker"
    assert (
        inst.address
        and inst.ports
        and inst.ports[0].container == 8080
        and inst.ports[0].host_port > 0
    )

    data = inspect(inst.runtime_id)
    assert {"GREETING=hi there", "MODE=test"} <= set(data["Config"]["Env"])
    assert data["Config"]["Cmd"] == list(HTTPD)
    assert data["Config"]["Labels"]["team"] == "blue"
    assert data["Config"]["Labels"][LABEL_OWNER] == owner
    host = data["HostConfig"]
    assert host["Memory"] == 64 * 1024 * 1024 and host["NanoCpus"] == 500_000_000
    assert host["Dns"] == ["9.9.9.9"] and host["DnsSearch"] == ["example.internal"]
    assert host["RestartPolicy"]["Name"] == "no"
    net = network_name(project, "itest")
    assert data["NetworkSettings"]["Networks"][net]["IPAddress"] == inst.address
    assert "web" in data["NetworkSettings"]["Networks"][net]["Aliases"]

    [listed] = await driver.inventory()
    assert listed.id == inst.id and listed.state == InstanceState.RUNNING
    assert listed.address == inst.address and listed.ports == inst.ports
    assert abs(listed.created - inst.created) < 1e-6 and listed.created <= time.time()
    assert [i.id for i in await driver.inventory(project)] == [inst.id]
    assert await driver.inventory(uuid.uuid4().hex) == []


async def test_services_resolve_each_other_by_name(driver, owner, project):
    await driver.create(
        request(owner, project, ServiceSpec(name="web", image=IMAGE, command=HTTPD))
    )
    client = await driver.create(
        request(owner, project, ServiceSpec(name="client", image=IMAGE, command=SLEEPER))
    )

    async def fetch():
        r = await trio.run_process(
            ["docker", "exec", client.runtime_id, "wget", "-qO-", "http://web:8080/"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        return r.stdout.decode() if r.returncode == 0 else None

    assert await wait_for(fetch) == "hello\n"


async def test_published_port_answers_on_localhost(driver, owner, project):
    inst = await driver.create(
        request(
            owner,
            project,
            ServiceSpec(name="web", image=IMAGE, command=HTTPD, ports=(PortSpec(8080),)),
        )
    )
    [port] = inst.ports

    async def get():
        try:
            return httpx.get(f"http://127.0.0.1:{port.host_port}/", timeout=1).text
        except httpx.HTTPError:
            return None

    assert await wait_for(get) == "hello\n"


async def test_replicas_get_distinct_ephemeral_ports(driver, owner, project):
    spec = ServiceSpec(name="web", image=IMAGE, command=HTTPD, ports=(PortSpec(8080),))
    a = await driver.create(request(owner, project, spec))
    b = await driver.create(request(owner, project, spec))
    assert a.ports[0].host_port != b.ports[0].host_port


async def test_missing_image_says_it_is_not_on_this_host(driver):
    with pytest.raises(ImageNotFound) as info:
        await driver.resolve_image("mariposa-test/not-there:1.0")
    assert "mariposa-test/not-there:1.0" in str(info.value) and "is not on this host" in str(info.value)


async def test_failed_start_leaves_nothing_and_no_secret(driver, owner, project):
    # A pinned host port that another instance already holds makes the Engine refuse the start.
    holder = ServiceSpec(name="holder", image=IMAGE, command=SLEEPER, ports=(PortSpec(80, host=18931),))
    await driver.create(request(owner, project, holder))
    spec = ServiceSpec(
        name="bad",
        image=IMAGE,
        command=SLEEPER,
        ports=(PortSpec(80, host=18931),),
        environment=(("TOKEN", "s3cr3t-value"),),
    )
    with pytest.raises(DriverError) as info:
        await driver.create(request(owner, project, spec))
    assert "docker: start" in str(info.value) and "18931" in str(info.value)
    assert "s3cr3t-value" not in str(info.value)
    assert [i.service for i in await driver.inventory()] == ["holder"]


async def test_missing_binary_exits_with_127_under_init(driver, owner, project):
    # Instances run under a tiny init (so SIGTERM works for any PID 1): a command that cannot
    # be executed starts, then exits 127, and the task layer sees it as a crash.
    spec = ServiceSpec(name="nobin", image=IMAGE, command=("/no/such/binary",))
    await driver.create(request(owner, project, spec))
    with trio.fail_after(10):
        while True:
            [inst] = await driver.inventory()
            if inst.state == InstanceState.EXITED:
                break
            await trio.sleep(0.1)
    assert inst.exit_code == 127


async def test_remove_network_removes_it(driver, owner, project):
    inst = await driver.create(
        request(owner, project, ServiceSpec(name="web", image=IMAGE, command=SLEEPER))
    )
    await driver.remove(inst)
    await driver.remove_network(project)
    await driver.remove_network(project)
    assert (
        docker("network", "ls", "-q", "--filter", f"label={LABEL_PROJECT}={project}").stdout.strip()
        == ""
    )


async def test_remove_network_disconnects_what_is_still_attached(driver, owner, project):
    await driver.ensure_network(project, "itest")
    [net] = docker("network", "ls", "-q", "--filter", f"label={LABEL_PROJECT}={project}").stdout.split()
    stranger = f"stranger-{uuid.uuid4().hex[:8]}"  # not Mariposa's: someone attached it by hand
    docker("run", "-d", "--name", stranger, "--label", f"{LABEL_OWNER}={owner}", "--network", net, IMAGE,
           "sleep", "1000")
    await driver.remove_network(project)
    assert docker("network", "ls", "-q", "--filter", f"label={LABEL_PROJECT}={project}").stdout.strip() == ""
    assert json.loads(docker("inspect", stranger).stdout)[0]["State"]["Running"]  # only disconnected


async def test_other_owners_see_nothing(driver, owner, project):
    await driver.create(
        request(owner, project, ServiceSpec(name="web", image=IMAGE, command=SLEEPER))
    )
    other_owner = f"test-{uuid.uuid4().hex[:12]}"
    other = DockerDriver(other_owner)
    try:
        assert await other.inventory() == []
        assert await other.inventory(project) == []
        assert len(await driver.inventory()) == 1
    finally:
        await other.aclose()
        purge(other_owner)


async def test_a_name_taken_by_another_instance_is_a_conflict(driver, owner, project):
    req = request(owner, project, ServiceSpec(name="web", image=IMAGE, command=SLEEPER))
    await driver.create(req)
    # Same name (same first 8 hex digits) but another instance: a real conflict.
    clash = request(owner, project, req.spec, instance_id=req.instance_id[:8] + "0" * 24)
    with pytest.raises(DriverError, match="Conflict"):
        await driver.create(clash)
    assert len(await driver.inventory()) == 1


async def test_parallel_creates_share_one_network(driver, owner, project):
    spec = ServiceSpec(name="web", image=IMAGE, command=SLEEPER)
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(driver.create, request(owner, project, spec))
    assert len(await driver.inventory(project)) == 8
    nets = docker(
        "network", "ls", "-q", "--filter", f"label={LABEL_PROJECT}={project}"
    ).stdout.split()
    assert len(nets) == 1


async def test_a_network_removed_behind_our_back_is_made_again(driver, owner, project):
    """The driver remembers the networks it has seen, so creates do not ask each time; one
    removed since (by hand, or by another daemon's delete) is made again at the next create."""
    spec = ServiceSpec(name="web", image=IMAGE, command=SLEEPER)
    first = await driver.create(request(owner, project, spec))
    docker("rm", "-f", first.runtime_id)
    docker("network", "rm", network_name(project, "itest"))
    again = await driver.create(request(owner, project, spec))
    assert again.state == InstanceState.RUNNING and again.address
    assert [i.id for i in await driver.inventory(project)] == [again.id]
    assert len(docker("network", "ls", "-q", "--filter", f"label={LABEL_PROJECT}={project}").stdout.split()) == 1


async def test_create_of_a_missing_image_says_it_is_not_on_this_host(driver, owner, project):
    spec = ServiceSpec(name="web", image="mariposa-test/not-there:1.0", command=SLEEPER)
    with pytest.raises(ImageNotFound) as info:
        await driver.create(request(owner, project, spec))
    assert "mariposa-test/not-there:1.0" in str(info.value) and "is not on this host" in str(info.value)
    assert await driver.inventory() == []


async def test_unreachable_engine_is_runtime_unavailable(tmp_path):
    d = DockerDriver("nobody", docker_host=f"unix://{tmp_path}/missing.sock")
    try:
        with pytest.raises(RuntimeUnavailable, match="not reachable at unix://"):
            await d.ping()
        with pytest.raises(RuntimeUnavailable):
            await d.inventory()
    finally:
        await d.aclose()


async def test_labels_on_the_container(driver, owner, project):
    inst = await driver.create(
        request(owner, project, ServiceSpec(name="web", image=IMAGE, command=SLEEPER))
    )
    labels = inspect(inst.runtime_id)["Config"]["Labels"]
    assert (
        labels[LABEL_INSTANCE] == inst.id
        and labels[LABEL_SERVICE] == "web"
        and labels[LABEL_PROJECT] == project
    )


async def test_empty_entrypoint_resets_the_images(driver, owner, project):
    tag = f"mariposa-test/entrypoint-{uuid.uuid4().hex[:8]}:latest"
    box = docker("create", IMAGE, "sh").stdout.strip()
    try:
        docker("commit", "--change", 'ENTRYPOINT ["/bin/echo", "from-image"]', box, tag)
        spec = ServiceSpec(
            name="ep", image=tag, entrypoint=(), command=("sh", "-c", "echo from-command")
        )
        inst = await driver.create(request(owner, project, spec))
        assert inspect(inst.runtime_id)["Config"]["Entrypoint"] in (None, [])

        async def logs():
            return docker("logs", inst.runtime_id).stdout.strip()

        assert await wait_for(logs) == "from-command"
    finally:
        purge(owner)
        docker("rm", "-f", box, check=False)
        docker("rmi", tag, check=False)


async def test_event_stream_drop_raises_and_survives_chunk_splits(tmp_path):
    """A fake Engine that splits one event across chunks and then hangs up mid-stream."""
    path = str(tmp_path / "fake.sock")
    event = (
        json.dumps(
            {
                "Type": "container",
                "Action": "die",
                "Actor": {"Attributes": {LABEL_INSTANCE: "abc", "exitCode": "3"}},
            }
        ).encode()
        + b"\n"
    )
    half = len(event) // 2

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    async def serve(sock):
        with sock:
            await sock.recv(65536)
            await sock.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            await sock.send(chunk(event[:half]))
            await trio.sleep(0.05)
            await sock.send(chunk(event[half:]))
            await trio.sleep(0.05)
            await sock.send(b'5\r\n{"Ty')  # cut off mid-chunk

    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(1)
    d = DockerDriver("fake", docker_host=f"unix://{path}")
    seen = []
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def accept():
                    conn, _ = await listener.accept()
                    await serve(conn)

                nursery.start_soon(accept)
                with pytest.raises(RuntimeUnavailable):
                    async with aclosing(d.events()) as events:
                        async for ev in events:
                            seen.append(ev)
    finally:
        listener.close()
        await d.aclose()
    assert [(e.action, e.instance_id, e.exit_code) for e in seen] == [("die", "abc", 3)]


BURNER = ("sh", "-c", "while :; do :; done")


async def _cores_used(driver, inst, seconds: float = 3.0) -> float:
    first = await driver.stats(inst)
    await trio.sleep(seconds)
    second = await driver.stats(inst)
    assert first is not None and second is not None
    return (second.cpu_ns - first.cpu_ns) / 1e9 / (second.when - first.when)


async def test_stats_show_a_burner_near_a_core_an_idle_one_near_none_and_the_limits(driver, owner, project):
    burner = await driver.create(request(owner, project, ServiceSpec(name="burn", image=IMAGE, command=BURNER)))
    idle = await driver.create(request(owner, project, ServiceSpec(name="idle", image=IMAGE, command=SLEEPER,
                                                                   memory=48 << 20, cpus=0.5)))
    async with trio.open_nursery() as nursery:  # side by side: the same few seconds of a loaded host
        used: dict[str, float] = {}

        async def measure(inst) -> None:
            used[inst.service] = await _cores_used(driver, inst)

        nursery.start_soon(measure, burner)
        nursery.start_soon(measure, idle)
    assert used["burn"] > 0.5, used  # ~1.0 of a core; others' tests share the 2 cores
    assert used["idle"] < 0.1, used
    reading = await driver.stats(idle)
    assert reading is not None
    assert (reading.memory_limit, reading.cpu_limit) == (48 << 20, 0.5)
    assert 0 < reading.memory < 48 << 20
    # ten datagrams of 1000 bytes to it: the container's received bytes, and its answers
    # (ICMP port unreachable, rate-limited: one at least) its sent bytes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(10):
            s.sendto(b"x" * 1000, (idle.address, 9))
    await trio.sleep(0.5)
    after = await driver.stats(idle)
    assert after is not None
    assert after.net_rx - reading.net_rx >= 10_000 and after.net_tx > reading.net_tx
    free = await driver.stats(burner)
    assert free is not None and (free.memory_limit, free.cpu_limit) == (None, None)


async def test_engine_api_stats_agree_with_the_cgroup_files(driver, owner, project):
    """The fallback (a remote Engine) reads the same counters, through the Engine's one-shot stats."""
    inst = await driver.create(request(owner, project, ServiceSpec(name="idle", image=IMAGE, command=SLEEPER,
                                                                   memory=48 << 20, cpus=0.5)))
    api = DockerDriver(owner, stats_source="api")
    try:
        files, engine = await driver.stats(inst), await api.stats(inst)
        assert files is not None and engine is not None
        assert (engine.memory_limit, engine.cpu_limit) == (files.memory_limit, files.cpu_limit) == (48 << 20, 0.5)
        assert abs(engine.cpu_ns - files.cpu_ns) < 50_000_000  # idle: the same counter, read 1 s apart at most
        assert engine.net_rx >= files.net_rx and abs(engine.memory - files.memory) < 4 << 20
        await driver.stop(inst, timeout=1)
        assert await api.stats(inst) is None and await driver.stats(inst) is None
    finally:
        await api.aclose()


async def test_stats_follow_a_restart_and_skip_a_pause(driver, owner, project):
    inst = await driver.create(request(owner, project, ServiceSpec(name="idle", image=IMAGE, command=SLEEPER)))
    assert await driver.stats(inst) is not None
    first_pid = inspect(inst.runtime_id)["State"]["Pid"]
    docker("pause", inst.runtime_id)
    assert await driver.stats(inst) is None  # paused is not running
    docker("unpause", inst.runtime_id)
    assert await driver.stats(inst) is not None
    docker("restart", "-t", "0", inst.runtime_id)
    assert inspect(inst.runtime_id)["State"]["Pid"] != first_pid
    after = await driver.stats(inst)  # the cached pid is dead: the driver asks the Engine again
    assert after is not None and after.memory > 0
    docker("kill", inst.runtime_id)
    assert await driver.stats(inst) is None
    await driver.remove(inst)
    assert await driver.stats(inst) is None
