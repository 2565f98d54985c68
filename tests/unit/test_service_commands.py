"""`service add|update|delete`: a project version made from one service's section, through the
control layer on the fake driver. The manifest stays the user's text (comments, quotes and
indentation kept); a problem names the file and line:column where it can be fixed."""

from __future__ import annotations

import pytest

from mariposa.control import WATCHER
from mariposa.errors import BadRequest, Conflict, InvalidManifest, NotFound
from mariposa.manifest.sections import Editor
from tests.unit.conftest import ROOT, Core

MANIFEST = """\
# p: a web tier and a backend
services:
  web:
    image: busybox              # the web tier
    command: httpd -f -p 80
    scale: 2
    min_healthy_time: 0
    ports:
      - 80

  # the backend answers the web tier
  backend:
    image: busybox
    command: "sleep 1000"
"""

WORKER = """\
# a worker: takes jobs off the queue
image: busybox
command: sleep 2000   # no jobs yet
environment:
  QUEUE: 'jobs'
"""


def running(core: Core, service: str) -> list:
    return [i for i in core.driver.instances.values() if i.running and i.service == service]


async def manifest_of(core: Core, project: str = "p") -> str:
    return (await core.control.projects.get(ROOT, project))["version"]["manifest"]


async def test_add_makes_a_version_with_the_section_and_starts_it(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST, "p.yaml"))
    backend = {i.id for i in running(core, "backend")}
    added = await c.services.add(ROOT, "p", "worker", WORKER, "worker.yaml")
    assert added["changed"] and added["version"]["seq"] == 2 and added["previous"]["seq"] == 1
    assert added["version"]["summary"] == "service add: worker: added"
    [task] = await core.settle(added)
    assert task["service"] == "worker" and task["state"] == "completed"
    assert len(running(core, "worker")) == 1 and {i.id for i in running(core, "backend")} == backend
    # the stored manifest is the old text, byte for byte, and the section with its comments and quotes
    assert await manifest_of(core) == MANIFEST + """\
  worker:
    # a worker: takes jobs off the queue
    image: busybox
    command: sleep 2000   # no jobs yet
    environment:
      QUEUE: 'jobs'
"""
    assert (await c.services.get(ROOT, "p", "worker"))["spec"]["command"] == ["sleep", "2000"]


@pytest.mark.parametrize("text", [
    "worker:\n  image: busybox\n  command: sleep 2000\n",
    "services:\n  worker:\n    image: busybox\n    command: sleep 2000\n",
    '{"image": "busybox", "command": "sleep 2000"}',
], ids=["named", "services", "json"])
async def test_a_section_file_may_name_its_service(core: Core, text: str):
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    await core.settle(await core.control.services.add(ROOT, "p", "worker", text, "worker.yaml"))
    assert len(running(core, "worker")) == 1


async def test_update_replaces_the_section_in_place_and_rolls_out_a_canary(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))
    backend = {i.id for i in running(core, "backend")}
    section = "image: busybox\ncommand: httpd -f -p 81   # moved\nscale: 2\nmin_healthy_time: 0\n"
    updated = await c.services.update(ROOT, "p", "web", section, "web.yaml", count=1)
    assert updated["changed"] and updated["version"]["seq"] == 2
    assert updated["version"]["summary"] == "service update: web: changed"
    await core.settle(updated)
    v2 = updated["version"]["id"]
    assert sorted(i.version_id == v2 for i in running(core, "web")) == [False, True]  # a canary of one
    assert {i.id for i in running(core, "backend")} == backend
    assert await manifest_of(core) == MANIFEST.replace("""\
    image: busybox              # the web tier
    command: httpd -f -p 80
    scale: 2
    min_healthy_time: 0
    ports:
      - 80
""", """\
    image: busybox
    command: httpd -f -p 81   # moved
    scale: 2
    min_healthy_time: 0
""")  # the blank line and the comment heading the backend stay where they were

    same = await c.services.update(ROOT, "p", "web", section, "web.yaml")
    assert not same["changed"] and same["version"]["seq"] == 2 and same["tasks"] == []
    [task] = await core.settle(await c.services.reprovision(ROOT, "p", "web", rolling=2))
    assert task["state"] == "completed" and all(i.version_id == v2 for i in running(core, "web"))


async def test_delete_makes_a_version_without_the_service(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))
    deleted = await c.services.delete(ROOT, "p", "web")
    assert deleted["changed"] and deleted["version"]["summary"] == "service delete: web: removed"
    await core.settle(deleted)
    assert running(core, "web") == [] and len(running(core, "backend")) == 1
    assert await manifest_of(core) == """\
# p: a web tier and a backend
services:
  # the backend answers the web tier
  backend:
    image: busybox
    command: "sleep 1000"
"""
    with pytest.raises(Conflict, match="'backend' is the last service of project 'p'.*project delete p"):
        await c.services.delete(ROOT, "p", "backend")
    # a deleted service's name is free again
    await core.settle(await c.services.add(ROOT, "p", "web", "image: busybox\ncommand: httpd -f -p 80\n"))
    assert len(running(core, "web")) == 1


async def test_services_are_named_as_everywhere_and_conflicts_say_what_to_do(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))
    with pytest.raises(Conflict, match="already has a service 'web'.*service update web FILE") as info:
        await c.services.add(ROOT, "p", "web", WORKER)
    assert info.value.status == 409 and info.value.exit_code == 5
    with pytest.raises(NotFound, match="no service 'nope'.*service add nope FILE") as missing:
        await c.services.update(ROOT, "p", "nope", WORKER)
    assert missing.value.status == 404 and missing.value.exit_code == 4
    with pytest.raises(NotFound, match="no service 'nope'"):
        await c.services.delete(ROOT, "p", "nope")
    with pytest.raises(BadRequest, match="invalid service name 'Bad_Name'"):
        await c.services.add(ROOT, "p", "Bad_Name", WORKER)
    with pytest.raises(BadRequest, match="'manifest'"):
        await c.services.add(ROOT, "p", "worker", "  \n")
    with pytest.raises(BadRequest, match="--rolling"):
        await c.services.update(ROOT, "p", "web", WORKER, rolling=0)
    web = await c.services.get(ROOT, "p", "web")
    await core.settle(await c.services.update(ROOT, "p", web["id"][:8], "image: busybox\ncommand: sleep 9\n"))
    assert (await c.services.get(ROOT, "p", "web"))["spec"]["command"] == ["sleep", "9"]
    assert [v["seq"] for v in await c.projects.versions(ROOT, "p")] == [2, 1]


async def test_problems_name_the_section_file_and_the_line_and_column_in_it(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))
    broken = "# worker\nimage: busybox\nscael: 2\nports:\n  - 80\n  - http\n"
    with pytest.raises(InvalidManifest) as info:
        await c.services.add(ROOT, "p", "worker", broken, "worker.yaml")
    assert info.value.message == "worker.yaml: 2 problems in the manifest; nothing was changed"
    assert [(d["file"], d["line"], d["column"], d["field"]) for d in info.value.details] == [
        ("worker.yaml", 3, 1, "services.worker.scael"), ("worker.yaml", 6, 5, "services.worker.ports[1]")]
    assert "did you mean 'scale'" in info.value.details[0]["message"]

    with pytest.raises(InvalidManifest) as info:  # the service's name is where its file names it
        await c.services.update(ROOT, "p", "web", "\nweb:\n  command: sleep 1\n", "web.yaml")
    [problem] = info.value.details
    assert (problem["file"], problem["line"], problem["column"], problem["message"]) == (
        "web.yaml", 2, 1, "'image' is required")
    with pytest.raises(InvalidManifest) as info:
        await c.services.update(ROOT, "p", "web", "image: [unclosed\n", "web.yaml")
    assert info.value.details[0]["file"] == "web.yaml" and "YAML syntax error" in info.value.details[0]["message"]
    with pytest.raises(InvalidManifest, match="web.yaml") as info:
        await c.services.update(ROOT, "p", "web", "- image: busybox\n", "web.yaml")
    assert "expected the service's options" in info.value.details[0]["message"]
    assert [v["seq"] for v in await c.projects.versions(ROOT, "p")] == [1]  # nothing was changed


async def test_a_privileged_section_is_judged_by_the_daemons_configuration(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))
    section = "image: busybox\ncommand: sleep 5\nprivileged: true\n"
    with pytest.raises(InvalidManifest) as info:
        await c.services.add(ROOT, "p", "tool", section, "tool.yaml")
    [problem] = info.value.details
    assert (problem["file"], problem["line"], problem["field"]) == ("tool.yaml", 3, "services.tool.privileged")
    assert "allow_privileged" in problem["message"]
    core.ctx.allow_privileged = True
    added = await c.services.add(ROOT, "p", "tool", section, "tool.yaml")
    assert added["changed"] and (await c.services.get(ROOT, "p", "tool"))["spec"]["privileged"]


@pytest.mark.parametrize("text,message", [
    ("db:\n  image: busybox\n", "the file describes service 'db', not 'worker'"),
    ("services:\n  worker:\n    image: busybox\n  db:\n    image: busybox\n",
     "the file describes services 'worker', 'db'; this command takes the section of service 'worker' only"),
    ("", "the file is empty"),
])
async def test_a_file_that_is_not_the_section_is_refused(core: Core, text: str, message: str):
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    with pytest.raises((InvalidManifest, BadRequest)) as info:
        await core.control.services.add(ROOT, "p", "worker", text or "# nothing\n", "worker.yaml")
    assert message in " ".join([info.value.message] + [d["message"] for d in info.value.details or []])


async def test_file_managed_projects_refuse_service_commands_naming_the_file(core: Core):
    c = core.control
    await core.settle(await c.projects.add(WATCHER, "f", MANIFEST, "/etc/x/f.yaml", source="/etc/x/f.yaml"))
    for call in (lambda: c.services.add(ROOT, "f", "worker", WORKER),
                 lambda: c.services.update(ROOT, "f", "web", WORKER),
                 lambda: c.services.delete(ROOT, "f", "web")):
        with pytest.raises(Conflict, match="managed by the file /etc/x/f.yaml: edit that file instead"):
            await call()
    assert [v["seq"] for v in await c.projects.versions(ROOT, "f")] == [1]


async def test_other_services_keep_their_pinned_images(core: Core, monkeypatch):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))
    pinned = (await c.services.get(ROOT, "p", "backend"))["spec"]["image_id"]

    async def moved(image: str) -> str:  # every tag moves after version 1 pinned it
        return "sha256:moved"

    monkeypatch.setattr(core.driver, "resolve_image", moved)
    await c.services.add(ROOT, "p", "worker", "image: busybox:2\ncommand: sleep 5\n")
    assert (await c.services.get(ROOT, "p", "worker"))["spec"]["image_id"] == "sha256:moved"
    # pins are per image reference: the section's own image stays pinned while others run it
    await c.services.update(ROOT, "p", "backend", "image: busybox\ncommand: sleep 7\n")
    for name in ("web", "backend"):
        assert (await c.services.get(ROOT, "p", name))["spec"]["image_id"] == pinned
    changes = [v["summary"] for v in await c.projects.versions(ROOT, "p")]
    assert changes == ["service update: backend: changed", "service add: worker: added", "created: web, backend"]


async def test_service_revert_puts_the_text_back_as_it_was(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))
    await core.settle(await c.services.update(ROOT, "p", "web", "image: busybox\ncommand: sleep 3\n"))
    reverted = await c.services.revert(ROOT, "p", "web", "1")
    assert reverted["changed"] and reverted["version"]["seq"] == 3
    # the same text as version 1 (the indentation of its lists included), so the same hash
    assert await manifest_of(core) == MANIFEST
    [v3, _, v1] = await c.projects.versions(ROOT, "p")
    assert v3["hash"] == v1["hash"]
    assert (await c.services.version(ROOT, "p", "web", "1"))["manifest"] == """\
services:
  web:
    image: busybox              # the web tier
    command: httpd -f -p 80
    scale: 2
    min_healthy_time: 0
    ports:
      - 80
"""


def test_the_editor_writes_the_manifest_back_as_it_was_written():
    for text in (MANIFEST, "services:\n    web:\n        image: x\n        ports:\n        - 80\n",
                 '{"services": {"web": {"image": "x", "ports": [80]}}}\n'):
        assert Editor(text).text() == text
