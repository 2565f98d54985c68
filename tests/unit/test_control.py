"""The control layer called directly: what every front end gets, with no HTTP in between."""

from __future__ import annotations

import inspect

import pytest
import structlog
import trio

from mariposa import control as control_pkg
from mariposa.control import WATCHER, Caller, Control
from mariposa.control.base import Area
from mariposa.control.redact import REDACTED, redact
from mariposa.drivers.base import RuntimeUnavailable as DriverUnavailable
from mariposa.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InternalError,
    InvalidManifest,
    NotFound,
    RuntimeUnavailable,
)
from tests.unit.conftest import ROOT, Core

MANIFEST = """\
services:
  web:
    image: busybox
    command: httpd -f -p 80
    scale: 2
    min_healthy_time: 0
    environment:
      API_TOKEN: hunter2-very-secret
      MODE: production
  backend:
    image: busybox
    command: sleep 1000
"""

NOBODY = Caller(transport="unix", uid=65534, gid=65534, pid=2)
GROUP_MEMBER = Caller(transport="unix", uid=1000, gid=1000, groups=frozenset({4242}), pid=3)
UNKNOWN = Caller(transport="unix")  # the kernel gave no credentials


def areas(control: Control) -> list[Area]:
    return [control.system, control.projects, control.services, control.instances, control.queue, control.events,
            control.volumes, control.registry, control.secrets, control.meta, control.runs, control.webhooks,
            control.access]


def control_methods(control: Control):
    for area in areas(control):
        for name, fn in inspect.getmembers(type(area), inspect.iscoroutinefunction):
            if not name.startswith("_") and name != "rows":
                yield area, name, fn


async def test_every_control_method_authorizes_translates_and_redacts(core: Core):
    methods = list(control_methods(core.control))
    assert len(methods) >= 30
    missing = [f"{type(a).__name__}.{n}" for a, n, fn in methods if not getattr(fn, "action", None)]
    assert missing == []


@pytest.mark.parametrize("caller", [NOBODY, UNKNOWN], ids=["other-user", "no-credentials"])
async def test_refused_callers_change_nothing(core: Core, caller: Caller):
    for call in (lambda: core.control.projects.add(caller, "p", MANIFEST),
                 lambda: core.control.projects.list(caller),
                 lambda: core.control.system.ping(caller)):
        with pytest.raises(Forbidden) as info:
            await call()
        assert info.value.status == 403 and info.value.exit_code == 1
    assert await core.control.projects.list(ROOT) == []
    assert core.driver.calls == []


async def test_group_members_are_judged_by_their_bindings_and_the_watcher_is_let_in(core: Core):
    with pytest.raises(Forbidden, match="mariposa user add NAME --uid 1000"):
        await core.control.projects.add(GROUP_MEMBER, "p", MANIFEST)
    await core.control.access.user_add(ROOT, "dev", [1000])
    await core.control.access.grant(ROOT, "dev", "developer", org="default")
    added = await core.control.projects.add(GROUP_MEMBER, "p", MANIFEST)
    assert added["project"]["name"] == "p" and added["project"]["org"] == "default"
    assert (await core.control.system.ping(GROUP_MEMBER))["you"] == "dev"  # a mapped uid signs with its user
    assert (await core.control.system.ping(WATCHER))["you"] == "file"


async def test_add_converges_and_get_redacts_environment_values(core: Core):
    result = await core.control.projects.add(ROOT, "jupiter", MANIFEST, "jupiter.yaml")
    assert {t["service"] for t in result["tasks"]} == {"web", "backend"}
    assert all(t["state"] == "completed" for t in await core.settle(result))
    [listed] = await core.control.projects.list(ROOT)
    assert listed["running"] == 3 and listed["services"] == 2 and listed["version"] == 1

    web = await core.control.services.get(ROOT, "jupiter", "web")
    assert web["running"] == 2 and web["spec"]["image"] == "busybox"
    assert web["spec"]["environment"] == [["API_TOKEN", REDACTED], ["MODE", REDACTED]]
    project = await core.control.projects.get(ROOT, "jupiter")
    assert project["version"].pop("manifest") == MANIFEST  # the user's own file, verbatim
    assert "hunter2-very-secret" not in repr(project) + repr(web)
    instances = await core.control.services.instances(ROOT, "jupiter", "web")
    assert len(instances) == 2 and all(i["state"] == "running" for i in instances)


async def test_invalid_manifest_names_line_and_column_and_changes_nothing(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    bad = MANIFEST.replace("scale: 2", "scale: lots").replace("command: sleep 1000", "comand: sleep 1000")
    with pytest.raises(InvalidManifest) as info:
        await core.control.projects.update(ROOT, "p", bad, "p.yaml")
    err = info.value
    assert err.status == 422 and err.exit_code == 1 and "p.yaml: 2 problems" in err.message
    assert {(d["line"], d["field"]) for d in err.details} == {(5, "services.web.scale"), (12, "services.backend.comand")}
    assert all(d["column"] >= 1 and d["file"] == "p.yaml" for d in err.details)
    assert [v["seq"] for v in await core.control.projects.versions(ROOT, "p")] == [1]


async def test_bad_arguments_are_refused_with_a_reason(core: Core):
    with pytest.raises(BadRequest, match="must be lowercase"):
        await core.control.projects.add(ROOT, "Not A Name", MANIFEST)
    with pytest.raises(BadRequest, match="'manifest'"):
        await core.control.projects.add(ROOT, "p", "  ")
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    with pytest.raises(BadRequest, match="scale must be a whole number"):
        await core.control.services.scale(ROOT, "p", "web", "many")
    for amount in ("1000000", str(10**25), "+10000"):
        with pytest.raises(BadRequest, match="at most 10,000 instances"):
            await core.control.services.scale(ROOT, "p", "web", amount)
    for wrong in (-1, -5):  # a JSON number is a scale; a relative change is a string ("-1")
        with pytest.raises(BadRequest, match="scale is at least 0"):
            await core.control.services.scale(ROOT, "p", "web", wrong)
    for wrong in (True, 1.5, [1], {"a": 1}):
        with pytest.raises(BadRequest, match="'scale' must be"):
            await core.control.services.scale(ROOT, "p", "web", wrong)
    with pytest.raises(InvalidManifest) as too_many:
        await core.control.projects.update(ROOT, "p", MANIFEST.replace("scale: 2", "scale: 1000000"))
    assert [(d["line"], d["column"], d["field"]) for d in too_many.value.details] == [(5, 12, "services.web.scale")]
    with pytest.raises(BadRequest, match="'if_version' must be a version id or number"):
        await core.control.projects.update(ROOT, "p", MANIFEST, if_version=[1])  # type: ignore[arg-type]
    with pytest.raises(Conflict, match="is at version 1"):
        await core.control.projects.update(ROOT, "p", MANIFEST.replace("scale: 2", "scale: 3"), if_version=7)  # type: ignore[arg-type]
    with pytest.raises(BadRequest, match="--rolling must be a whole number"):
        await core.control.projects.update(ROOT, "p", MANIFEST, rolling=0)
    with pytest.raises(NotFound) as info:
        await core.control.services.get(ROOT, "p", "nope")
    assert info.value.exit_code == 4


async def test_scale_stop_start_and_conflicts(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    [task] = await core.settle(await core.control.services.scale(ROOT, "p", "web", "+2"))
    assert task["state"] == "completed" and task["author"] == "uid=0"
    assert len(await core.control.services.instances(ROOT, "p", "web")) == 4
    await core.settle(await core.control.services.stop(ROOT, "p", "web"))
    assert await core.control.services.instances(ROOT, "p", "web") == []
    await core.settle(await core.control.services.start(ROOT, "p", "web"))
    with pytest.raises(Conflict) as info:
        await core.control.services.start(ROOT, "p", "web")
    assert info.value.status == 409 and info.value.exit_code == 5
    scale_events = await core.control.events.list(ROOT, "p", types=("service.scale",))
    assert [e["message"] for e in scale_events] == ["web scale 2 -> 4"]


async def test_file_managed_projects_change_only_through_their_file(core: Core):
    await core.settle(await core.control.projects.add(WATCHER, "f", MANIFEST, "/etc/x/f.yaml", source="/etc/x/f.yaml"))
    with pytest.raises(Conflict, match="managed by the file /etc/x/f.yaml"):
        await core.control.projects.update(ROOT, "f", MANIFEST.replace("scale: 2", "scale: 3"))
    with pytest.raises(Conflict):
        await core.control.projects.delete(ROOT, "f")
    changed = await core.control.projects.update(WATCHER, "f", MANIFEST.replace("scale: 2", "scale: 3"), "/etc/x/f.yaml")
    assert changed["changed"] and changed["version"]["seq"] == 2 and changed["version"]["author"] == "file"


async def test_queue_stop_ends_a_queued_task_and_freezes_the_service(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    core.driver.latency = 5.0  # every instance operation takes 5 s of virtual time
    [task] = (await core.control.services.scale(ROOT, "p", "web", "6"))["tasks"]
    stopped = await core.control.queue.stop(ROOT, task["id"], "p")
    assert stopped["state"] == "terminated" and "stopped by uid=0" in stopped["message"]
    web = await core.control.services.get(ROOT, "p", "web")
    assert web["frozen"]
    listed = await core.control.queue.list(ROOT, "p", ("terminated",))
    assert [t["id"] for t in listed] == [task["id"]]


async def test_runtime_failures_leave_as_503_and_bugs_as_500_with_an_error_id(core: Core, monkeypatch):
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))

    async def down(project_id=None):
        raise DriverUnavailable("Docker Engine not reachable at unix:///nowhere")

    monkeypatch.setattr(core.driver, "inventory", down)
    with pytest.raises(RuntimeUnavailable) as info:
        await core.control.services.list(ROOT, "p")
    assert info.value.status == 503 and info.value.exit_code == 7
    assert info.value.message == "runtime unavailable: Docker Engine not reachable at unix:///nowhere"
    # the listing answers from the store, its counts unknown
    [listed] = await core.control.projects.list(ROOT)
    assert listed["name"] == "p" and listed["running"] is None and listed["instances"] is None

    async def bug(project_id=None):
        raise KeyError("API_TOKEN=hunter2-very-secret")

    monkeypatch.setattr(core.driver, "inventory", bug)
    with structlog.testing.capture_logs() as logged:
        with pytest.raises(InternalError) as info:
            await core.control.services.list(ROOT, "p")
    err = info.value
    assert err.status == 500 and "hunter2" not in err.message
    [line] = [e for e in logged if e["event"] == "unexpected error"]
    assert line["error_id"] in err.message and line["doing"] == "service.list"


async def test_events_follow_streams_new_events_without_real_sleeping(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    stream = await core.control.events.follow(ROOT, "p", types=("service",))
    seen: list[dict] = []

    async def read():
        async for event in stream:
            seen.append(event)
            if len(seen) == 2:
                return

    with trio.fail_after(60):  # virtual seconds: a lost event fails at once, not at the suite's timeout
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(1)
            await core.control.services.scale(ROOT, "p", "web", "3")
            await core.control.services.scale(ROOT, "p", "backend", "2")
    assert [e["message"] for e in seen] == ["web scale 2 -> 3", "backend scale 1 -> 2"]


def test_redact_hides_environment_values_wherever_they_are():
    data = {"spec": {"environment": (("A", "1"), ("B", "two"))}, "list": [{"environment": {"C": "x"}}], "n": 3}
    assert redact(data) == {"spec": {"environment": [["A", REDACTED], ["B", REDACTED]]},
                            "list": [{"environment": {"C": REDACTED}}], "n": 3}


def test_the_package_says_what_the_rest_may_use():
    assert {"Control", "Caller", "AccessPolicy", "authorize", "redact", "WATCHER"} <= set(dir(control_pkg))


def running(core: Core, service: str) -> list:
    return [i for i in core.driver.instances.values() if i.running and i.service == service]


async def test_update_canary_reprovision_and_revert(core: Core):
    c = core.control
    await core.settle(await c.projects.add(ROOT, "p", MANIFEST))
    backend = {i.id for i in running(core, "backend")}
    v2_text = MANIFEST.replace("httpd -f -p 80", "httpd -f -p 81")

    preview = await c.projects.diff(ROOT, "p", v2_text)
    web = next(s for s in preview["services"] if s["service"] == "web")
    assert preview["new_version"] and web["change"] == "changed" and web["replace"] == 2
    assert [v["seq"] for v in await c.projects.versions(ROOT, "p")] == [1]  # a diff changes nothing

    canary = await c.projects.update(ROOT, "p", v2_text, count=1)
    await core.settle(canary)
    v2 = canary["version"]
    assert sorted(i.version_id == v2["id"] for i in running(core, "web")) == [False, True]
    assert {i.id for i in running(core, "backend")} == backend  # unchanged services are left alone

    [task] = await core.settle(await c.services.reprovision(ROOT, "p", "web"))
    assert task["state"] == "completed" and all(i.version_id == v2["id"] for i in running(core, "web"))

    history = await c.services.versions(ROOT, "p", "web")
    assert [(h["version"], h["changed"]) for h in history] == [(2, True), (1, True)]
    assert "httpd -f -p 80" in (await c.services.version(ROOT, "p", "web", "1"))["manifest"]
    assert (await c.projects.version(ROOT, None, v2["id"][:10]))["seq"] == 2

    reverted = await c.services.revert(ROOT, "p", "web", "1")
    await core.settle(reverted)
    assert reverted["changed"] and reverted["version"]["seq"] == 3
    assert "revert web to version 1" in reverted["version"]["summary"]
    assert len(running(core, "web")) == 2 and all(i.version_id == reverted["version"]["id"] for i in running(core, "web"))
    with pytest.raises(NotFound, match="no version 9"):
        await c.projects.revert(ROOT, "p", "9")
    with pytest.raises(Conflict, match="if-version|version"):
        await c.projects.update(ROOT, "p", MANIFEST, if_version=v2["id"])


async def test_refs_are_taken_literally(core: Core):
    await core.settle(await core.control.projects.add(ROOT, "abc", MANIFEST))
    with pytest.raises(BadRequest, match="must be lowercase"):
        await core.control.projects.add(ROOT, "abc\n", MANIFEST)
    for ref in ("abc\n", " abc", "%%%%", "____", "%"):
        with pytest.raises(NotFound):
            await core.control.projects.get(ROOT, ref)
        with pytest.raises(NotFound):
            await core.control.projects.delete(ROOT, ref)
    project = await core.control.projects.get(ROOT, "abc")
    assert (await core.control.projects.get(ROOT, project["id"][:6]))["name"] == "abc"


async def test_listing_while_projects_are_deleted_never_fails(core: Core):
    for n in range(6):
        await core.settle(await core.control.projects.add(ROOT, f"p{n}", MANIFEST))
    listings = []

    async def list_repeatedly():
        while len(listings) < 200:
            listings.append(len(await core.control.projects.list(ROOT)))
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(list_repeatedly)
        for n in range(6):
            await core.settle(await core.control.projects.delete(ROOT, f"p{n}"))
    assert listings[0] == 6 and sorted(listings, reverse=True) == listings


async def test_a_removal_cut_short_by_a_crash_is_finished_not_kept_as_a_failure(core: Core):
    from mariposa.store import instances as instance_store

    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST.replace("scale: 2", "scale: 3")))
    victim = running(core, "web")[0]
    # what a daemon killed between the stop and the delete of a scale-down leaves behind:
    await core.ctx.store.call(instance_store.mark_removing, victim.id, victim.project_id, "web")
    core.driver.kill(victim.id, exit_code=143)  # our own SIGTERM's exit code
    core.ctx.wake_reconciler()
    with trio.fail_after(60):
        while victim.id in core.driver.instances:
            await trio.sleep(0.1)
    listed = await core.control.services.instances(ROOT, "p", "web")
    assert len(listed) == 3 and not any(i["retired"] for i in listed)
    assert all(i["state"] == "running" for i in listed)
