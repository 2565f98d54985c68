"""Mariposa's Swarm backend through a real daemon on a real three-node Swarm (tests/swarmnodes.py):
hard ``!=`` affinities place tasks on different nodes; a killed worker's task is rescheduled by
the Swarm and Mariposa's event log says so (``node.down``, ``instance.rescheduled``: swarm/moves.py),
once, across a daemon restart; when the node returns the service runs exactly its scale; and
``mariposa doctor`` lists the nodes, one down while it is stopped.

The daemon runs on the host, not on a node: it makes the project's overlay anchor (swarm/anchor.py)
on the manager it talks to, node 1 (checked), but the overlay namespace that keeps is node 1's,
not the host's, whose health probes enter their own node's (swarm/netns.py): so these services
have no health checks. The figures (kill to event, kill to the task running elsewhere) are printed:
``pytest -s`` shows them."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from mariposa.swarm.moves import QUIET
from tests.integration.harness import IMAGE, MARIPOSA, Daemon, wait_until
from tests.swarmnodes import Swarm

pytestmark = pytest.mark.docker

# sh as PID 1 ends on TERM at once (the trap), so a task stops in a second, not a 10 s grace
IDLE = """sh -c 'trap "exit 0" TERM; while :; do sleep 1; done'"""

APART = f"""services:
  db:
    image: {IMAGE}
    endpoint_mode: dnsrr
    command: {IDLE}
  web:
    image: {IMAGE}
    endpoint_mode: dnsrr
    command: {IDLE}
    depends_on: [db]
    affinity: ["service!=db"]
  spread:
    image: {IMAGE}
    endpoint_mode: dnsrr
    scale: 3
    command: {IDLE}
    affinity: ["service!=spread"]
"""

ON_WORKERS = f"""services:
  web:
    image: {IMAGE}
    endpoint_mode: dnsrr
    scale: 2
    command: {IDLE}
    affinity: ["node.role==worker"]
"""


@pytest.fixture
def swarm(three_node_swarm: Swarm) -> Iterator[Swarm]:
    yield three_node_swarm
    three_node_swarm.reset()


@pytest.fixture
def daemon(tmp_path, swarm: Swarm) -> Iterator[Daemon]:
    d = Daemon(tmp_path).start("--cluster", "swarm", "--docker-host", swarm.manager.host)
    try:
        yield d
    finally:
        d.kill()  # the swarm fixture's reset removes its services and networks from the nodes


def placed(swarm: Swarm, owner: str) -> dict[str, list[tuple[int, str, str]]]:
    """Service name -> (slot, task id, hostname) of its running tasks, from the manager's /tasks."""
    filters = urllib.parse.quote(json.dumps({"label": [f"io.mariposa.owner={owner}"]}))
    services = {s["ID"]: s["Spec"]["Labels"]["io.mariposa.service"]
                for s in swarm.manager.api("GET", f"/services?filters={filters}")}
    hosts = {n.node_id: n.hostname for n in swarm.nodes}
    out: dict[str, list[tuple[int, str, str]]] = {name: [] for name in services.values()}
    for t in swarm.manager.api("GET", "/tasks"):
        if t.get("ServiceID") in services and t["DesiredState"] == "running" and t["Status"]["State"] == "running":
            out[services[t["ServiceID"]]].append((t.get("Slot", 0), t["ID"], hosts.get(t.get("NodeID"), "?")))
    return {k: sorted(v) for k, v in out.items()}


def running(d: Daemon, service: str) -> list[dict]:
    return [i for i in d.api(f"/v1/projects/sw/services/{service}/instances") if i["state"] == "running"]


def events(d: Daemon, *types: str) -> list[dict]:
    return [e for e in d.api("/v1/events") if not types or e["type"] in types]


def test_hard_anti_affinity_places_tasks_on_different_nodes(daemon: Daemon, swarm: Swarm, tmp_path):
    d = daemon
    path = tmp_path / "apart.yaml"
    path.write_text(APART)
    d.cli("project", "add", "sw", str(path), "--wait", timeout=300)
    wait_until(lambda: [len(v) for _, v in sorted(placed(swarm, d.owner).items())] == [1, 3, 1], timeout=90,
               what="db 1, spread 3, web 1 running")
    where = placed(swarm, d.owner)
    assert where["web"][0][2] != where["db"][0][2], where
    assert sorted(h for _, _, h in where["spread"]) == ["swarmnode-1", "swarmnode-2", "swarmnode-3"], where
    assert len(running(d, "spread")) == 3 and len(running(d, "web")) == 1
    # the overlay anchor is on node 1, the engine the daemon talks to, attached to the project's overlay
    filters = urllib.parse.quote(json.dumps({"label": [f"io.mariposa.anchor={d.owner}"]}))
    [anchor] = swarm.manager.api("GET", f"/containers/json?filters={filters}")
    assert anchor["Names"][0].startswith("/mariposa-anchor-sw-") and anchor["State"] == "running"
    assert [n for n in anchor["NetworkSettings"]["Networks"]] == [
        n["Name"] for n in swarm.manager.api("GET", "/networks") if n["Name"].startswith("mariposa-sw-")
        and n["Name"].endswith("-overlay")]


def test_a_killed_worker_shows_as_events_and_the_scale_holds_when_it_returns(daemon: Daemon, swarm: Swarm, tmp_path):
    d = daemon
    path = tmp_path / "workers.yaml"
    path.write_text(ON_WORKERS)
    d.cli("project", "add", "sw", str(path), "--wait", timeout=300)
    wait_until(lambda: len(placed(swarm, d.owner)["web"]) == 2 and len(running(d, "web")) == 2, timeout=90,
               what="2 web tasks running")
    slot, task_id, host = placed(swarm, d.owner)["web"][0]
    assert host in ("swarmnode-2", "swarmnode-3")
    time.sleep(QUIET + 1)  # a pass of the watcher has seen the tasks where they run
    victim = swarm.node(host)

    killed = time.time()
    victim.stop(kill=True)
    moved_at: list[float] = []

    def elsewhere() -> bool:
        now = [t for t in placed(swarm, d.owner)["web"] if t[0] == slot and t[2] != host]
        if now and not moved_at:
            moved_at.append(time.time())
        return bool(now)

    wait_until(elsewhere, timeout=60, interval=0.1, what=f"web.{slot} running off {host}")
    wait_until(lambda: events(d, "node.down") and events(d, "instance.rescheduled"), timeout=60,
               what="node.down and instance.rescheduled events")
    down = events(d, "node.down")
    moved = events(d, "instance.rescheduled")
    assert [e["message"] for e in down] == [f"node {host} is down (was ready)"], down
    other = "swarmnode-3" if host == "swarmnode-2" else "swarmnode-2"
    assert [e["message"] for e in moved] == [f"sw-web.{slot} rescheduled from node {host} (down) to node {other}"]
    assert moved[0]["service"] == "web" and moved[0]["author"] == "swarm"
    # the CLI through the daemon lists them
    out = d.cli("events").stdout
    assert f"node {host} is down" in out and f"sw-web.{slot} rescheduled from node {host}" in out, out
    assert f"node {host} is down" in d.cli("events", "--type", "node").stdout  # the family of node events
    project = d.cli("-j", "sw", "events", "--type", "instance.rescheduled").stdout  # the move is the project's
    assert f"sw-web.{slot} rescheduled" in project and "node.down" not in project, project
    print(f"\nkill -> node.down event {down[0]['time'] - killed:.1f} s; kill -> task running on {other} "
          f"{moved_at[0] - killed:.1f} s; kill -> instance.rescheduled event {moved[0]['time'] - killed:.1f} s")

    # a restarted daemon records nothing twice
    d.kill()
    d.start("--cluster", "swarm", "--docker-host", swarm.manager.host)
    time.sleep(7)
    assert len(events(d, "instance.rescheduled")) == 1 and len(events(d, "node.down")) == 1

    # the node returns: its event, and the Swarm does not run more than the scale
    victim.start()
    wait_until(lambda: events(d, "node.ready"), timeout=60, what="node.ready event")
    assert events(d, "node.ready")[0]["message"] == f"node {host} is ready again (was down)"
    samples = []
    for _ in range(20):
        samples.append((len(running(d, "web")), len(placed(swarm, d.owner)["web"])))
        time.sleep(0.5)
    assert set(samples) == {(2, 2)}, samples
    assert not victim.docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name").split(), \
        "the returned node's old task was shut down"


def test_doctor_lists_the_nodes_and_one_down(swarm: Swarm, tmp_path):
    config = tmp_path / "mariposa.toml"
    config.write_text(f'docker_host = "{swarm.manager.host}"\ncluster = "swarm"\n')

    def doctor() -> dict[str, dict]:
        r = subprocess.run([MARIPOSA, "doctor", "--config", str(config), "--state-dir", str(tmp_path / "state"),
                            "--json"], capture_output=True, text=True, timeout=60)
        checks = json.loads(r.stdout)
        return {c["detail"].split()[0]: c for c in checks if c["check"] == "swarm node"}

    nodes = doctor()
    assert sorted(nodes) == ["swarmnode-1", "swarmnode-2", "swarmnode-3"], nodes
    assert "manager (leader), active, ready" in nodes["swarmnode-1"]["detail"]
    for host in ("swarmnode-2", "swarmnode-3"):
        assert "worker, active, ready" in nodes[host]["detail"] and nodes[host]["status"] == "ok"
    swarm.node("swarmnode-3").stop(kill=True)
    wait_until(lambda: swarm.node_states()["swarmnode-3"] == "down", timeout=60, what="swarmnode-3 down")
    nodes = doctor()
    assert "worker, active, down" in nodes["swarmnode-3"]["detail"] and nodes["swarmnode-3"]["status"] == "warn"
    assert nodes["swarmnode-2"]["status"] == "ok"
