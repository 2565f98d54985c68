"""A version pins the package sizes it was judged with, as it pins its images (issue 11, #7):
replacing the catalogue in mariposa.toml used to make every stored `package: small` version
invalid, and the daemon crash-looped at start re-validating them."""

from __future__ import annotations

from mariposa.packages import GIB, MIB, Package
from mariposa.store import goal as goal_store
from tests.unit.conftest import ROOT, Core

MANIFEST = """\
services:
  web:
    image: busybox
    command: sleep 1000
    package: small
"""
OTHER = MANIFEST.replace("sleep 1000", "sleep 2000")


def use(core: Core, *packages: Package) -> None:
    """What a reload of mariposa.toml with a [packages] table does to the daemon."""
    catalogue = {p.name: p for p in packages}
    core.ctx.packages = catalogue
    core.ctx.goals.packages = catalogue


async def memory(core: Core) -> int:
    return (await core.control.services.get(ROOT, "p", "web"))["spec"]["memory"]


async def test_a_version_keeps_its_package_sizes_when_the_catalogue_changes(core: Core):
    use(core, Package("small", 256 * MIB, 0.5))
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    versions = await core.control.projects.versions(ROOT, "p")
    assert versions[0]["packages"] == {"small": {"memory": 256 * MIB, "cpus": 0.5}}

    use(core, Package("tiny", 64 * MIB, 0.25))  # [packages.tiny] replaces the whole catalogue
    core.ctx.goals._specs.clear()  # as after a restart: nothing parsed yet
    assert core.ctx.goals.cached_spec(versions[0]["id"]) is None
    await core.ctx.goals.snapshot()  # used to raise "unknown package 'small'" and kill the daemon
    assert await memory(core) == 256 * MIB
    await core.settle(await core.control.services.scale(ROOT, "p", "web", 2))
    assert len([i for i in await core.control.services.instances(ROOT, "p", "web") if i["state"] == "running"]) == 2


async def test_today_s_sizes_apply_to_new_versions_and_a_revert_brings_the_old_ones_back(core: Core):
    use(core, Package("small", 256 * MIB, 0.5))
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    use(core, Package("small", 1 * GIB, 1.0))
    await core.settle(await core.control.projects.update(ROOT, "p", OTHER))
    assert await memory(core) == 1 * GIB

    # the same text again, judged by a changed catalogue, is a new version (its instances change)
    use(core, Package("small", 2 * GIB, 1.0))
    result = await core.control.projects.update(ROOT, "p", OTHER)
    await core.settle(result)
    assert await memory(core) == 2 * GIB
    assert [v["seq"] for v in await core.control.projects.versions(ROOT, "p")] == [3, 2, 1]

    use(core)  # and a catalogue without 'small' at all does not stop a revert to version 1
    await core.settle(await core.control.projects.revert(ROOT, "p", "1"))
    assert await memory(core) == 256 * MIB
    newest = (await core.control.projects.versions(ROOT, "p"))[0]
    assert newest["packages"] == {"small": {"memory": 256 * MIB, "cpus": 0.5}}


async def test_service_revert_takes_back_that_service_s_package_sizes_only(core: Core):
    two = MANIFEST + "  db:\n    image: busybox\n    command: sleep 1000\n    package: large\n"
    use(core, Package("small", 256 * MIB, 0.5), Package("large", 4 * GIB, 2.0))
    await core.settle(await core.control.projects.add(ROOT, "p", two))
    use(core, Package("small", 512 * MIB, 0.5), Package("large", 8 * GIB, 2.0))
    await core.settle(await core.control.projects.update(ROOT, "p", two.replace("sleep 1000", "sleep 3000")))
    await core.settle(await core.control.services.revert(ROOT, "p", "web", "1"))
    assert await memory(core) == 256 * MIB
    db = await core.control.services.get(ROOT, "p", "db")
    assert db["spec"]["memory"] == 8 * GIB


async def test_a_version_from_before_pinning_is_read_with_the_built_in_catalogue(core: Core):
    use(core, Package("small", 256 * MIB, 0.5))
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    await core.ctx.store.call(lambda db: db.execute("UPDATE versions SET packages = NULL"))
    use(core, Package("tiny", 64 * MIB, 0.25))
    core.ctx.goals._specs.clear()
    await core.ctx.goals.snapshot()
    assert await memory(core) == 256 * MIB  # the built-in 'small'


async def test_a_version_that_cannot_be_read_leaves_its_project_alone_and_the_rest_running(core: Core):
    use(core, Package("small", 256 * MIB, 0.5))
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    await core.settle(await core.control.projects.add(ROOT, "q", MANIFEST.replace("package: small\n", "")))
    await core.ctx.store.call(
        lambda db: db.execute("UPDATE versions SET packages = '{}', manifest = replace(manifest, 'small', 'gone')"
                              " WHERE project_id = (SELECT id FROM projects WHERE name = 'p')"))
    core.ctx.goals._specs.clear()
    before = [i["id"] for i in await core.control.services.instances(ROOT, "p", "web")]

    await core.ctx.goals.snapshot()  # logs the problem instead of raising
    await core.settle(await core.control.services.scale(ROOT, "q", "web", 3))  # the reconciler goes on
    assert [i["id"] for i in await core.control.services.instances(ROOT, "p", "web")] == before
    failed = (await core.settle(await core.control.services.scale(ROOT, "p", "web", 2)))[0]
    assert failed["state"] == "failed"
    assert "cannot be read" in failed["message"] and "unknown package 'gone'" in failed["message"]
    project = await core.ctx.store.call(goal_store.get_project, "p")
    assert not core.ctx.goals.readable(project)
