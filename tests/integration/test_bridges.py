"""A project bridge's subnet is never one Docker still holds: a Docker network whose bridge is
gone (a host reboot, a cleanup that deleted bridges, a daemon killed mid-delete) keeps its
subnet in Docker's IPAM, and a new network on an overlapping subnet is refused with "Pool
overlaps with other one on this address space" (seen once in a fresh-machine run)."""

from __future__ import annotations

import hashlib
import subprocess
import uuid

import pytest

from mariposa.bridges import PREFIX, SUBNETS, Bridges, project_network
from mariposa.drivers.docker import DockerDriver
from tests.integration.harness import docker

pytestmark = pytest.mark.docker


async def test_a_subnet_a_leftover_docker_network_holds_is_passed_over(tmp_path):
    project_id = uuid.uuid4().hex
    network = project_network(project_id)
    subnets = list(SUBNETS.subnets(new_prefix=PREFIX))
    first_choice = subnets[int(hashlib.sha256(network.encode()).hexdigest()[:8], 16) % len(subnets)]
    leftover, bridge = f"leftover-{project_id[:8]}", f"mlq{project_id[:12]}"
    docker("network", "create", "--subnet", str(first_choice), "--opt",
           f"com.docker.network.bridge.name={bridge}", leftover)
    driver = DockerDriver(f"t{project_id[:8]}", bridges=Bridges(tmp_path / "networks"))
    try:
        subprocess.run(["ip", "link", "del", bridge], check=True)  # its bridge gone, its subnet still held
        assert str(first_choice) in docker("network", "inspect", leftover, "--format", "{{json .IPAM.Config}}")
        await driver.ensure_network(project_id, "leftovers")  # refused with "Pool overlaps" before
        rec = await driver.bridges.get(network)
        assert rec is not None and rec["subnet"] != str(first_choice)
        assert rec["subnet"] in docker("network", "inspect", f"mariposa-leftovers-{project_id[:8]}",
                                       "--format", "{{json .IPAM.Config}}")
    finally:
        await driver.remove_network(project_id, "leftovers")
        await driver.aclose()
        docker("network", "rm", leftover, check=False)


async def test_a_subnet_the_engine_refuses_as_taken_is_passed_over_for_another(tmp_path):
    """A pool the Engine's IPAM holds that no listed network shows (seen once more in a
    fresh-machine run, after a busy suite): the Engine says "Pool overlaps", and the driver tries
    another subnet instead of failing the task. Hidden here by a driver that lists no networks."""
    project_id = uuid.uuid4().hex
    network = project_network(project_id)
    subnets = list(SUBNETS.subnets(new_prefix=PREFIX))
    first_choice = subnets[int(hashlib.sha256(network.encode()).hexdigest()[:8], 16) % len(subnets)]
    holder = f"holder-{project_id[:8]}"
    docker("network", "create", "--subnet", str(first_choice.supernet()), "--opt",
           f"com.docker.network.bridge.name=mlh{project_id[:12]}", holder)
    driver = DockerDriver(f"t{project_id[:8]}", bridges=Bridges(tmp_path / "networks"))

    async def nothing_held() -> set[str]:
        return set()

    driver.bridges._reservations[:] = [nothing_held]  # the Engine's holding goes unseen
    subprocess.run(["ip", "link", "del", f"mlh{project_id[:12]}"], check=True)  # nor on an interface
    try:
        await driver.ensure_network(project_id, "refused")
        rec = await driver.bridges.get(network)
        assert rec is not None and rec["subnet"] != str(first_choice)
        assert rec["subnet"] in docker("network", "inspect", f"mariposa-refused-{project_id[:8]}",
                                       "--format", "{{json .IPAM.Config}}")
    finally:
        await driver.remove_network(project_id, "refused")
        await driver.aclose()
        docker("network", "rm", holder, check=False)
