"""Secrets on the real Engine (issue 13): a canary value set through stdin and delivered as
/run/secrets/NAME is found nowhere else: not in the state dir, the daemon's log, `events --json`,
any CLI get/list --json output, `docker inspect` of the instances, or any process's argv. A change
reaches the running instances' files without a restart; after `secret rotate-key` the old key is
gone from the key file and new instances (of a restarted daemon, which reads the file anew) still
get the value. An unknown secret name is refused with its line and column."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.harness import IMAGE, Daemon, docker, wait_until

pytestmark = pytest.mark.docker

MANIFEST = f"""services:
  db:
    image: {IMAGE}
    command: sleep 100000
    user: "1000:1000"
    scale: 2
    min_healthy_time: 0
    secrets: [db_password]
"""


def occurrences(needle: bytes, data: bytes) -> int:
    return data.count(needle)


def state_dir_hits(d: Daemon, needle: bytes) -> list[str]:
    hits = []
    for root, _, files in os.walk(d.state_dir):
        for name in files:
            path = Path(root) / name
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                pass
    return hits


def cmdline_hits(needle: bytes) -> list[str]:
    hits = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    hits.append(proc.name)
            except OSError:
                pass  # gone meanwhile
    return hits


def json_outputs(d: Daemon) -> str:
    """Every get/list of the CLI that could show a service, its version or its secrets."""
    version = d.json("project", "versions", "sec")[0]["id"]
    instance = d.json("-j", "sec", "service", "instances", "db")[0]["id"]
    outputs = [
        d.cli("project", "list", "--json"), d.cli("project", "get", "sec", "--json"),
        d.cli("project", "versions", "sec", "--json"), d.cli("project", "version", version, "--json"),
        d.cli("project", "instances", "sec", "--json"),
        d.cli("-j", "sec", "service", "list", "--json"), d.cli("-j", "sec", "service", "get", "db", "--json"),
        d.cli("-j", "sec", "service", "instances", "db", "--json"),
        d.cli("-j", "sec", "service", "versions", "db", "--json"),
        d.cli("instance", "get", instance, "--json"), d.cli("-j", "sec", "secret", "list", "--json"),
        d.cli("-j", "sec", "volume", "list", "--json"), d.cli("queue", "list", "--json"),
        d.cli("events", "--json"), d.cli("-j", "sec", "events", "--json"), d.cli("registry", "list", "--json"),
    ]
    return "\n".join(o.stdout + o.stderr for o in outputs)


def read_secret(container: str) -> str:
    return docker("exec", container, "cat", "/run/secrets/db_password")


def test_a_canary_secret_is_delivered_as_a_file_and_shown_nowhere_else(tmp_path, daemon: Daemon):
    canary = f"canary-{uuid.uuid4().hex}"
    needle = canary.encode()
    manifest = tmp_path / "sec.yaml"
    manifest.write_text(MANIFEST)

    refused = daemon.cli("project", "add", "sec", str(manifest), check=False)
    assert refused.returncode != 0 and f"{manifest}:8:15" in refused.stderr
    assert "unknown secret 'db_password'" in refused.stderr
    assert daemon.json("project", "list") == []

    daemon.cli("-j", "sec", "secret", "set", "db_password", input=canary)
    daemon.cli("project", "add", "sec", str(manifest), "--wait")
    containers = [c["ID"] for c in daemon.running("db")]
    assert len(containers) == 2
    for c in containers:
        assert read_secret(c) == canary
        owner = docker("exec", c, "stat", "-c", "%a %u %g", "/run/secrets/db_password").split()
        assert owner == ["400", "1000", "1000"]
        assert docker("exec", c, "id", "-u").strip() == "1000"  # read above as the service's own user
        write = subprocess.run(["docker", "exec", c, "sh", "-c", "echo x > /run/secrets/db_password"],
                               capture_output=True)
        assert write.returncode != 0  # a read-only mount, and a 0400 file
        assert read_secret(c) == canary
    started = {c: json.loads(docker("inspect", c))[0]["State"]["StartedAt"] for c in containers}

    # a change reaches the running instances' files in place, without a restart
    changed = json.loads(daemon.cli("-j", "sec", "secret", "set", "db_password", "--json", input=canary + "-v2").stdout)
    assert changed["version"] == 2 and changed["instances_updated"] == 2
    for c in containers:
        assert read_secret(c) == canary + "-v2"
        assert json.loads(docker("inspect", c))[0]["State"]["StartedAt"] == started[c]

    # never shown: the state dir, the log, every get/list --json, docker inspect, argv
    assert state_dir_hits(daemon, needle) == []
    assert occurrences(needle, daemon.log.read_bytes()) == 0
    outputs = json_outputs(daemon)
    assert "secret.set" in outputs and occurrences(needle, outputs.encode()) == 0
    inspected = docker("inspect", *containers)
    assert occurrences(needle, inspected.encode()) == 0
    mounts = [m for m in json.loads(inspected)[0]["Mounts"] if m["Destination"] == "/run/secrets"]
    assert len(mounts) == 1 and mounts[0]["RW"] is False
    assert cmdline_hits(needle) == []
    assert root_reveals(daemon) == canary + "-v2"

    # rotate-key: the old key leaves the key file; a restarted daemon's new instances get the value
    old_key = daemon.key_file.read_bytes().strip()
    rotated = daemon.json("secret", "rotate-key")
    assert rotated["reencrypted"] >= 2
    new_key = daemon.key_file.read_bytes()
    assert old_key not in new_key and len(new_key.split()) == 1
    assert oct(daemon.key_file.stat().st_mode & 0o777) == "0o600"
    daemon.kill()
    daemon.start()
    daemon.cli("-j", "sec", "service", "reprovision", "db", "--wait")
    fresh = [c["ID"] for c in daemon.running("db")]
    assert len(fresh) == 2 and not set(fresh) & set(containers)
    assert all(read_secret(c) == canary + "-v2" for c in fresh)
    assert state_dir_hits(daemon, needle) == [] and occurrences(needle, daemon.log.read_bytes()) == 0
    # the old instances' files went with them
    left = wait_until(lambda: sorted(p.name for p in (daemon.run_dir / "secrets" / "sec").iterdir()) ==
                      sorted(json.loads(docker("inspect", c))[0]["Config"]["Labels"]["io.mariposa.instance"]
                             for c in fresh), timeout=30, what="the old instances' secret files to go")
    assert left


def root_reveals(d: Daemon) -> str:
    """`secret reveal` prints the value alone (this test runs as root, as the command requires)."""
    assert os.getuid() == 0
    return d.cli("-j", "sec", "secret", "reveal", "db_password").stdout
