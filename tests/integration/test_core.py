"""The core issue's acceptance tests: the real daemon process, the real CLI, the real Docker Engine."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request

import pytest

from tests.integration.harness import IMAGE, ROOT, Daemon, docker, wait_until

pytestmark = pytest.mark.docker
EXAMPLE = str(ROOT / "examples" / "jupiter.yaml")

SIMPLE = f"""
services:
  web:
    image: {IMAGE}
    scale: {{scale}}
    environment:
      COLOR: {{color}}
    command: sh -c 'echo $COLOR > /www/index.html && exec httpd -f -p 80 -h /www'
    ports: [80]
    min_healthy_time: 1
"""


def simple(tmp_path, scale=3, color="blue", name="m.yaml"):
    path = tmp_path / name
    path.write_text(SIMPLE.format(scale=scale, color=color))
    return str(path)


def http_get(url: str, timeout: float = 10) -> str:
    def attempt():
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            return None

    return wait_until(attempt, timeout=timeout, what=f"an answer from {url}")


def host_port(instance: dict) -> int:
    return int(instance["ports"][0].split("->")[0].rsplit(":", 1)[1])


def test_example_converges_on_project_network_and_answers(daemon: Daemon):
    daemon.cli("project", "add", "jupiter", EXAMPLE, "--wait")
    web = daemon.running("web")
    backend = daemon.running("backend")
    assert len(web) == 2 and len(backend) == 1
    project = daemon.json("project", "get", "jupiter")
    for c in web + backend:
        info = json.loads(docker("inspect", c["ID"]))[0]
        labels = info["Config"]["Labels"]
        assert labels["io.mariposa.project"] == project["id"]
        assert labels["io.mariposa.project-name"] == "jupiter"
        assert labels["io.mariposa.version"] == project["version"]["id"]
        assert labels["role"] in ("frontend", "backend")
        networks = list(info["NetworkSettings"]["Networks"])
        assert networks == [f"mariposa-jupiter-{project['id'][:8]}"]
    backend_info = json.loads(docker("inspect", backend[0]["ID"]))[0]
    assert backend_info["HostConfig"]["Memory"] == 256 * 1024 * 1024  # package: small
    assert "DB_NAME=jupiter" in backend_info["Config"]["Env"]

    instances = daemon.json("-j", "jupiter", "service", "instances", "web")
    assert {i["state"] for i in instances} == {"running"}
    for inst in instances:
        port = host_port(inst)
        assert "hello from jupiter" in http_get(f"http://127.0.0.1:{port}/")
        # the web tier reaches the backend by its service name on the project network
        assert "backend" in http_get(f"http://127.0.0.1:{port}/cgi-bin/api") and "for jupiter" in http_get(
            f"http://127.0.0.1:{port}/cgi-bin/api"
        )

    listing = daemon.cli("project", "list").stdout
    assert "jupiter" in listing and "3/3" in listing
    assert {s["name"] for s in daemon.json("-j", "jupiter", "service", "list")} == {"web", "backend"}
    assert daemon.json("-j", "jupiter", "service", "get", "web")["scale"] == 2
    assert len(daemon.json("project", "instances", "jupiter")) == 3


def test_scale_stop_start_and_delete(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "sc", simple(tmp_path), "--wait")
    assert len(daemon.running("web")) == 3
    for amount, expected in (("1", 1), ("4", 4), ("+1", 5), ("-2", 3)):
        daemon.cli("-j", "sc", "service", "scale", "web", amount, "--wait")
        assert len(daemon.running("web")) == expected, amount
        assert len(daemon.containers()) == expected

    daemon.cli("-j", "sc", "service", "stop", "web", "--wait")
    # stop.preservestopped defaults to on-failure: cleanly stopped instances are removed
    assert daemon.running("web") == [] and daemon.containers() == []
    daemon.cli("-j", "sc", "service", "start", "web", "--wait")
    assert len(daemon.running("web")) == 3
    again = daemon.cli("-j", "sc", "service", "start", "web", check=False)
    assert again.returncode == 5 and "already running" in again.stderr

    daemon.cli("project", "stop", "sc", "--wait")
    assert daemon.running() == []
    daemon.cli("project", "start", "sc", "--wait")
    assert len(daemon.running()) == 3

    project_id = daemon.json("project", "get", "sc")["id"]
    daemon.cli("project", "delete", "sc", "--wait")
    assert daemon.containers() == []
    assert docker("network", "ls", "-q", "--filter", f"label=io.mariposa.project={project_id}").strip() == ""
    missing = daemon.cli("project", "get", "sc", check=False)
    assert missing.returncode == 4 and "no project 'sc'" in missing.stderr


def test_update_replaces_one_at_a_time(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "up", simple(tmp_path, scale=3), "--wait")
    before = {c["ID"] for c in daemon.running("web")}
    samples: list[int] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(len(daemon.running("web")))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        out = daemon.cli("project", "update", "up", simple(tmp_path, scale=3, color="green", name="v2.yaml"), "--wait")
    finally:
        stop.set()
        sampler.join()
    assert "version 2" in out.stdout
    after = daemon.running("web")
    assert len(after) == 3 and not ({c["ID"] for c in after} & before)
    for inst in daemon.json("-j", "up", "service", "instances", "web"):
        assert http_get(f"http://127.0.0.1:{host_port(inst)}/").strip() == "green"
    assert len(samples) > 5
    assert min(samples) >= 3 - 1, samples  # never below scale - 1 (the planner keeps it at scale)
    assert max(samples) <= 3 + 1, samples  # one at a time


def test_sigkill_during_scale_then_restart_adopts(tmp_path):
    daemon = Daemon(tmp_path).start()
    try:
        daemon.cli("project", "add", "k", simple(tmp_path, scale=1), "--wait")
        daemon.cli("-j", "k", "service", "scale", "web", "6")
        wait_until(lambda: len(daemon.containers()) >= 2, timeout=30, interval=0.01, what="the scale to begin")
        daemon.kill(signal.SIGKILL)  # mid-scale: the restart must end at exactly 6 whatever was under way
        daemon.start()
        wait_until(lambda: len(daemon.running("web")) == 6, timeout=60, what="6 running instances")
        time.sleep(3)  # a resync later: still exactly 6, nothing orphaned or duplicated
        containers = daemon.containers()
        assert len(containers) == 6 and all(c["State"] == "running" for c in containers)
        tasks = daemon.json("-j", "k", "queue", "list")
        assert not [t for t in tasks if t["state"] in ("queued", "active")]
    finally:
        daemon.cleanup()


BAD = f"""services:
  web:
    image: {IMAGE}
    scael: 3
    ports: 80
  db:
    image: {IMAGE}
    scale: -1
"""


def test_bad_manifest_is_refused_with_positions_and_changes_nothing(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "bad", simple(tmp_path, scale=2), "--wait")
    before = {c["ID"] for c in daemon.containers()}
    path = tmp_path / "broken.yaml"
    path.write_text(BAD)
    r = daemon.cli("project", "update", "bad", str(path), check=False)
    assert r.returncode == 1
    err = r.stderr
    assert f"{path}:4:5: services.web.scael: unknown option 'scael'; did you mean 'scale'?" in err, err
    assert f"{path}:5:12: services.web.ports:" in err and "list" in err, err
    assert f"{path}:8:12: services.db.scale:" in err, err
    assert daemon.json("project", "get", "bad")["version"]["seq"] == 1
    assert {c["ID"] for c in daemon.containers()} == before
    r = daemon.cli("project", "add", "bad2", str(path), check=False)
    assert r.returncode == 1 and daemon.cli("project", "get", "bad2", check=False).returncode == 4


def test_queue_stop_terminates_and_freezes(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "q", simple(tmp_path, scale=1), "--wait")
    task = json.loads(daemon.cli("-j", "q", "service", "scale", "web", "40", "--json").stdout)[0]
    wait_until(lambda: len(daemon.containers()) >= 3, timeout=30, interval=0.02, what="the scale to begin")
    stopped = daemon.json("-j", "q", "queue", "stop", task["id"][:10])
    assert stopped["state"] == "terminated" and "stopped by uid=" in stopped["message"]
    count = len(daemon.containers())
    assert count < 40
    time.sleep(5)  # two resync passes: nobody re-scales behind the user's back
    assert len(daemon.containers()) == count
    svc = daemon.json("-j", "q", "service", "get", "web")
    assert svc["frozen"] and svc["scale"] == 40
    listing = daemon.cli("-j", "q", "queue", "list").stdout
    assert "terminated" in listing
    daemon.cli("-j", "q", "service", "scale", "web", "2", "--wait")  # a new goal thaws it
    assert len(daemon.running("web")) == 2
    assert not daemon.json("-j", "q", "service", "get", "web")["frozen"]


def test_missing_image_with_pull_never_is_refused_clearly(daemon: Daemon, tmp_path):
    """(Pulls from real registries: test_pulls.py.) With `pull: never` an image the host lacks
    refuses the project before anything is made."""
    path = tmp_path / "missing.yaml"
    path.write_text("services:\n  ghost:\n    image: mariposa-test/does-not-exist:1\n    pull: never\n")
    r = daemon.cli("project", "add", "ghost", str(path), "--wait", check=False)
    assert r.returncode == 4
    assert "mariposa-test/does-not-exist:1" in r.stderr and "is not on this host" in r.stderr
    assert daemon.containers() == []
    # the daemon is fine and says so
    assert daemon.json("project", "list") == []


def test_killed_container_is_replaced(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "kc", simple(tmp_path, scale=2), "--wait")
    victim = daemon.running("web")[0]["ID"]
    docker("kill", victim)
    wait_until(lambda: len(daemon.running("web")) == 2 and victim not in {c["ID"] for c in daemon.running("web")}
               or any(c["ID"] == victim and c["State"] == "running" for c in daemon.containers()),
               timeout=20, what="the killed instance to be back")
    assert len(daemon.running("web")) == 2
