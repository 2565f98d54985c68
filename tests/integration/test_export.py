"""`mariposa export` against real things: a real daemon and the CLI for the example project, and
each target's own validator: `kubernetes-validate` (it ships the API schemas), Debian's
`docker-compose config`, `docker stack deploy` on this engine's single-node Swarm (which must
converge), and the Nomad job structure the API documents (tests/unit/nomad_schema.py: there is
no Nomad binary here)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from mariposa.export import export
from mariposa.manifest import parse_manifest
from tests.integration.harness import IMAGE, Daemon, docker, wait_until
from tests.unit.nomad_schema import check_job

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
JUPITER = ROOT / "examples" / "jupiter.yaml"

SCHEDULED = f"""services:
  nightly:
    service_type: scheduled
    image: {IMAGE}
    command: echo nightly
    schedule: "0 3 * * *"
    time_zone: Europe/Paris
    concurrency: replace
  hook:
    service_type: event
    image: {IMAGE}
    command: echo hook
"""


def kubernetes_validate(path: Path) -> str:
    # the venv's script, beside this interpreter (the venv's bin may not be on PATH)
    tool = str(Path(sys.executable).with_name("kubernetes-validate"))
    r = subprocess.run([tool, "--strict", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def compose_config(path: Path) -> dict:
    r = subprocess.run(["docker-compose", "-f", str(path), "config"], capture_output=True, text=True,
                       cwd=path.parent)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_export_of_the_example_through_the_daemon_passes_every_validator(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "jupiter", str(JUPITER))
    fields = None
    for target in ("compose", "swarm-stack", "nomad", "kubernetes"):
        out = tmp_path / target
        r = daemon.cli("-j", "jupiter", "export", "--to", target, "--out", str(out))
        report = (out / "report.txt").read_text()
        assert report in r.stdout + "\n"
        assert report.startswith("conversion report for ") and f"jupiter.yaml ({target}):" in report.splitlines()[0]
        paths = [line.split()[1] for line in report.splitlines()[1:-1]]
        assert fields is None or paths == fields  # every target lists the same fields: all of them
        fields = paths
        assert "services.web.healthchecks" in paths and "services.backend.restart" in paths
        assert "no rule" not in report
    assert len(fields or []) == 19
    kubernetes_validate(tmp_path / "kubernetes" / "jupiter.k8s.yaml")
    assert compose_config(tmp_path / "compose" / "compose.yaml")["services"]["web"]["deploy"]["replicas"] == 2
    check_job(json.loads((tmp_path / "nomad" / "jupiter.json").read_text()))
    # without --out: the files on stdout, the report on stderr
    r = daemon.cli("-j", "jupiter", "export", "--to", "kubernetes")
    assert [d["kind"] for d in yaml.safe_load_all(r.stdout)] == ["Deployment", "Service", "Deployment"]
    assert r.stderr.startswith("conversion report for")
    # --json: the same as data
    data = daemon.json("-j", "jupiter", "export", "--to", "nomad")
    assert data["counts"]["not mapped"] == 0 and list(data["files"]) == ["jupiter.json"]


def test_strict_refuses_and_writes_nothing(daemon: Daemon, tmp_path):
    daemon.cli("project", "add", "jupiter", str(JUPITER))
    out = tmp_path / "never"
    r = daemon.cli("-j", "jupiter", "export", "--to", "compose", "--strict", "--out", str(out), check=False)
    assert r.returncode != 0
    assert "export to compose refused (--strict): 1 field(s) not representable" in r.stderr
    assert "services.web.min_healthy_time: compose has no rollout" in r.stderr
    assert not out.exists()
    # a target that represents everything in it passes strict
    daemon.cli("-j", "jupiter", "export", "--to", "nomad", "--strict", "--out", str(out))
    assert (out / "jupiter.json").exists()


def test_secret_values_need_secret_reveal(daemon: Daemon, tmp_path):
    manifest = tmp_path / "vault.yaml"
    manifest.write_text(f"services:\n  app:\n    image: {IMAGE}\n    command: sleep 3600\n"
                        "    secrets: [api_key]\n")
    daemon.cli("-j", "vault", "secret", "set", "api_key", input="k3y-value-123")
    daemon.cli("project", "add", "vault", str(manifest))
    plain = daemon.cli("-j", "vault", "export", "--to", "kubernetes").stdout
    assert "k3y-value-123" not in plain
    assert "stringData" not in plain
    # root on the socket may reveal, so may export with the values
    shown = daemon.cli("-j", "vault", "export", "--to", "kubernetes", "--with-secret-values").stdout
    [secret] = [d for d in yaml.safe_load_all(shown) if d["kind"] == "Secret"]
    assert secret["stringData"] == {"value": "k3y-value-123"}
    # a caller without secret:reveal gets a 403: tests/unit/test_control_exports.py (users by uid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stack_export_deploys_and_converges_on_the_swarm(swarm_manager, tmp_path):
    """The stack of a manifest with hard anti-affinity inside one service (a cluster's manifest:
    the daemon on one host refuses it, so it is exported in process) converges under `docker
    stack deploy`: one task per node, so one task on this single-node Swarm."""
    port = _free_port()
    text = f"""services:
  web:
    image: {IMAGE}
    scale: 1
    ports: ["{port}:80"]
    command: [sh, -c, "echo hi > /www/index.html && exec httpd -f -p 80 -h /www"]
    affinity: ["container!=web*"]
    endpoint_mode: dnsrr  # no IPVS on this kernel: the service VIP does not work, DNS round robin does
    healthchecks:
      - type: http
        port: 80
        poll: 2
    stop:
      timeout: 3
    min_healthy_time: 1
  worker:
    image: {IMAGE}
    scale: 2
    command: [sh, -c, "exec sleep 3600"]
    restart: on-failure:3
    endpoint_mode: dnsrr
"""
    result = export("swarm-stack", parse_manifest(text, cluster="swarm"), text, "stk")
    assert "max_replicas_per_node: 1" in next(e.note for e in result.entries if e.path == "services.web.affinity")
    stack = yaml.safe_load(result.files["stack.yaml"])
    assert {s["deploy"]["endpoint_mode"] for s in stack["services"].values()} == {"dnsrr"}
    path = tmp_path / "stack.yaml"
    path.write_text(result.files["stack.yaml"])
    name = f"mpexport{uuid.uuid4().hex[:6]}"
    try:
        started = time.monotonic()
        docker("stack", "deploy", "--resolve-image", "never", "-c", str(path), name)

        def converged() -> bool:
            rows = [json.loads(line) for line in docker("stack", "ps", name, "--format", "{{json .}}",
                                                        "--filter", "desired-state=running").splitlines()]
            return len(rows) == 3 and all(r["CurrentState"].startswith("Running") for r in rows)

        wait_until(converged, timeout=90, interval=1, what=f"stack {name} to converge")
        print(f"stack {name} converged in {time.monotonic() - started:.1f} s")
        services = {s["Name"]: s for s in map(json.loads, docker("stack", "services", name, "--format",
                                                                 "{{json .}}").splitlines())}
        assert services[f"{name}_worker"]["Replicas"] == "2/2"
        spec = json.loads(docker("service", "inspect", f"{name}_web"))[0]["Spec"]
        assert spec["TaskTemplate"]["Placement"]["MaxReplicas"] == 1
        assert spec["UpdateConfig"]["FailureAction"] == "pause"
        assert spec["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
        assert spec["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] == 3 * 10**9
        assert spec["TaskTemplate"]["ContainerSpec"]["Init"] is True
        wait_until(lambda: _get(port) == "hi\n", timeout=30, interval=0.5, what="the published port")
    finally:
        docker("stack", "rm", name, check=False)
        wait_until(lambda: not docker("network", "ls", "-q", "--filter", f"name={name}_").strip(), timeout=60,
                   what=f"stack {name}'s network to go")


def test_the_example_projects_stack_export_converges_healthy_and_answers(swarm_manager, daemon: Daemon, tmp_path):
    """The example project, exported by the CLI from a real daemon, deployed with `docker stack
    deploy`: every task running and healthy (the health checks became in-container commands), and
    web's /cgi-bin/api reaches backend by its service name over the stack's overlay network."""
    # no IPVS on this kernel: the example with endpoint_mode dnsrr on each service (whose published
    # ports the exporter writes in host mode)
    manifest = tmp_path / "jupiter.yaml"
    manifest.write_text(JUPITER.read_text().replace("    image: ", "    endpoint_mode: dnsrr\n    image: "))
    daemon.cli("project", "add", "jupiter", str(manifest))
    daemon.cli("-j", "jupiter", "export", "--to", "swarm-stack", "--out", str(tmp_path / "out"))
    path = tmp_path / "out" / "stack.yaml"
    stack = yaml.safe_load(path.read_text())
    assert stack["services"]["web"]["ports"] == [{"target": 80, "protocol": "tcp", "mode": "host"}]
    assert stack["services"]["web"]["deploy"]["endpoint_mode"] == "dnsrr"
    name = f"mpexport{uuid.uuid4().hex[:6]}"
    try:
        docker("stack", "deploy", "--resolve-image", "never", "-c", str(path), name)

        def healthy() -> list[str]:
            rows = docker("ps", "--filter", f"label=com.docker.stack.namespace={name}", "--format",
                          "{{.Status}}").splitlines()
            return rows if len(rows) == 3 and all("(healthy)" in r for r in rows) else []

        wait_until(healthy, timeout=120, interval=1, what=f"stack {name}'s 3 tasks to be healthy")
        ports = [int(p.split("->")[0].rsplit(":", 1)[1]) for p in docker(
            "stack", "ps", name, "--format", "{{.Ports}}", "--filter", "desired-state=running").split()
            if "->" in p]
        assert ports
        answer = wait_until(lambda: _get(ports[0], "/cgi-bin/api"), timeout=30, interval=0.5, what="web's /api")
        assert answer.startswith("backend ") and answer.strip().endswith("for jupiter")
    finally:
        docker("stack", "rm", name, check=False)
        wait_until(lambda: not docker("network", "ls", "-q", "--filter", f"name={name}_").strip(), timeout=60,
                   what=f"stack {name}'s network to go")


def _get(port: int, path: str = "/") -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


def test_scheduled_and_event_services_pass_the_validators(tmp_path):
    spec = parse_manifest(SCHEDULED)
    k8s = export("kubernetes", spec, SCHEDULED, "sched").files["sched.k8s.yaml"]
    (tmp_path / "sched.yaml").write_text(k8s)
    out = kubernetes_validate(tmp_path / "sched.yaml")
    assert "cronjob/nightly" in out and "job/hook" in out
    for text in export("nomad", spec, SCHEDULED, "sched").files.values():
        check_job(json.loads(text))
    compose = export("compose", spec, SCHEDULED, "sched").files["compose.yaml"]
    (tmp_path / "compose.yaml").write_text(compose)
    assert compose_config(tmp_path / "compose.yaml")["services"]["nightly"]["restart"] == "no"


def test_export_of_100_services_lists_every_one():
    """Every service of a large manifest is written and reported (its speed: tests/bench/bench_export.py)."""
    body = "".join(f"  s{i}:\n    image: {IMAGE}\n    scale: 2\n    ports: [80]\n    environment: {{A: '{i}'}}\n"
                   f"    healthchecks: [{{type: http, port: 80}}]\n    affinity: ['node.labels.zone==a']\n"
                   for i in range(100))
    text = "services:\n" + body
    spec = parse_manifest(text)
    for target in ("compose", "swarm-stack", "nomad", "kubernetes"):
        result = export(target, spec, text, "big")
        written = "".join(result.files.values())
        assert all(f"s{i}" in written for i in range(100)), target
        reported = {e.path for e in result.entries}
        assert all(f"services.s{i}.affinity" in reported for i in range(100)), target


def test_the_every_option_manifest_passes_the_validators(tmp_path):
    """The manifest with every option (tests/unit/export_data/every_option.yaml): what each target
    wrote for it is still valid where the validators can judge it."""
    from tests.unit.test_export import EVERY, run

    k8s = tmp_path / "every.k8s.yaml"
    k8s.write_text(run("kubernetes", EVERY).files["demo.k8s.yaml"])
    kubernetes_validate(k8s)
    for target, name in (("compose", "compose.yaml"), ("swarm-stack", "stack.yaml")):
        path = tmp_path / target / name
        path.parent.mkdir()
        path.write_text(run(target, EVERY).files[name])
        compose_config(path)
    for text in run("nomad", EVERY).files.values():
        check_job(json.loads(text))


def test_a_swarm_daemons_hard_anti_affinity_is_reported_by_every_target(swarm_manager, tmp_path):
    """A daemon with cluster = "swarm" stores a manifest with hard anti-affinity inside one service;
    the report of each target says what became of it (the issue's "must show")."""
    d = Daemon(tmp_path).start("--cluster", "swarm")
    try:
        manifest = tmp_path / "anti.yaml"
        manifest.write_text(f"services:\n  web:\n    image: {IMAGE}\n    command: sleep 3600\n"
                            "    affinity: ['container!=web*']\n")
        d.cli("project", "add", "anti", str(manifest))
        notes = {}
        for target in ("swarm-stack", "nomad", "kubernetes", "compose"):
            data = d.json("-j", "anti", "export", "--to", target)
            [entry] = [e for e in data["entries"] if e["path"] == "services.web.affinity"]
            notes[target] = (entry["status"], entry["note"])
        assert notes["swarm-stack"][0] == "changed"
        assert "max_replicas_per_node: 1 (one per node)" in notes["swarm-stack"][1]
        assert notes["nomad"] == ("mapped", "container!=web*: distinct_hosts (one instance per node)")
        assert notes["kubernetes"] == ("mapped", "container!=web*: required podAntiAffinity (one per node)")
        assert notes["compose"][0] == "not mapped"
        r = d.cli("-j", "anti", "export", "--to", "compose", "--strict", check=False)
        assert r.returncode != 0 and "services.web.affinity" in r.stderr
        d.cli("project", "delete", "anti")
    finally:
        d.cleanup()
