"""`env_file:` on the real thing (issue 12): the CLI reads the file beside the manifest, the
instance gets its variables, the values never show, a changed file is a new version, and the
watched directory reads env files inside itself only."""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.harness import IMAGE, LATE, Daemon, docker, wait_until

pytestmark = pytest.mark.docker

MANIFEST = f"""services:
  web:
    image: {IMAGE}
    command: sleep 100000
    env_file: [app.env]
    environment:
      MODE: staging
"""


def env_of(container_id: str) -> dict[str, str]:
    pairs = json.loads(docker("inspect", container_id))[0]["Config"]["Env"]
    return dict(p.split("=", 1) for p in pairs)


def test_cli_reads_env_files_beside_the_manifest_and_hides_them(daemon: Daemon, tmp_path):
    work = tmp_path / "app"
    work.mkdir()
    (work / "m.yaml").write_text(MANIFEST)
    (work / "app.env").write_text("API_TOKEN=s3cret-token\nMODE=production\n")
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.chdir(other)  # relative to the manifest, not to where the CLI runs
    daemon.cli("project", "add", "envs", str(work / "m.yaml"), "--wait")
    (c,) = daemon.running("web")
    env = env_of(c["ID"])
    assert env["API_TOKEN"] == "s3cret-token" and env["MODE"] == "staging"

    shown = daemon.cli("project", "get", "envs", "--json").stdout + daemon.cli(
        "-j", "envs", "service", "get", "web", "--json").stdout + daemon.cli("events", "--json").stdout
    assert "s3cret-token" not in shown and "app.env" in shown
    assert "s3cret-token" not in daemon.log.read_text()

    (work / "app.env").write_text("API_TOKEN=rotated\n")
    daemon.cli("project", "update", "envs", str(work / "m.yaml"), "--wait")
    (new,) = daemon.running("web")
    assert new["ID"] != c["ID"] and env_of(new["ID"])["API_TOKEN"] == "rotated"

    (work / "app.env").unlink()
    r = daemon.cli("project", "update", "envs", str(work / "m.yaml"), check=False)
    assert r.returncode != 0
    assert ("m.yaml:5:16: services.web.env_file[0]: cannot read env_file 'app.env': No such file or directory"
            in r.stderr)
    assert daemon.json("project", "get", "envs")["version"]["seq"] == 2


def test_watched_directory_reads_env_files_inside_itself_only(daemon: Daemon, tmp_path):
    d = daemon.manifest_dir
    d.mkdir(exist_ok=True)
    (d / "app.env").write_text("API_TOKEN=from-the-directory\n")
    (d / "w.yaml").write_text(MANIFEST)
    wait_until(lambda: len(daemon.running("web")) == 1, timeout=30 + LATE, what="the file's project")
    assert env_of(daemon.running("web")[0]["ID"])["API_TOKEN"] == "from-the-directory"

    secret = tmp_path / "outside.env"
    secret.write_text("ROOT_ONLY=do-not-read\n")
    (d / "app.env").unlink()
    (d / "app.env").symlink_to(secret)
    (d / "w.yaml").write_text(MANIFEST + "# touched\n")

    def refused():
        status = daemon.json("project", "get", "w").get("file") or {}
        return status.get("state") == "invalid" and status
    status = wait_until(refused, timeout=30 + LATE, what="the file refused")
    assert "cannot read env_file 'app.env': it is a symbolic link that leads out of the directory" in json.dumps(status)
    assert "do-not-read" not in json.dumps(status) and "do-not-read" not in daemon.log.read_text()
