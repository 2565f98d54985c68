"""The Swarm driver's reading of the Engine's tasks and events (mariposa/swarm/driver.py): task
states in Mariposa's vocabulary, which tasks are shown, a task as an ``Instance``; and its refusal
to make or stop a cluster task one by one."""

from __future__ import annotations

import pytest

from mariposa.drivers.base import DriverError
from mariposa.drivers.docker import DockerDriver
from mariposa.model import Instance, InstanceState
from mariposa.swarm.driver import SwarmDriver, parse_time, reported, task_instance, task_state

SERVICE = {"ID": "svc1", "Spec": {"Name": "mariposa-shop-web-abcdef12", "Labels": {
    "io.mariposa.project": "abcdef1234", "io.mariposa.project-name": "shop", "io.mariposa.service": "web",
    "io.mariposa.spec-hash": "h-service", "io.mariposa.version": "v-service", "io.mariposa.image": "busybox"}}}


def task(id_: str, slot: int, state: str, desired: str = "running", created: str = "2026-11-27T16:00:00.123456789Z",
         code: int | None = None) -> dict:
    return {"ID": id_, "ServiceID": "svc1", "Slot": slot, "NodeID": "node1", "DesiredState": desired,
            "CreatedAt": created,
            "Status": {"State": state, "ContainerStatus": {"ContainerID": f"c-{id_}", "ExitCode": code},
                       "PortStatus": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 30001,
                                                 "PublishMode": "host"}]}},
            "Spec": {"ContainerSpec": {"Labels": {"io.mariposa.spec-hash": "h-task", "io.mariposa.version": "v-task"}}},
            "NetworksAttachments": [
                {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.9/24"]},
                {"Network": {"Spec": {"Name": "mariposa-shop-abcdef12-overlay"}}, "Addresses": ["10.0.5.7/24"]}]}


@pytest.mark.parametrize(("state", "expected"), [
    ("new", (InstanceState.CREATING, None)), ("preparing", (InstanceState.CREATING, None)),
    ("starting", (InstanceState.CREATING, None)), ("running", (InstanceState.RUNNING, None)),
    ("complete", (InstanceState.EXITED, 0)), ("failed", (InstanceState.EXITED, 137)),
    ("rejected", (InstanceState.EXITED, 137)), ("orphaned", (InstanceState.UNKNOWN, None)),
])
def test_task_states(state, expected):
    assert task_state(task("t", 1, state, code=137)) == expected


def test_a_failed_task_without_a_container_exit_code_exits_1():
    assert task_state(task("t", 1, "rejected", code=None)) == (InstanceState.EXITED, 1)


def test_shown_tasks_are_the_running_ones_and_a_slots_newest_failure_while_it_is_down():
    tasks = [
        task("run1", 1, "running"),
        task("old1", 1, "failed", desired="shutdown"),  # slot 1 runs again: history
        task("f2a", 2, "failed", desired="shutdown", created="2026-11-27T16:00:01Z"),
        task("f2b", 2, "failed", desired="shutdown", created="2026-11-27T16:00:05Z"),
        task("new2", 2, "preparing"),
        task("gone3", 3, "shutdown", desired="shutdown"),
    ]
    assert sorted(t["ID"] for t in reported(tasks)) == ["f2b", "new2", "run1"]


def test_a_task_as_an_instance():
    inst = task_instance(task("t1", 2, "running"), SERVICE)
    assert inst == Instance(
        id="t1", runtime_id="c-t1", name="shop-web.2", project_id="abcdef1234", service="web", spec_hash="h-task",
        version_id="v-task", state=InstanceState.RUNNING, created=parse_time("2026-11-27T16:00:00.123456Z"),
        image="busybox", address="10.0.5.7", ports=inst.ports, compute_type="docker", project_name="shop")
    assert [str(p) for p in inst.ports] == ["0.0.0.0:30001->80/tcp"]
    canary = task_instance(task("t2", 1, "failed", code=3), {**SERVICE, "Spec": {**SERVICE["Spec"],
                                                                                 "Name": "x-canary"}})
    assert canary.name == "shop-web-canary.1" and canary.exit_code == 3 and canary.address is None


def test_time_with_nanoseconds():
    assert parse_time("1970-01-01T00:00:01.500000999Z") == 1.5
    assert parse_time("") == 0.0 and parse_time("garbage") == 0.0


async def test_a_cluster_task_is_not_made_or_stopped_one_by_one():
    driver = SwarmDriver("owner1", DockerDriver("owner1", "unix:///nonexistent.sock"), "unix:///nonexistent.sock")
    inst = task_instance(task("t1", 1, "running"), SERVICE)
    for call in (driver.start(inst), driver.stop(inst), driver.remove(inst), driver.signal(inst, "SIGHUP")):
        with pytest.raises(DriverError, match="Swarm task is not made, started or stopped one by one"):
            await call
    await driver.aclose()


def test_events_are_this_owners_tasks_services_and_runs():
    driver = SwarmDriver("owner1", DockerDriver("owner1", "unix:///nonexistent.sock"), "unix:///nonexistent.sock")
    die = driver._event({"Type": "container", "Action": "die", "timeNano": 5_000_000_000, "Actor": {"Attributes": {
        "com.docker.swarm.task.id": "t1", "io.mariposa.project": "p", "io.mariposa.service": "web",
        "exitCode": "137"}}})
    assert die is not None and (die.action, die.instance_id, die.exit_code, die.cursor) == ("die", "t1", 137,
                                                                                            "5000000000")
    assert driver._event({"Type": "container", "Action": "die", "Actor": {"Attributes": {"name": "other"}}}) is None
    assert driver._event({"Type": "service", "Action": "update", "Actor": {"Attributes": {"name": "theirs"}}}) is None
    update = driver._event({"Type": "service", "Action": "update", "Actor": {"Attributes": {
        "name": "mariposa-shop-web-abcdef12"}}})
    assert update is not None and update.action == "service_update"


def test_a_node_event_wakes_the_node_watch():
    """swarm/moves.py looks at once when a node changes: its reschedule is otherwise unannounced."""
    driver = SwarmDriver("owner1", DockerDriver("owner1", "unix:///nonexistent.sock"), "unix:///nonexistent.sock")
    assert not driver.node_changed.is_set()
    event = driver._event({"Type": "node", "Action": "update", "Actor": {"ID": "n2", "Attributes": {
        "name": "swarmnode-2", "state.old": "ready", "state.new": "down"}}})
    assert event is not None and event.action == "node_update"
    assert driver.node_changed.is_set()
