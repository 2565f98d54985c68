"""Secret changes and project copies on the real Engine (issue 13): a secret read into
`environment` (`secret_env: true`, named with a dot) changed by `secret set` rolls a new version
out one instance at a time, never below scale, and the new instances have the new value while an
`on_meta_change: none` service keeps its instance; `project copy --with-secrets` makes a project
whose instance reads the copied /run/secrets/NAME, and without it the copy is refused with the
secret to set. The values appear in no version, event, CLI output or daemon log line."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.harness import IMAGE, Daemon, docker, sampling, wait_until

pytestmark = pytest.mark.docker

SCALE = 3
ENV_USER = f"""services:
  api:
    image: {IMAGE}
    scale: {SCALE}
    min_healthy_time: 1
    secret_env: true
    environment:
      DB_PASSWORD: "{{{{ .secret.db.password }}}}"
    command: sleep 100000
  lazy:
    image: {IMAGE}
    secret_env: true
    on_meta_change: none
    environment:
      DB_PASSWORD: "{{{{ .secret.db.password }}}}"
    command: sleep 100000
"""

FILE_USER = f"""services:
  db:
    image: {IMAGE}
    command: sleep 100000
    user: "1000:1000"
    secrets: [db_password]
"""


def serving(daemon: Daemon, project: str, service: str) -> list[dict]:
    instances = daemon.api(f"/v1/projects/{project}/services/{service}/instances")
    return [i for i in instances if i["state"] == "running" and not i["retired"]]


def env_of(container_id: str) -> dict[str, str]:
    inspected = json.loads(docker("inspect", container_id))[0]
    return dict(e.split("=", 1) for e in inspected["Config"]["Env"])


def shown(daemon: Daemon, project: str) -> str:
    """Every CLI output a version or the audit trail reaches, and the daemon's log."""
    versions = daemon.json("project", "versions", project)
    outputs = [daemon.cli("project", "version", v["id"], "--json") for v in versions]
    outputs += [daemon.cli("project", "versions", project, "--json"), daemon.cli("project", "get", project, "--json"),
                daemon.cli("events", "--json"), daemon.cli("-j", project, "secret", "list", "--json")]
    return "\n".join(o.stdout + o.stderr for o in outputs) + daemon.log.read_text(errors="replace")


def test_a_secret_in_environment_rolls_out_never_below_scale(daemon: Daemon, tmp_path):
    old, new = f"canary-{uuid.uuid4().hex}", f"canary-{uuid.uuid4().hex}"
    daemon.cli("-j", "env", "secret", "set", "db.password", input=old)
    manifest = tmp_path / "env.yaml"
    manifest.write_text(ENV_USER)
    daemon.cli("project", "add", "env", str(manifest), "--wait")
    wait_until(lambda: len(serving(daemon, "env", "api")) == SCALE, timeout=60, what=f"{SCALE} instances")
    before = {c["ID"] for c in daemon.running("api")}
    assert {env_of(c)["DB_PASSWORD"] for c in before} == {old}
    [lazy] = daemon.running("lazy")
    assert env_of(lazy["ID"])["DB_PASSWORD"] == old

    with sampling(lambda: len(serving(daemon, "env", "api"))) as counts:
        out = daemon.cli("-j", "env", "secret", "set", "db.password", "--wait", input=new)
    assert "secret db.password set (version 2)" in out.stdout and "reprovision" in out.stdout + out.stderr
    assert len(counts) >= 10 and min(counts) >= SCALE, counts  # never below scale
    assert max(counts) <= SCALE + 1, counts  # --rolling 1: one new instance at a time, never all at once

    after = wait_until(lambda: (cs := {c["ID"] for c in daemon.running("api")}) and len(cs) == SCALE and cs,
                       timeout=60, what="the old instances gone")
    assert not after & before
    assert {env_of(c)["DB_PASSWORD"] for c in after} == {new}
    assert [c["ID"] for c in daemon.running("lazy")] == [lazy["ID"]]  # on_meta_change: none
    assert env_of(lazy["ID"])["DB_PASSWORD"] == old

    versions = daemon.json("project", "versions", "env")
    assert [v["seq"] for v in versions] == [2, 1]
    assert versions[0]["summary"].startswith("secret db.password changed: api: changed")
    assert versions[0]["env_secrets"] == ["db.password"]
    text = shown(daemon, "env")
    assert "secret.set" in text and old not in text and new not in text

    daemon.cli("-j", "env", "service", "reprovision", "lazy", "--wait")
    [fresh] = daemon.running("lazy")
    assert fresh["ID"] != lazy["ID"] and env_of(fresh["ID"])["DB_PASSWORD"] == new
    refused = daemon.cli("-j", "env", "secret", "rm", "db.password", check=False)
    assert refused.returncode != 0 and "used by services api, lazy" in refused.stderr


def test_project_copy_with_secrets_delivers_the_copied_file(daemon: Daemon, tmp_path):
    canary = f"canary-{uuid.uuid4().hex}"
    daemon.cli("-j", "src", "secret", "set", "db_password", input=canary)
    manifest = tmp_path / "src.yaml"
    manifest.write_text(FILE_USER)
    daemon.cli("project", "add", "src", str(manifest), "--wait")

    refused = daemon.cli("project", "copy", "src", "dst", check=False)
    assert refused.returncode != 0 and "needs secrets db_password" in refused.stderr
    assert "--with-secrets" in refused.stderr
    assert [p["name"] for p in daemon.json("project", "list")] == ["src"]
    assert daemon.json("-j", "dst", "secret", "list") == []

    copied = daemon.cli("project", "copy", "src", "dst", "--with-secrets", "--wait")
    assert "project dst copied from src" in copied.stdout
    [inst] = daemon.containers("label=io.mariposa.service=db", "label=io.mariposa.project-name=dst", all=False)
    assert docker("exec", inst["ID"], "cat", "/run/secrets/db_password") == canary
    assert [s["name"] for s in daemon.json("-j", "dst", "secret", "list")] == ["db_password"]
    text = shown(daemon, "dst") + copied.stdout + copied.stderr + refused.stdout + refused.stderr
    assert "copied from project src" in text and canary not in text
    assert canary not in docker("inspect", inst["ID"])
