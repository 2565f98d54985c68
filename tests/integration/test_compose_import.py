"""`mariposa project import-compose` against the real Engine: the three example compose files
(examples/compose/) become projects whose services come up, and the report lists every field.

Keys other branches of issue 12 add to the manifest, which these files need:
- webapp: `depends_on` (start order). `test_webapp_comes_up_without_its_start_order` runs it today
  with depends_on taken out of the compose file; `test_webapp_comes_up` needs the depends_on branch.
- edge: `networks` (shared networks), `depends_on` and `pull` (image pulls).
  `test_edge_comes_up_without_networks_today` runs it with those keys taken out;
  `test_edge_comes_up_on_its_networks` needs those three branches.
- worker: none; it passes on main as it is.
The lead runs the last two once those branches are merged."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.request
import uuid
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.composepaths import unreported
from tests.integration.harness import IMAGE, Daemon, docker, wait_until

pytestmark = pytest.mark.docker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "compose"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_every_field_reported(compose: Path, report: list[dict]) -> None:
    doc = YAML(typ="safe", pure=True).load(compose.read_text())
    assert unreported(doc, [e["path"] for e in report]) == []
    assert all(e["status"] in ("mapped", "changed", "not mapped") for e in report)


def start(tmp_path: Path, example: str) -> tuple[Daemon, Path]:
    shutil.copytree(EXAMPLES / example, tmp_path / example)
    (tmp_path / "mariposa.toml").write_text(f'bind_roots = ["{tmp_path}"]\n')
    return Daemon(tmp_path).start("--config", str(tmp_path / "mariposa.toml")), tmp_path / example


def import_compose(d: Daemon, name: str, compose: Path, *extra: str) -> dict:
    result = d.cli("project", "import-compose", name, str(compose), "--wait", "--json", *extra)
    return json.loads(result.stdout)


def inspect(container_id: str) -> dict:
    return json.loads(docker("inspect", container_id))[0]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def delete(d: Daemon, name: str) -> None:
    d.cli("project", "delete", name, "--purge-volumes", "--wait", check=False)


def test_worker_comes_up_with_its_env_files_and_health_check(tmp_path):
    d, here = start(tmp_path, "worker")
    compose = here / "docker-compose.yml"
    try:
        result = import_compose(d, "cmpwork", compose)
        assert_every_field_reported(compose, result["report"])
        assert {e["path"] for e in result["report"] if e["status"] == "not mapped"} == {
            "services.worker.cpu_shares", "services.worker.logging"}
        assert [t["state"] for t in result["tasks"]] == ["completed"]
        workers = d.running("worker")
        assert len(workers) == 2
        info = inspect(workers[0]["ID"])
        env = dict(e.split("=", 1) for e in info["Config"]["Env"])
        assert env["QUEUE_NAME"] == "emails" and env["GREETING"] == "hello, world"
        assert env["WORKER_LOG_LEVEL"] == "info" and env["WORKER_CONCURRENCY"] == "4" and env["DEBUG"] == "false"
        assert info["Config"]["User"] == "1000:1000" and info["Config"]["WorkingDir"] == "/tmp"
        assert info["Config"]["StopSignal"] == "SIGINT" and info["Config"]["Labels"]["com.example.role"] == "worker"
        host = info["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["Memory"] == 256 * 1024**2 and host["Init"] is True
        assert host["Tmpfs"] == {"/tmp": "size=8m"}
        health = wait_until(lambda: (rows := d.json("-j", "cmpwork", "service", "health", "worker"))
                            and all(r["status"] == "healthy" for r in rows) and rows,
                            timeout=60, what="both workers healthy")
        assert len(health) == 2
        logs = d.cli("-j", "cmpwork", "service", "logs", "worker", "--tail", "1").stdout
        assert "working on emails" in logs
        version = d.json("project", "get", "cmpwork")["version"]
        assert version["manifest"].startswith("# Converted from") and "cpu_shares" not in version["manifest"]
        assert "hello, world" not in json.dumps(d.json("project", "get", "cmpwork")["services"])
    finally:
        delete(d, "cmpwork")
        d.cleanup()


def without(compose: Path, *keys: str) -> None:
    """The compose file without the service keys whose manifest options other branches add."""
    yaml = YAML(typ="rt", pure=True)
    doc = yaml.load(compose.read_text())
    for section in doc["services"].values():
        for key in keys:
            section.pop(key, None)
    if "networks" in keys:
        doc.pop("networks", None)
    with open(compose, "w") as f:
        yaml.dump(doc, f)


def check_webapp(d: Daemon, name: str, compose: Path, port: int) -> None:
    result = import_compose(d, name, compose)
    assert_every_field_reported(compose, result["report"])
    assert all(t["state"] == "completed" for t in result["tasks"])
    assert {s: len(d.running(s)) for s in ("web", "db", "cache")} == {"web": 1, "db": 1, "cache": 1}
    page = wait_until(lambda: _page(f"http://127.0.0.1:{port}/"), timeout=30, what="the web page")
    assert "hello from compose" in page
    (db,) = d.running("db")
    mounts = {m["Destination"]: m for m in inspect(db["ID"])["Mounts"]}
    assert mounts["/var/lib/postgresql/data"]["Name"] == f"mariposa_{name}_db-data"
    assert inspect(db["ID"])["HostConfig"]["ShmSize"] == 128 * 1024**2
    (cache,) = d.running("cache")
    assert inspect(cache["ID"])["HostConfig"]["Memory"] == 64 * 1024**2
    labels = json.loads(docker("volume", "inspect", f"mariposa_{name}_cache-data"))[0]["Labels"]
    assert labels["com.example.backup"] == "no"


def _page(url: str) -> str | None:
    try:
        return get(url)
    except OSError:
        return None


def test_webapp_comes_up_without_its_start_order(tmp_path, monkeypatch):
    """Runs on main today: the webapp file with depends_on taken out."""
    d, here = start(tmp_path, "webapp")
    compose = here / "docker-compose.yml"
    without(compose, "depends_on")
    port = free_port()
    monkeypatch.setenv("WEB_PORT", str(port))
    try:
        check_webapp(d, "cmpweb", compose, port)
        strict = d.cli("project", "import-compose", "cmpweb2", str(compose), "--strict", check=False)
        assert strict.returncode == 1 and "not mapped (--strict); nothing was added" in strict.stderr
        assert "services.web.build" in strict.stderr
        assert [p["name"] for p in d.json("project", "list")] == ["cmpweb"]
    finally:
        delete(d, "cmpweb")
        d.cleanup()


def test_webapp_comes_up(tmp_path, monkeypatch):
    """NEEDS the depends_on branch of issue 12: the file as it is, web after a healthy db."""
    d, here = start(tmp_path, "webapp")
    compose = here / "docker-compose.yml"
    port = free_port()
    monkeypatch.setenv("WEB_PORT", str(port))
    try:
        check_webapp(d, "cmpwebd", compose, port)
        manifest = d.json("project", "get", "cmpwebd")["version"]["manifest"]
        assert "condition: service_healthy" in manifest
    finally:
        delete(d, "cmpwebd")
        d.cleanup()


def test_edge_comes_up_on_its_networks(tmp_path, monkeypatch):
    """NEEDS the networks, depends_on and pull branches of issue 12: a shared external network,
    a network the project creates, extra_hosts, and the long port syntax."""
    d, here = start(tmp_path, "edge")
    compose = here / "compose.yaml"
    shared = f"mariposa-test-importer-{uuid.uuid4().hex[:8]}"
    docker("network", "create", shared)
    port = free_port()
    monkeypatch.setenv("SHARED_NETWORK", shared)
    monkeypatch.setenv("PROXY_PORT", str(port))
    try:
        result = import_compose(d, "cmpedge", compose)
        assert_every_field_reported(compose, result["report"])
        unmapped = {e["path"] for e in result["report"] if e["status"] == "not mapped"}
        assert unmapped == {"services.proxy.extra_hosts", "services.proxy.container_name", "services.app.networks"}
        (proxy,) = d.running("proxy")
        (app,) = d.running("app")
        attached = json.loads(docker("network", "inspect", shared))[0]["Containers"]
        assert proxy["ID"] in attached and app["ID"] not in attached
        assert "10.1.2.3\tdb.internal" in docker("exec", proxy["ID"], "cat", "/etc/hosts")
        assert "10.9.8.7\tmetrics.internal" in docker("exec", app["ID"], "cat", "/etc/hosts")
        assert wait_until(lambda: _page(f"http://127.0.0.1:{port}/"), timeout=30, what="the proxy") == "proxy\n"
        assert docker("exec", proxy["ID"], "wget", "-q", "-O-", "http://app/") == "app\n"
        assert inspect(proxy["ID"])["HostConfig"]["CapDrop"] == ["ALL"]
    finally:
        delete(d, "cmpedge")
        d.cleanup()
        docker("network", "rm", shared, check=False)


def test_a_manifest_the_daemon_refuses_is_shown_at_the_compose_fields(daemon, tmp_path):
    """The host's policy is the daemon's: privileged and a bind mount outside bind_roots are
    refused there, and each problem names the compose file's line and column."""
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(f"""services:
  tool:
    image: {IMAGE}
    privileged: true
    volumes:
      - ./data:/data
""")
    r = daemon.cli("project", "import-compose", "cmpref", str(compose), check=False)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[-3] == f"mariposa: error: {compose}: the manifest converted from it was refused (2 problems); " \
                        "nothing was changed"
    assert lines[-2].startswith(f"  {compose}:4:17: services.tool.privileged: privileged: true gives the container")
    assert lines[-2].endswith("(generated manifest 5:17)")
    assert lines[-1].startswith(f"  {compose}:6:9: services.tool.volumes[0]: bind mount {tmp_path}/data is outside")
    assert daemon.json("project", "list") == []


def test_edge_comes_up_without_networks_today(tmp_path, monkeypatch):
    """Runs on main today: the edge file without networks, depends_on and pull_policy; its extra
    hosts, capabilities, sysctls, ulimits and the long port syntax."""
    d, here = start(tmp_path, "edge")
    compose = here / "compose.yaml"
    without(compose, "networks", "depends_on", "pull_policy")
    port = free_port()
    monkeypatch.setenv("PROXY_PORT", str(port))
    try:
        result = import_compose(d, "cmpedge0", compose)
        assert_every_field_reported(compose, result["report"])
        (proxy,) = d.running("proxy")
        (app,) = d.running("app")
        hosts = docker("exec", proxy["ID"], "cat", "/etc/hosts")
        assert "10.1.2.3\tdb.internal" in hosts and "host-gateway" not in hosts
        assert "10.9.8.7\tmetrics.internal" in docker("exec", app["ID"], "cat", "/etc/hosts")
        host = inspect(proxy["ID"])["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and host["CapAdd"] in (["NET_BIND_SERVICE"], ["CAP_NET_BIND_SERVICE"])
        assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
        assert host["Dns"][1:] == ["1.1.1.1"]  # behind the project's DNS responder, which forwards to it
        assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 4096}]
        assert inspect(proxy["ID"])["Config"]["Hostname"] == "proxy"
        assert wait_until(lambda: _page(f"http://127.0.0.1:{port}/"), timeout=30, what="the proxy") == "proxy\n"
        assert docker("exec", proxy["ID"], "wget", "-q", "-O-", "http://app/") == "app\n"
    finally:
        delete(d, "cmpedge0")
        d.cleanup()
