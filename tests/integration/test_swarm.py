"""mariposa/swarm/ against the real single-node Swarm of this host (the engine is a manager:
``docker swarm init --advertise-addr 127.0.0.1``).

This kernel has no IPVS, so the services here use ``endpoint_mode: dnsrr`` and host-mode published
ports (a VIP and the ingress do not work on it). Everything made carries a test owner of its own
and is removed by the fixture, pass or fail; the swarm itself is never left or pruned (other
sessions share it).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import httpx
import pytest
import trio

from mariposa.model import (
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    LABEL_VERSION,
    PortSpec,
    ServiceSpec,
)
from mariposa.swarm import SwarmClient, SwarmError, place, require_manager
from mariposa.swarm.spec import overlay_name, swarm_service
from tests.integration.harness import IMAGE, Daemon, docker

pytestmark = pytest.mark.docker

HTTPD = ("sh", "-c", "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 80 -h /www")
PROJECT_ID = "5a7e0000aaaabbbbccccdddd"


def image_id() -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", IMAGE).strip()


async def purge(client: SwarmClient, owner: str) -> None:
    """Every service, then (once their tasks' endpoints are gone) every network of ``owner``."""
    for service in await client.services({LABEL_OWNER: owner}):
        await client.remove_service(service["ID"])
    with trio.move_on_after(60):
        while True:
            networks = await client.networks({LABEL_OWNER: owner})
            for net in networks:
                try:
                    await client.remove_network(net["Id"])
                except Exception:  # noqa: BLE001 - endpoints still being torn down: try again
                    pass
            if not networks:
                break
            await trio.sleep(0.5)


@pytest.fixture
async def swarm(swarm_manager):
    owner = f"swtest-{uuid.uuid4().hex[:8]}"
    async with SwarmClient() as client:
        try:
            yield client, owner
        finally:
            with trio.CancelScope(shield=True):
                await purge(client, owner)


async def running(client: SwarmClient, service: str, count: int, timeout: float = 60,
                  env: str | None = None) -> list[dict]:
    """Wait until ``count`` tasks of ``service`` run (with ``env`` as their last environment entry, if given) and
    no other task does; the running tasks."""
    with trio.fail_after(timeout):
        while True:
            tasks = [t for t in await client.tasks(service=service) if t["Status"]["State"] == "running"]
            wanted = [t for t in tasks if env is None or t["Spec"]["ContainerSpec"]["Env"][-1] == env]
            if len(wanted) == count == len(tasks):
                return tasks
            await trio.sleep(0.2)


async def test_the_engine_here_is_a_manager(swarm_manager):
    assert "manages swarm" in await require_manager(None)


def web(**changes) -> ServiceSpec:
    fields = dict(name="web", image=IMAGE, image_id=image_id(), command=HTTPD, ports=(PortSpec(80),),
                  endpoint_mode="dnsrr", stop_timeout=10, min_healthy_time=0.5, environment=(("ROUND", "1"),),
                  tags=(("tier", "front"),))
    return ServiceSpec(**{**fields, **changes})


async def test_a_mariposa_service_on_the_swarm(swarm):
    client, owner = swarm
    await client.ensure_overlay(overlay_name("swt", PROJECT_ID), {LABEL_OWNER: owner, LABEL_PROJECT: PROJECT_ID})
    nodes = await client.nodes()
    spec = web(affinity=("node.role==manager",))
    placement = place("web", "swt", spec.affinity, 1, nodes)
    out = swarm_service(owner, PROJECT_ID, "swt", "v1", spec, 1, rolling=2, placement=placement)
    assert out.ok, out.problems
    service_id = await client.create_service(out.body)

    [task] = await running(client, service_id, 1)
    service = await client.inspect_service(service_id)
    assert service is not None
    labels = service["Spec"]["Labels"]
    assert labels[LABEL_OWNER] == owner and labels[LABEL_SERVICE] == "web" and labels[LABEL_VERSION] == "v1"
    assert labels[LABEL_SPEC_HASH] == spec.spec_hash and labels["tier"] == "front"
    assert service["Spec"]["TaskTemplate"]["Placement"]["Constraints"] == ["node.role==manager"]
    assert service["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
    assert len(await client.tasks(labels={LABEL_OWNER: owner})) == 1  # tasks found by their service's labels

    # a host-mode published port: the task answers on the node's port
    [port] = [p for p in task["Status"]["PortStatus"]["Ports"] if p["PublishMode"] == "host"][:1]
    with trio.fail_after(20):
        while True:
            try:
                answer = await trio.to_thread.run_sync(
                    lambda: httpx.get(f"http://127.0.0.1:{port['PublishedPort']}/", timeout=2))
                break
            except httpx.TransportError:
                await trio.sleep(0.2)
    assert answer.text.startswith("hello from")

    # scale 1 -> 5 through an update at the version read
    await client.scale_service(service_id, 5)
    tasks = await running(client, service_id, 5)
    container = tasks[0]["Status"]["ContainerStatus"]["ContainerID"]
    # dnsrr: the alias on the project's overlay resolves to every task (Docker's DNS at 127.0.0.11)
    with trio.fail_after(30):
        while True:
            lookup = await trio.to_thread.run_sync(lambda: subprocess.run(
                ["docker", "exec", container, "nslookup", "web"], capture_output=True, text=True))
            addresses = [line for line in lookup.stdout.splitlines()[2:] if line.startswith("Address")]
            if len(addresses) == 5:
                break
            await trio.sleep(0.5)

    # a rolling update, two at a time: httpd under the init stops at once, not after the 10 s grace
    rolled = web(affinity=("node.role==manager",), environment=(("ROUND", "2"),))
    body = swarm_service(owner, PROJECT_ID, "swt", "v2", rolled, 5, rolling=2, placement=placement).body
    assert body["UpdateConfig"]["Parallelism"] == 2 and body["UpdateConfig"]["Order"] == "start-first"
    current = await client.inspect_service(service_id)
    assert current is not None
    t0 = time.monotonic()
    await client.update_service(service_id, current["Version"]["Index"], body)
    await running(client, service_id, 5, timeout=90, env="ROUND=2")
    rollout = time.monotonic() - t0
    assert rollout < 20, f"a rolling update of 5 tasks took {rollout:.1f} s: stops waited out their grace?"
    stale = await client.inspect_service(service_id)
    assert stale is not None and stale["Spec"]["Labels"][LABEL_VERSION] == "v2"
    with pytest.raises(Exception, match="out of sequence|update out of sequence|version"):
        await client.update_service(service_id, current["Version"]["Index"], body)  # someone changed it since

    # each stop: the task's container exits within a second of being told, through the init
    stopping = [t["Status"]["ContainerStatus"]["ContainerID"] for t in await running(client, service_id, 5)]
    t0 = time.monotonic()
    await client.scale_service(service_id, 0)
    with trio.fail_after(30):
        while await trio.to_thread.run_sync(lambda: docker("ps", "-q", "--no-trunc", *sum(
                (["--filter", f"id={c}"] for c in stopping), [])).split()):
            await trio.sleep(0.1)
    stop = time.monotonic() - t0
    assert stop < 8, f"5 tasks took {stop:.1f} s to stop (the grace is 10 s; without the init 11 s)"
    print(f"rolling update of 5 tasks by 2: {rollout:.1f} s; stop of 5 tasks: {stop:.2f} s")

    assert await client.remove_service(service_id) is True
    assert await client.remove_service(service_id) is False  # a replay finds nothing, and says so


async def test_secrets_and_configs_are_made_referenced_and_removed(swarm):
    client, owner = swarm
    labels = {LABEL_OWNER: owner}
    secret = await client.create_secret(f"{owner}-db", b"s3cret value", labels)
    config = await client.create_config(f"{owner}-conf", b"key=1\n", labels)
    try:
        await client.ensure_overlay(overlay_name("swt", PROJECT_ID), labels)
        spec = ServiceSpec(name="reader", image=IMAGE, image_id=image_id(), endpoint_mode="dnsrr",
                           command=("sh", "-c", "cat /run/secrets/db /run/mariposa/mdata/app.conf; exec sleep 600"),
                           secrets=("db",), mdata=(("app.conf", "key={{ .meta.k }}"),))
        out = swarm_service(owner, PROJECT_ID, "swt", "v1", spec, 1, secrets={"db": (secret, f"{owner}-db")},
                            configs={"app.conf": (config, f"{owner}-conf")})
        assert out.ok, out.problems
        service_id = await client.create_service(out.body)
        [task] = await running(client, service_id, 1)
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        with trio.fail_after(20):
            while "key=1" not in (logs := docker("logs", container)):
                await trio.sleep(0.2)
        assert logs.startswith("s3cret value")
        assert [s["ID"] for s in await client.secrets(labels)] == [secret]
        assert "s3cret" not in json.dumps(await client.secrets(labels))  # the Engine never gives a value back
        await client.remove_service(service_id)
        with trio.fail_after(30):
            while await client.tasks(service=service_id):
                await trio.sleep(0.3)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            for service in await client.services(labels):
                await client.remove_service(service["ID"])
            while True:
                try:
                    await client.remove_secret(secret)
                    await client.remove_config(config)
                    break
                except SwarmError:  # still in use by a task being torn down
                    await trio.sleep(0.5)
    assert await client.secrets(labels) == [] and await client.configs(labels) == []


def test_the_daemon_starts_on_the_swarm_manager_and_admits_hard_anti_affinity(swarm_manager, tmp_path):
    for part in "abc":
        (tmp_path / part).mkdir()
    d = Daemon(tmp_path / "a").start("--cluster", "swarm")
    try:
        (tmp_path / "m.yaml").write_text(f"services:\n  web:\n    image: {IMAGE}\n    command: ['sleep', '600']\n"
                                         "    affinity: ['service!=web']\n")
        d.cli("project", "add", "anti", str(tmp_path / "m.yaml"))
        assert "cluster: swarm" in d.log.read_text()
    finally:
        d.cleanup()
    alone = Daemon(tmp_path / "b")
    with pytest.raises(AssertionError, match="daemon exited with") as info:
        alone.start("--cluster", "swarm", "--docker-host", f"unix://{tmp_path}/no-engine.sock")
    assert 'cluster = "swarm": cannot ask the engine whether it is a swarm manager' in str(info.value)
    refused = Daemon(tmp_path / "c").start()
    try:
        r = refused.cli("project", "add", "anti", str(tmp_path / "m.yaml"), check=False)
        assert r.returncode != 0 and "hard anti-affinity" in r.stderr + r.stdout
    finally:
        refused.cleanup()
