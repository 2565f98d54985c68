"""Networks and start order on the real Engine (issue 12).

- Two projects on one shared network reach each other as SERVICE.PROJECT (busybox's nslookup and
  wget from inside one container to the other); deleting the project that made the network keeps
  it while the other's containers are on it; an external network is never removed.
- `depends_on` with `service_healthy`: db passes its health check before web's first instance is
  created (Docker's creation time of web's container against the health event of db's)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest

from tests.integration.harness import EARLY, IMAGE, Daemon, docker, wait_until

pytestmark = pytest.mark.docker


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path).start()
    yield d
    d.cleanup()


def network_exists(name: str) -> bool:
    return docker("network", "inspect", name, check=False) != ""


def test_two_projects_on_a_shared_network_reach_each_other_by_service_dot_project(daemon: Daemon, tmp_path):
    tag = uuid.uuid4().hex[:6]
    alpha, beta, outside = f"alpha{tag}", f"beta{tag}", f"mariposa-test-ext-{tag}"
    docker("network", "create", outside)  # made outside Mariposa, joined as external
    try:
        (tmp_path / "alpha.yaml").write_text(f"""
services:
  api:
    image: {IMAGE}
    command: sh -c 'echo alpha-api > /www/index.html; exec httpd -f -p 8080 -h /www'
    networks: [default, shared, outside]
networks:
  shared: {{}}
  outside: {{external: true, name: {outside}}}
""")
        (tmp_path / "beta.yaml").write_text(f"""
services:
  web:
    image: {IMAGE}
    command: sh -c 'echo beta-web > /www/index.html; exec httpd -f -p 8080 -h /www'
    networks: [mesh]
networks:
  mesh: {{external: true, name: {alpha}_shared}}
""")
        r = daemon.cli("project", "add", beta, str(tmp_path / "beta.yaml"), check=False)
        assert r.returncode != 0 and f"external network {alpha}_shared (networks.mesh) does not exist" in r.stderr
        daemon.cli("project", "add", alpha, str(tmp_path / "alpha.yaml"), "--wait")
        daemon.cli("project", "add", beta, str(tmp_path / "beta.yaml"), "--wait")
        labels = json.loads(docker("network", "inspect", f"{alpha}_shared"))[0]["Labels"]
        assert labels["io.mariposa.project-name"] == alpha and labels["io.mariposa.network"] == "shared"
        shown = daemon.json("project", "get", alpha)["networks"]
        assert {n["name"]: n["runtime_name"] for n in shown} == {"shared": f"{alpha}_shared", "outside": outside}
        listed = daemon.json("-j", beta, "network", "list")
        assert listed == [{"name": "mesh", "runtime_name": f"{alpha}_shared", "external": True, "services": ["web"],
                           "exists": True}]

        (api,) = daemon.running("api")
        (web,) = daemon.running("web")
        # busybox's own applets: nslookup asks Docker's DNS, wget fetches through the name
        assert "Address" in docker("exec", web["ID"], "nslookup", f"api.{alpha}")
        assert docker("exec", web["ID"], "wget", "-q", "-O", "-", f"http://api.{alpha}:8080/") == "alpha-api\n"
        assert docker("exec", api["ID"], "wget", "-q", "-O", "-", f"http://web.{beta}:8080/") == "beta-web\n"
        # inside its own project a service is still reached by its plain name
        assert docker("exec", api["ID"], "wget", "-q", "-O", "-", "http://api:8080/") == "alpha-api\n"

        deleted = daemon.cli("project", "delete", alpha, "--wait").stdout
        assert f"network {alpha}_shared is kept, still in use by {beta}-web-" in deleted, deleted
        assert network_exists(f"{alpha}_shared") and network_exists(outside)
        assert docker("exec", web["ID"], "nslookup", f"web.{beta}", check=False)  # beta's web still on it

        daemon.cli("project", "delete", beta, "--wait")
        assert network_exists(f"{alpha}_shared")  # beta only joined it
        assert network_exists(outside)  # external: never removed
    finally:
        docker("network", "rm", outside, check=False)
        docker("network", "rm", f"{alpha}_shared", check=False)


def test_depends_on_service_healthy_creates_web_only_once_db_is_healthy(daemon: Daemon, tmp_path):
    (tmp_path / "app.yaml").write_text(f"""
services:
  web:
    image: {IMAGE}
    command: sleep 100000
    depends_on:
      db: {{condition: service_healthy}}
  db:
    image: {IMAGE}
    command: sh -c 'sleep 4; touch /tmp/ready; exec sleep 100000'
    healthchecks:
      - type: command
        command: test -f /tmp/ready
        poll: 0.5
        grace: 60
        timeout: 2
""")
    daemon.cli("project", "add", "order", str(tmp_path / "app.yaml"))

    def waiting():
        web = daemon.json("-j", "order", "service", "get", "web")
        return web["waiting"]

    assert wait_until(waiting, timeout=30, what="web waiting") == "waiting for db to be healthy (0 of 1 healthy)"
    assert daemon.running("web") == []
    wait_until(lambda: daemon.running("web"), timeout=60, what="web's first instance")

    events = daemon.json("-j", "order", "events")
    healthy = min(e["time"] for e in events if e["type"] == "health.healthy" and e["service"] == "db")
    (web,) = daemon.running("web")
    (db,) = daemon.running("db")
    created = {c["Labels"].split("io.mariposa.service=")[1].split(",")[0]: _created(c["ID"]) for c in (web, db)}
    # web's container was made after db passed its check, and db needed its 4 s to get there
    assert created["web"] >= healthy - EARLY, (created, healthy)
    assert created["web"] >= created["db"] + 4 - EARLY, created
    assert any(e["type"] == "service.waiting" and e["service"] == "web" for e in events)


def _created(container: str) -> float:
    text = json.loads(docker("inspect", container))[0]["Created"]  # 2026-11-26T16:59:49.123456789Z
    whole, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (frac or "0"))
