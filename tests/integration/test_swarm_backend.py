"""The Swarm backend (``cluster = "swarm"``) through a real daemon on the real single-node Swarm of
this host: a Docker service becomes a Swarm service, its tasks are the instances Mariposa lists,
and scale, rolling updates, canaries, reverts and project deletes go through the Swarm.

This kernel has no IPVS: the manifest uses ``endpoint_mode: dnsrr`` and its port is published in
host mode (on a port the Engine picks). Each daemon has an owner of its own; whatever a test
leaves is removed by the fixture (services, networks, secrets of that owner), the swarm is never
left or pruned: other sessions share it.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest

from tests.integration.harness import IMAGE, Daemon, docker, wait_until

pytestmark = pytest.mark.docker

WEB = """services:
  web:
    image: {image}
    scale: {scale}
    endpoint_mode: dnsrr
    ports: [80]
    min_healthy_time: 0.5
    environment:
      COLOR: {color}
    command: sh -c 'mkdir -p /www && echo $COLOR > /www/index.html && exec httpd -f -p 80 -h /www'
"""


def manifest(tmp_path, name: str, color: str, scale: int = 2) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(WEB.format(image=IMAGE, scale=scale, color=color))
    return str(path)


def swarm_objects(owner: str) -> dict[str, list[str]]:
    """Every Swarm service, network, secret and config labelled with ``owner``."""
    out = {}
    for kind in ("service", "network", "secret", "config"):
        args = [kind, "ls", "-q", "--filter", f"label=io.mariposa.owner={owner}"]
        out[kind] = docker(*args).split()
    return out


def remove_all(owner: str) -> None:
    objects = swarm_objects(owner)
    for service in objects["service"]:
        docker("service", "rm", service, check=False)
    anchors = docker("ps", "-aq", "--filter", f"label=io.mariposa.anchor={owner}").split()
    if anchors:  # the overlay anchors (mariposa/swarm/anchor.py) hold an endpoint on the overlays
        docker("rm", "-f", *anchors, check=False)
    deadline = time.monotonic() + 60
    while objects["network"] and time.monotonic() < deadline:
        for net in objects["network"]:
            docker("network", "rm", net, check=False)
        time.sleep(0.5)
        objects = swarm_objects(owner)
    for kind in ("secret", "config"):
        for one in objects[kind]:
            docker(kind, "rm", one, check=False)


@pytest.fixture
def swarm_daemon(tmp_path, swarm_manager):
    d = Daemon(tmp_path).start("--cluster", "swarm")
    try:
        yield d
    finally:
        owner = d.owner
        d.kill()
        if owner:
            remove_all(owner)


def tasks(daemon: Daemon) -> list[dict]:
    """The service's instances as `service instances --json` prints them."""
    return daemon.api("/v1/projects/sw/services/web/instances")


def running(daemon: Daemon) -> list[dict]:
    return [i for i in tasks(daemon) if i["state"] == "running"]


def swarm_running(service: str) -> int:
    """Running tasks of a Swarm service, as `docker service ps` shows them."""
    out = docker("service", "ps", service, "--format", "{{json .}}", "--filter", "desired-state=running", check=False)
    states = [json.loads(line)["CurrentState"] for line in out.splitlines() if line.strip()]
    return sum(1 for state in states if state.startswith("Running"))


def seq_of(daemon: Daemon) -> dict[str, int]:
    return {v["id"]: v["seq"] for v in daemon.json("project", "versions", "sw")}


def versions_running(daemon: Daemon) -> list[int]:
    seq = seq_of(daemon)
    return sorted(seq[i["version_id"]] for i in running(daemon))


def main_service(daemon: Daemon) -> str:
    return main_service_of(daemon, "sw")


def main_service_of(daemon: Daemon, project_name: str) -> str:
    project = daemon.json("project", "get", project_name)
    pid = project.get("id") or project["project"]["id"]
    return f"mariposa-{project_name}-web-{pid[:8]}"


def test_swarm_service_lifecycle(swarm_daemon: Daemon, tmp_path):
    d = swarm_daemon
    d.cli("project", "add", "sw", manifest(tmp_path, "v1", "blue"), "--wait")
    wait_until(lambda: len(running(d)) == 2, timeout=60, what="2 tasks running")
    listed = tasks(d)
    assert all(i["compute_type"] == "docker" and i["address"] for i in listed), listed
    assert sorted(i["name"] for i in listed) == ["sw-web.1", "sw-web.2"]
    assert all(i["ports"] for i in listed), "host-mode ports published"
    name = main_service(d)
    spec = json.loads(docker("service", "inspect", name))[0]["Spec"]
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    assert not d.running(), "no local container: the tasks are the Swarm's"
    blue = listed[0]["spec_hash"]

    # scale through Mariposa
    d.cli("-j", "sw", "service", "scale", "web", "10", "--wait")
    wait_until(lambda: len(running(d)) == 10 and swarm_running(name) == 10, timeout=120, what="10 tasks")

    # a rolling update two at a time never drops below 10 running
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(swarm_running(name))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        d.cli("project", "update", "sw", manifest(tmp_path, "v2", "green", scale=10), "--rolling", "2", "--wait",
              timeout=300)
    finally:
        stop.set()
        sampler.join()
    assert samples and min(samples) >= 10, samples
    wait_until(lambda: versions_running(d) == [2] * 10, timeout=60, what="10 tasks of version 2")
    spec = json.loads(docker("service", "inspect", name))[0]["Spec"]
    assert spec["UpdateConfig"]["Parallelism"] == 2 and spec["UpdateConfig"]["FailureAction"] == "pause"

    # a canary: one task on version 3, nine still on 2
    d.cli("project", "update", "sw", manifest(tmp_path, "v3", "red", scale=10), "--canary", "1", "--wait",
          timeout=300)
    wait_until(lambda: versions_running(d) == [2] * 9 + [3], timeout=60, what="a canary of version 3")
    assert swarm_running(name + "-canary") == 1
    time.sleep(4)  # the reconciler (resync 2 s) leaves the canary and the rest alone
    assert versions_running(d) == [2] * 9 + [3]

    # revert to version 1 (a new version with its manifest, so its scale: 2): the main service back on
    # its spec, the canary gone
    d.cli("project", "revert", "sw", "1", "--rolling", "5", "--wait", timeout=300)
    wait_until(lambda: [i["spec_hash"] for i in running(d)] == [blue] * 2, timeout=120,
               what="2 tasks of version 1's spec")
    assert name + "-canary" not in docker("service", "ls", "--format", "{{.Name}}")

    # delete: nothing of the project is left on the Swarm
    d.cli("project", "delete", "sw", "--wait", timeout=300)
    assert swarm_objects(d.owner or "") == {"service": [], "network": [], "secret": [], "config": []}


def test_swarm_task_exit_is_an_event(swarm_daemon: Daemon, tmp_path):
    """A task that dies is restarted by the Swarm; Mariposa records its exit as an event."""
    d = swarm_daemon
    d.cli("project", "add", "sw", manifest(tmp_path, "v1", "blue", scale=1), "--wait")
    wait_until(lambda: len(running(d)) == 1, timeout=60, what="1 task running")
    first = running(d)[0]
    docker("kill", first["runtime_id"])
    wait_until(lambda: any(e["type"] == "instance.exit" for e in d.json("-j", "sw", "events")),
               timeout=30, what="an exit event")
    wait_until(lambda: len(running(d)) == 1 and running(d)[0]["id"] != first["id"], timeout=60,
               what="the Swarm's replacement task")


SECRET = """services:
  web:
    image: {image}
    endpoint_mode: dnsrr
    command: sleep 100000
    secrets: [token]
"""


def test_secrets_become_swarm_secrets_and_go_with_the_project(swarm_daemon: Daemon, tmp_path):
    d = swarm_daemon
    value = f"canary-{uuid.uuid4().hex}"
    d.cli("-j", "sw", "secret", "set", "token", input=value)
    path = tmp_path / "s.yaml"
    path.write_text(SECRET.format(image=IMAGE))
    d.cli("project", "add", "sw", str(path), "--wait")
    wait_until(lambda: len(running(d)) == 1, timeout=60, what="1 task running")
    container = running(d)[0]["runtime_id"]
    assert docker("exec", container, "cat", "/run/secrets/token") == value
    assert len(swarm_objects(d.owner or "")["secret"]) == 1
    assert value not in d.log.read_text() and value not in d.cli("-j", "sw", "events").stdout
    d.cli("project", "delete", "sw", "--wait", timeout=300)
    assert swarm_objects(d.owner or "") == {"service": [], "network": [], "secret": [], "config": []}


TWO = """services:
  web:
    image: {image}
    endpoint_mode: dnsrr
    command: sleep 100000
    scale: 2
  api:
    image: {image}
    endpoint_mode: dnsrr
    command: sleep 100000
"""


def test_stop_start_and_a_deleted_service(swarm_daemon: Daemon, tmp_path):
    """Stopped is 0 replicas (the service stays, so start is a scale back); a service deleted from
    the project takes its Swarm service with it; the reconciler puts back what someone removed."""
    d = swarm_daemon
    path = tmp_path / "two.yaml"
    path.write_text(TWO.format(image=IMAGE))
    d.cli("project", "add", "sw", str(path), "--wait")
    name = main_service(d)
    api = name.replace("-web-", "-api-")
    wait_until(lambda: swarm_running(name) == 2 and swarm_running(api) == 1, timeout=60, what="3 tasks")
    d.cli("project", "stop", "sw", "--wait")
    spec = json.loads(docker("service", "inspect", name))[0]["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 0
    wait_until(lambda: running(d) == [], timeout=60, what="no task of web")
    d.cli("project", "start", "sw", "--wait")
    wait_until(lambda: len(running(d)) == 2, timeout=60, what="2 tasks of web again")

    d.cli("-j", "sw", "service", "delete", "api", "--wait")
    assert api not in docker("service", "ls", "--format", "{{.Name}}").split()

    docker("service", "rm", name)  # drift: the reconciler (resync 2 s) makes it again
    wait_until(lambda: name in docker("service", "ls", "--format", "{{.Name}}").split() and len(running(d)) == 2,
               timeout=60, what="web made again by the reconciler")


def test_a_failed_rollout_pauses_and_the_old_version_keeps_serving(swarm_daemon: Daemon, tmp_path):
    """A new version whose tasks die: the Swarm pauses the update (FailureAction pause), the task
    fails with the Swarm's message and rolls the updated slots back; the old tasks keep running.
    A revert (to the spec that runs) is then nothing to do on the Swarm."""
    d = swarm_daemon
    d.cli("project", "add", "sw", manifest(tmp_path, "v1", "blue", scale=3), "--wait")
    wait_until(lambda: len(running(d)) == 3, timeout=60, what="3 tasks")
    blue = running(d)[0]["spec_hash"]
    bad = tmp_path / "bad.yaml"
    text = WEB.format(image=IMAGE, scale=3, color="black")
    text = text.replace("command: sh -c '", "command: sh -c 'sleep 0.5; exit 3; ")
    bad.write_text(text.replace("min_healthy_time: 0.5", "min_healthy_time: 3"))  # the Swarm monitors a new task 3 s
    r = d.cli("project", "update", "sw", str(bad), "--wait", check=False, timeout=300)
    assert r.returncode != 0 and "rollout paused by the Swarm" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "rolled back: the old version keeps serving" in r.stdout + r.stderr, r.stdout + r.stderr
    # the task waited for the Swarm's rollback: when --wait returns, v1 serves at full strength
    spec = json.loads(docker("service", "inspect", main_service(d)))[0]["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Labels"]["io.mariposa.spec-hash"] == blue
    assert swarm_running(main_service(d)) == 3
    wait_until(lambda: [i["spec_hash"] for i in running(d)] == [blue] * 3, timeout=30,
               what="the daemon's inventory: 3 tasks of v1")
    assert any(e["type"] == "rollout.failed" for e in d.json("-j", "sw", "events"))
    d.cli("project", "revert", "sw", "1", "--wait", timeout=300)
    wait_until(lambda: [i["spec_hash"] for i in running(d)] == [blue] * 3, timeout=120, what="3 tasks of v1")


DEPENDS = """services:
  web:
    image: {image}
    endpoint_mode: dnsrr
    command: sleep 100000
    depends_on: [db]
  db:
    image: {image}
    endpoint_mode: dnsrr
    command: sleep 100000
    scale: {db}
"""


def test_first_tasks_wait_for_their_dependencies(swarm_daemon: Daemon, tmp_path):
    """``depends_on``: the Swarm service of web is made once db's tasks run, not before."""
    d = swarm_daemon
    path = tmp_path / "dep.yaml"
    path.write_text(DEPENDS.format(image=IMAGE, db=0))
    d.cli("project", "add", "sw", str(path))
    wait_until(lambda: any(e["type"] == "service.waiting" for e in d.json("-j", "sw", "events")), timeout=60,
               what="web waiting for db")
    assert main_service(d) not in docker("service", "ls", "--format", "{{.Name}}").split()
    path.write_text(DEPENDS.format(image=IMAGE, db=1))
    d.cli("project", "update", "sw", str(path), "--wait", timeout=300)
    wait_until(lambda: len(running(d)) == 1, timeout=60, what="web's task, once db runs")


ONE_PER_NODE = """services:
  web:
    image: {image}
    endpoint_mode: dnsrr
    command: sh -c 'echo {color}; exec sleep 100000'
    affinity: ["service!=web"]
"""


def test_one_per_node_rolls_stop_first_and_says_so(swarm_daemon: Daemon, tmp_path):
    """A hard one-per-node rule on a one-node Swarm leaves no room for a surge task: the service
    rolls stop-first (MaxReplicas 1), and the task's progress says surge 0."""
    d = swarm_daemon
    path = tmp_path / "one.yaml"
    path.write_text(ONE_PER_NODE.format(image=IMAGE, color="blue"))
    d.cli("project", "add", "sw", str(path), "--wait")
    path.write_text(ONE_PER_NODE.format(image=IMAGE, color="green"))
    d.cli("project", "update", "sw", str(path), "--wait", timeout=300)
    spec = json.loads(docker("service", "inspect", main_service(d)))[0]["Spec"]
    assert spec["UpdateConfig"]["Order"] == "stop-first"
    assert spec["TaskTemplate"]["Placement"]["MaxReplicas"] == 1
    task = next(t for t in d.json("-j", "sw", "queue", "list") if t["kind"] == "reprovision")
    assert "surge 0" in json.dumps(task["progress"]), task
    wait_until(lambda: len(running(d)) == 1, timeout=60, what="the new task")


CHECKED = """services:
  web:
    image: {image}
    endpoint_mode: dnsrr
    scale: 2
    command: sh -c 'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www'
    healthchecks:
      - type: http
        port: 80
        path: {path}
        poll: 0.5
        retries: 2
        timeout: 2
"""


def test_health_checks_probe_tasks_inside_their_overlay(swarm_daemon: Daemon, tmp_path):
    """The daemon's HTTP probes reach the tasks' overlay addresses (from inside the overlay's
    namespace): healthy when the page is there, unhealthy when it is not."""
    d = swarm_daemon
    path = tmp_path / "checked.yaml"
    path.write_text(CHECKED.format(image=IMAGE, path="/index.html"))
    d.cli("project", "add", "sw", str(path), "--wait")
    wait_until(lambda: [i["health"] for i in running(d)] == ["healthy", "healthy"], timeout=60,
               what="2 healthy tasks")
    path.write_text(CHECKED.format(image=IMAGE, path="/missing.html"))
    d.cli("project", "update", "sw", str(path), "--wait", timeout=300)
    wait_until(lambda: [i["health"] for i in running(d)] == ["unhealthy", "unhealthy"], timeout=60,
               what="2 unhealthy tasks")


MDATA = """services:
  web:
    image: {image}
    endpoint_mode: dnsrr
    scale: 2
    min_healthy_time: 0.5
    command: sleep 100000
    mdata:
      color: "{{{{ .meta.color }}}}"
      project: "{{{{ .project.name }}}}"
"""


def task_files(daemon: Daemon, key: str) -> set[str]:
    """What each running task reads at /run/mariposa/mdata/KEY (its container is on this node)."""
    out = set()
    for task in running(daemon):
        out.add(docker("exec", task["runtime_id"], "cat", f"/run/mariposa/mdata/{key}", check=False))
    return out


def test_live_mdata_are_swarm_configs_renewed_on_a_meta_change(swarm_daemon: Daemon, tmp_path):
    """Each mdata file is a Swarm config mounted where the local driver mounts it; ``meta set``
    makes a new config and rolls the tasks onto it; the old config goes, and the last with the
    project. mdata_signal is refused at version time, with the reason."""
    d = swarm_daemon
    path, meta = tmp_path / "m.yaml", tmp_path / "meta.yaml"
    path.write_text(MDATA.format(image=IMAGE))
    meta.write_text("color: blue\n")
    d.cli("project", "add", "sw", str(path), "--meta", str(meta), "--wait", timeout=300)
    wait_until(lambda: len(running(d)) == 2, timeout=60, what="2 tasks running")
    assert task_files(d, "color") == {"blue"} and task_files(d, "project") == {"sw"}
    owner = d.owner or ""
    assert len(swarm_objects(owner)["config"]) == 2  # one per file

    d.cli("-j", "sw", "meta", "set", "color", "red")
    wait_until(lambda: len(running(d)) == 2 and task_files(d, "color") == {"red"}, timeout=120,
               what="both tasks read the new value")
    assert task_files(d, "project") == {"sw"}
    spec = json.loads(docker("service", "inspect", main_service(d)))[0]["Spec"]
    names = sorted(c["ConfigName"] for c in spec["TaskTemplate"]["ContainerSpec"]["Configs"])
    # the config of the old value goes once no service names it (the previous spec is kept for a
    # rollback until the next update, so it may take one more change)
    d.cli("-j", "sw", "meta", "set", "color", "green")
    wait_until(lambda: len(running(d)) == 2 and task_files(d, "color") == {"green"}, timeout=120,
               what="both tasks read green")
    wait_until(lambda: len(swarm_objects(owner)["config"]) <= 3, timeout=60, what="the blue config removed")
    left = {n for n in docker("config", "ls", "--format", "{{.Name}}", "--filter",
                              f"label=io.mariposa.owner={owner}").split()}
    assert not any(n.endswith("-" + _digest("blue")) for n in left), left
    assert set(names) <= left  # red's, still the previous spec's
    assert "updating Swarm service" in d.cli("-j", "sw", "events").stdout

    d.cli("project", "delete", "sw", "--wait", timeout=300)
    assert swarm_objects(owner) == {"service": [], "network": [], "secret": [], "config": []}

    signalled = tmp_path / "sig.yaml"
    signalled.write_text(MDATA.format(image=IMAGE) + "    mdata_signal: SIGHUP\n")
    refused = d.cli("project", "add", "sw2", str(signalled), "--meta", str(meta), check=False)
    assert refused.returncode != 0 and "mdata_signal cannot be honoured on the Swarm" in refused.stderr


def _digest(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()[:12]


def anchors(owner: str) -> dict[str, dict]:
    """The owner's overlay anchors (mariposa/swarm/anchor.py) by name, as `docker inspect` shows them."""
    ids = docker("ps", "-aq", "--filter", f"label=io.mariposa.anchor={owner}").split()
    return {c["Name"].lstrip("/"): c for c in json.loads(docker("inspect", *ids))} if ids else {}


def test_the_anchor_keeps_the_overlay_namespace_for_the_probes(swarm_daemon: Daemon, tmp_path):
    """The overlay anchor: made with the project's overlay, it keeps the overlay's namespace on the
    daemon's node while the service has no task (stopped: 0 replicas), so the probes of the tasks
    started again reach them; deleting the project removes its anchor and overlay, not another's."""
    d = swarm_daemon
    path = tmp_path / "checked.yaml"
    path.write_text(CHECKED.format(image=IMAGE, path="/index.html"))
    d.cli("project", "add", "sw", str(path), "--wait")
    d.cli("project", "add", "other", str(path), "--wait")
    ids = {p: main_service_of(d, p).rsplit("-", 1)[1] for p in ("sw", "other")}  # the first 8 of the id
    names = {p: f"mariposa-anchor-{p}-{ids[p][:8]}" for p in ids}
    found = anchors(d.owner)
    assert set(found) == set(names.values())
    mine = found[names["sw"]]
    assert mine["State"]["Running"] and mine["HostConfig"]["Init"] is True
    assert mine["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert mine["Config"]["Image"] == "mariposa/anchor:1"
    assert "io.mariposa.owner" not in mine["Config"]["Labels"]  # never an instance to the Docker driver
    [(overlay, endpoint)] = mine["NetworkSettings"]["Networks"].items()
    assert overlay == f"mariposa-sw-{ids['sw'][:8]}-overlay"
    netns = f"/var/run/docker/netns/1-{endpoint['NetworkID'][:10]}"

    # (a) no task of web, the anchor and the namespace stay
    d.cli("-j", "sw", "service", "stop", "web", "--wait")
    wait_until(lambda: swarm_running(main_service(d)) == 0, timeout=60, what="no task of web")
    assert anchors(d.owner)[names["sw"]]["State"]["Running"]
    assert os.path.exists(netns)
    assert running(d) == []

    # (b) started again: the probes reach the new tasks through the anchor's namespace
    d.cli("-j", "sw", "service", "start", "web", "--wait")
    wait_until(lambda: [i["health"] for i in running(d)] == ["healthy", "healthy"], timeout=60,
               what="2 healthy tasks")

    # (c) the project's delete removes its anchor and overlay, and nothing of the other project
    d.cli("project", "delete", "sw", "--wait")
    found = anchors(d.owner)
    assert set(found) == {names["other"]} and found[names["other"]]["State"]["Running"]
    nets = docker("network", "ls", "--format", "{{.Name}}", "--filter", f"label=io.mariposa.owner={d.owner}").split()
    assert not [n for n in nets if ids["sw"][:8] in n]
    assert [n for n in nets if ids["other"][:8] in n]
    assert swarm_running(main_service_of(d, "other")) == 2


UNRUNNABLE = """services:
  db:
    image: {image}
    endpoint_mode: dnsrr
    command: sleep 100000
  web:
    image: {image}
    endpoint_mode: dnsrr
    scale: 2
    command: sleep 100000
    affinity:
      - service!=web
      - service==db
    tmpfs:
      - /scratch:noexec
    depends_on: [db]
"""


def test_what_the_swarm_cannot_run_is_refused_when_the_version_is_made(swarm_daemon: Daemon, tmp_path):
    """Anti-affinity inside one service beyond one per node (2 instances, one node) and a tmpfs
    option Swarm has not (noexec) are refused by ``project add``, at their lines, and nothing is made; a rule about a
    service that does not run yet (``service==db``) is not: web's task places it once db runs
    (``depends_on`` holds web's first tasks until then; without it, the task fails and is retried)."""
    d = swarm_daemon
    path = tmp_path / "bad.yaml"
    path.write_text(UNRUNNABLE.format(image=IMAGE))
    r = d.cli("project", "add", "sw", str(path), check=False)
    assert r.returncode != 0
    assert (f"{path}:11:5: services.web.affinity: cannot run on the Swarm: 2 instances at most one per node "
            "need 2 eligible nodes; the Swarm has 1") in r.stderr, r.stderr
    assert f"{path}:14:5: services.web.tmpfs: cannot run on the Swarm: " in r.stderr, r.stderr
    assert "service==db" not in r.stderr, r.stderr
    assert "sw" not in [p["name"] for p in d.json("project", "list")]
    names = docker("service", "ls", "--format", "{{.Name}}").split()
    assert not [n for n in names if "-sw-" in n or n.startswith("sw-")]
    path.write_text(UNRUNNABLE.format(image=IMAGE).replace("    scale: 2\n", "").replace(
        "    tmpfs:\n      - /scratch:noexec\n", ""))
    d.cli("project", "add", "sw", str(path), "--wait", timeout=300)
    assert len(running(d)) == 1
