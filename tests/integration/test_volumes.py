"""Named volumes, bind mounts and tmpfs on the real Engine (issue 12): data written by a `db`
instance survives an image update, a scale to 0 and back, a daemon SIGKILL and restart, and a
`project delete` without --purge-volumes followed by `project add` of the same name;
--purge-volumes removes it; `volume rm` is refused while an instance mounts it."""

from __future__ import annotations

import json
import signal

import pytest

from tests.integration.harness import IMAGE, Daemon, docker, wait_until

pytestmark = pytest.mark.docker

MANIFEST = f"""services:
  db:
    image: {IMAGE}
    command: sh -c 'echo {{generation}} >> /data/generations; exec sleep 100000'
    volumes:
      - data:/data
      - {{site}}:/www:ro
      - type: tmpfs
        target: /scratch
        size: 8m
volumes:
  data:
    labels: {{{{backup: nightly}}}}
"""


def generations(d: Daemon) -> list[str]:
    (c,) = d.running("db")
    return docker("exec", c["ID"], "cat", "/data/generations").split()


def test_named_volume_data_outlives_every_instance_change(tmp_path):
    site = tmp_path / "srv-site"
    site.mkdir()
    (site / "index.html").write_text("hello\n")
    (tmp_path / "mariposa.toml").write_text(f'bind_roots = ["{tmp_path}"]\n')
    manifest = tmp_path / "db.yaml"

    def write(generation: str) -> None:
        manifest.write_text(MANIFEST.format(generation=generation, site="./srv-site"))

    d = Daemon(tmp_path).start("--config", str(tmp_path / "mariposa.toml"))
    try:
        write("one")
        d.cli("project", "add", "vols", str(manifest), "--wait")
        (c,) = d.running("db")
        info = json.loads(docker("inspect", c["ID"]))[0]
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert mounts["/data"]["Name"] == "mariposa_vols_data" and mounts["/data"]["RW"] is True
        assert mounts["/www"]["Source"] == str(site) and mounts["/www"]["RW"] is False
        assert info["HostConfig"]["Mounts"][2] == {"Type": "tmpfs", "Target": "/scratch",
                                                   "TmpfsOptions": {"SizeBytes": 8 * 1024**2}}
        assert docker("exec", c["ID"], "cat", "/www/index.html") == "hello\n"
        labels = json.loads(docker("volume", "inspect", "mariposa_vols_data"))[0]["Labels"]
        assert labels["backup"] == "nightly" and labels["io.mariposa.project-name"] == "vols"

        write("two")  # a changed spec: the instance is replaced, the volume stays
        d.cli("project", "update", "vols", str(manifest), "--wait")
        assert generations(d) == ["one", "two"]
        d.cli("-j", "vols", "service", "scale", "db", "0", "--wait")
        d.cli("-j", "vols", "service", "scale", "db", "1", "--wait")
        assert generations(d) == ["one", "two", "two"]

        d.kill(signal.SIGKILL)
        docker("rm", "-f", d.running("db")[0]["ID"])  # and its instance goes while the daemon is down
        d.start("--config", str(tmp_path / "mariposa.toml"))
        wait_until(lambda: len(d.running("db")) == 1, timeout=60, what="the db back")
        assert generations(d) == ["one", "two", "two", "two"]

        (vol,) = d.json("-j", "vols", "volume", "list")
        assert vol["name"] == "data" and vol["labels"] == {"backup": "nightly"} and len(vol["used_by"]) == 1
        r = d.cli("-j", "vols", "volume", "rm", "data", check=False)
        assert r.returncode != 0 and "in use" in r.stderr

        r = d.cli("project", "delete", "vols", "--wait")
        assert "keeping volumes: data" in r.stderr
        assert json.loads(docker("volume", "inspect", "mariposa_vols_data"))
        write("three")
        d.cli("project", "add", "vols", str(manifest), "--wait")
        assert generations(d) == ["one", "two", "two", "two", "three"]

        d.cli("project", "delete", "vols", "--purge-volumes", "--wait")
        assert docker("volume", "ls", "-q", "--filter", "name=mariposa_vols_data").strip() == ""
    finally:
        d.cleanup()
        docker("volume", "rm", "-f", "mariposa_vols_data", check=False)


def test_bind_mounts_outside_bind_roots_are_refused(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        (tmp_path / "m.yaml").write_text(f"services:\n  web:\n    image: {IMAGE}\n    volumes: ['/etc:/host-etc:ro']\n")
        r = d.cli("project", "add", "binds", str(tmp_path / "m.yaml"), check=False)
        assert r.returncode != 0
        assert ("m.yaml:4:15: services.web.volumes[0]: bind mount /etc is outside bind_roots "
                "(/srv, /var/lib/mariposa-data)") in r.stderr, r.stderr
        assert d.json("project", "list") == []
    finally:
        d.cleanup()
