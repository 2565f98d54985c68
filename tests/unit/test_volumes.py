"""Volumes in manifests and through the control layer (issue 12), on the fake driver: each
refusal at its line and column, data kept by `project delete` unless purged, `volume rm`
refused while mounted."""

from __future__ import annotations

import pytest

from mariposa.errors import Conflict, NotFound
from mariposa.manifest import ManifestError, parse_manifest
from mariposa.model import MountSpec
from tests.unit.conftest import ROOT, Core

GOOD = """\
services:
  db:
    image: busybox
    command: sleep 1000
    volumes:
      - data:/var/lib/db
      - /srv/site:/www:ro
      - ./conf:/etc/app
      - type: tmpfs
        target: /scratch
        size: 64m
      - {type: volume, source: data, target: /backup, read_only: true}
volumes:
  data:
    labels: [backup=nightly]
"""


def test_every_kind_of_mount_reaches_the_spec():
    (db,) = parse_manifest(GOOD, base_dir="/srv/proj").services
    assert db.volumes == (
        MountSpec("volume", "data", "/var/lib/db", labels=(("backup", "nightly"),)),
        MountSpec("bind", "/srv/site", "/www", True),
        MountSpec("bind", "/srv/proj/conf", "/etc/app"),
        MountSpec("tmpfs", None, "/scratch", size=64 * 1024**2),
        MountSpec("volume", "data", "/backup", True, labels=(("backup", "nightly"),)),
    )


@pytest.mark.parametrize(("line", "replacement", "where", "message"), [
    ("      - data:/var/lib/db\n", "      - dat:/var/lib/db\n", (6, 9),
     "unknown volume 'dat': the top-level 'volumes:' declares data; did you mean 'data'?"),
    ("      - /srv/site:/www:ro\n", "      - /etc:/www:ro\n", (7, 9), "bind mount /etc is outside bind_roots"),
    ("      - /srv/site:/www:ro\n", "      - /srv/site:/www:rx\n", (7, 9), "the mode must be ro or rw"),
    ("      - /srv/site:/www:ro\n", "      - /srv/site:www\n", (7, 9), "the target 'www' must be an absolute path"),
    ("      - /srv/site:/www:ro\n", "      - anonymous\n", (7, 9), "an anonymous volume would be lost"),
    ("      - /srv/site:/www:ro\n", "      - data:/scratch\n", (9, 9), "/scratch is mounted twice"),
    ("        size: 64m\n", "        size: lots\n", (11, 15), "lots"),
    ("    labels: [backup=nightly]\n", "    driver: local\n", (15, 5), "unknown volume option 'driver'"),
])
def test_mount_problems_point_at_the_entry(line, replacement, where, message):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(GOOD.replace(line, replacement), "m.yaml", base_dir="/srv/proj")
    p = caught.value.problems[0]
    assert (p.line, p.column) == where and message in p.message, p


def test_without_a_top_level_declaration_any_name_is_the_project_s():
    text = "services:\n  db:\n    image: x\n    volumes: [data:/d]\n"
    assert parse_manifest(text).services[0].volumes == (MountSpec("volume", "data", "/d"),)


def test_a_relative_bind_path_needs_the_manifest_s_directory():
    text = "services:\n  db:\n    image: x\n    volumes: [./conf:/d]\n"
    with pytest.raises(ManifestError, match="needs the manifest's directory"):
        parse_manifest(text)
    assert parse_manifest(text, bind_roots=None, base_dir="/anywhere").services[0].volumes[0].source == "/anywhere/conf"


MANIFEST = "services:\n  db:\n    image: busybox\n    command: sleep 1000\n    volumes: [data:/d]\n"


async def test_delete_keeps_volumes_unless_purged_and_rm_waits_for_no_user(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    (vol,) = await core.control.volumes.list(ROOT, "p")
    assert vol["name"] == "data" and len(vol["used_by"]) == 1
    with pytest.raises(Conflict, match="in use"):
        await core.control.volumes.remove(ROOT, "p", "data")
    with pytest.raises(NotFound):
        await core.control.volumes.remove(ROOT, "p", "nope")

    result = await core.control.projects.delete(ROOT, "p")
    assert result["volumes_kept"] == ["data"]
    await core.settle(result)
    assert [v.name for v in await core.driver.volumes("p")] == ["data"]

    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))  # the same name finds it again
    (vol,) = await core.control.volumes.list(ROOT, "p")
    result = await core.control.projects.delete(ROOT, "p", purge_volumes=True)
    assert result["volumes_kept"] == []
    await core.settle(result)
    assert await core.driver.volumes("p") == []
