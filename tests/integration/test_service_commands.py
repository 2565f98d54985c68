"""`service add|update|delete` (and `svc`) through the CLI, the real daemon and the real Docker
Engine: each makes a new project version from one service's section, the stored manifest keeps
every comment, and a project that comes from a file refuses them."""

from __future__ import annotations

import pytest

from tests.integration.harness import IMAGE, Daemon, wait_until

pytestmark = pytest.mark.docker

MANIFEST = f"""\
# sc: a web tier
services:
  web:
    image: {IMAGE}   # the example image
    scale: 2
    min_healthy_time: 1
    command: sh -c 'echo one > /www/index.html && exec httpd -f -p 80 -h /www'
"""

WORKER = f"""\
# the worker: sleeps, for now
image: {IMAGE}
command: sleep 3600   # until there is a queue
"""

WEB_TWO = f"""\
web:
  image: {IMAGE}
  scale: 2
  min_healthy_time: 1
  command: sh -c 'echo two > /www/index.html && exec httpd -f -p 80 -h /www'   # version two
"""


def web_versions(daemon: Daemon) -> list[int]:
    seq = {v["id"]: v["seq"] for v in daemon.json("project", "versions", "sc")}
    return sorted(seq[i["version_id"]] for i in daemon.api("/v1/projects/sc/services/web/instances")
                  if i["state"] == "running" and not i["retired"])


def test_add_update_with_a_canary_and_delete(daemon: Daemon, tmp_path):
    (tmp_path / "sc.yaml").write_text(MANIFEST)
    (tmp_path / "worker.yaml").write_text(WORKER)
    (tmp_path / "web.yaml").write_text(WEB_TWO)
    daemon.cli("project", "add", "sc", str(tmp_path / "sc.yaml"), "--wait")

    out = daemon.cli("-j", "sc", "svc", "add", "worker", str(tmp_path / "worker.yaml"), "--wait").stdout
    assert "project sc now at version 2: service add: worker: added" in out and "completed" in out
    assert len(daemon.running("worker")) == 1 and len(daemon.running("web")) == 2
    stored = daemon.cli("-j", "sc", "project", "version", "2").stdout
    assert stored == MANIFEST + f"""\
  worker:
    # the worker: sleeps, for now
    image: {IMAGE}
    command: sleep 3600   # until there is a queue
"""
    again = daemon.cli("-j", "sc", "service", "create", "worker", str(tmp_path / "worker.yaml"), check=False)
    assert again.returncode == 5 and "service update worker FILE" in again.stderr

    daemon.cli("-j", "sc", "service", "update", "web", str(tmp_path / "web.yaml"), "--canary", "1", "--wait")
    # one canary on version 3; the other is still the one version 1 made: adding the worker left web alone
    assert web_versions(daemon) == [1, 3]
    assert "# version two" in daemon.json("project", "get", "sc")["version"]["manifest"]
    daemon.cli("-j", "sc", "service", "reprovision", "web", "--wait")
    assert web_versions(daemon) == [3, 3]

    out = daemon.cli("-j", "sc", "svc", "rm", "worker", "--wait").stdout
    assert "version 4: service delete: worker: removed" in out
    wait_until(lambda: daemon.running("worker") == [], timeout=30, what="the worker's instance removed")
    assert [s["name"] for s in daemon.json("-j", "sc", "svcs")] == ["web"]
    assert daemon.json("project", "get", "sc")["version"]["manifest"] == MANIFEST.replace(
        "command: sh -c 'echo one > /www/index.html && exec httpd -f -p 80 -h /www'",
        "command: sh -c 'echo two > /www/index.html && exec httpd -f -p 80 -h /www'   # version two").replace(
        "   # the example image", "")  # the section is web.yaml's now, its comments with it

    last = daemon.cli("-j", "sc", "service", "delete", "web", check=False)
    assert last.returncode == 5 and "mariposa project delete sc" in last.stderr
    missing = daemon.cli("-j", "sc", "service", "update", "worker", str(tmp_path / "worker.yaml"), check=False)
    assert missing.returncode == 4 and "no service 'worker'" in missing.stderr


def test_problems_in_the_section_name_its_file_and_change_nothing(daemon: Daemon, tmp_path):
    (tmp_path / "sc.yaml").write_text(MANIFEST)
    daemon.cli("project", "add", "sc", str(tmp_path / "sc.yaml"), "--wait")
    broken = tmp_path / "worker.yaml"
    broken.write_text(f"# the worker\nimage: {IMAGE}\nscael: 2\n")
    r = daemon.cli("-j", "sc", "svc", "add", "worker", str(broken), check=False)
    assert r.returncode == 1
    assert f"{broken}:3:1: services.worker.scael: unknown option 'scael'; did you mean 'scale'?" in r.stderr
    assert [v["seq"] for v in daemon.json("project", "versions", "sc")] == [1]
    assert daemon.running("worker") == []


def test_a_project_from_a_file_refuses_service_commands_naming_the_file(daemon: Daemon, tmp_path):
    daemon.manifest_dir.mkdir(exist_ok=True)
    source = daemon.manifest_dir / "filed.yaml"
    source.write_text(MANIFEST.replace("scale: 2", "scale: 1"))
    wait_until(lambda: daemon.cli("project", "get", "filed", check=False).returncode == 0, timeout=30,
               what="the project from its file")
    (tmp_path / "worker.yaml").write_text(WORKER)
    for args in (("add", "worker", str(tmp_path / "worker.yaml")), ("update", "web", str(tmp_path / "worker.yaml")),
                 ("delete", "web")):
        r = daemon.cli("-j", "filed", "svc", *args, check=False)
        assert r.returncode == 5 and f"managed by the file {source}" in r.stderr, r.stderr
    assert [v["seq"] for v in daemon.json("project", "versions", "filed")] == [1]
