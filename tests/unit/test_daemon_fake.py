"""The whole daemon in-process on the fake driver: API, store, queue, reconciler together."""

from __future__ import annotations

import functools
import json

import httpx
import pytest
import trio
from trio.testing import MockClock

from mariposa.daemon import DaemonConfig, run_daemon
from mariposa.drivers.base import DriverError
from mariposa.drivers.fake import FakeDriver

MANIFEST = """
services:
  web:
    image: busybox
    command: httpd -f -p 80
    ports: [80]
    scale: 3
    min_healthy_time: 0
  backend:
    image: busybox
    command: sleep 1000
"""


@pytest.fixture
async def daemon(tmp_path, nursery):
    driver = FakeDriver(images=("busybox", "crashy"), crash_images=("crashy",))
    sock = str(tmp_path / "m.sock")
    config = DaemonConfig(state_dir=str(tmp_path / "state"), socket=sock, resync=0.5, manifest_dir=None)
    ctx = await nursery.start(run_daemon, config, {"docker": driver})
    client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=sock), base_url="http://m")
    yield client, driver, ctx
    await client.aclose()


@pytest.fixture
def virtual_clock():
    """Back-offs of seconds pass in milliseconds: trio's clock jumps ahead whenever every task
    waits. Not at once (threshold 0) but after 20 ms of real idleness, because store calls run
    in worker threads and the API is real sockets: a jump in the middle of one would only look
    like a slow machine, but it would make every wait pointlessly short."""
    return MockClock(autojump_threshold=0.02)


async def wait_tasks(client, tasks, timeout=10):
    with trio.fail_after(timeout):
        for t in tasks:
            while True:
                got = (await client.get(f"/v1/queue/{t['id']}")).json()
                if got["state"] in ("completed", "failed", "terminated"):
                    break
                await trio.sleep(0.02)
    return got


def running(driver, service=None):
    return [i for i in driver.instances.values() if i.running and (service is None or i.service == service)]


async def test_add_scale_stop_start_delete(daemon):
    client, driver, _ = daemon
    r = await client.post("/v1/projects", json={"name": "jupiter", "manifest": MANIFEST})
    assert r.status_code == 200, r.text
    await wait_tasks(client, r.json()["tasks"])
    assert len(running(driver, "web")) == 3 and len(running(driver, "backend")) == 1

    for amount, expected in (("1", 1), ("4", 4), ("+1", 5), ("-2", 3)):
        r = await client.post("/v1/projects/jupiter/services/web/scale", json={"scale": amount})
        assert (await wait_tasks(client, r.json()["tasks"]))["state"] == "completed"
        assert len(running(driver, "web")) == expected

    r = await client.post("/v1/projects/jupiter/services/web/stop")
    await wait_tasks(client, r.json()["tasks"])
    # preservestopped defaults to on-failure: cleanly stopped instances are not kept
    assert running(driver, "web") == [] and [i for i in driver.instances.values() if i.service == "web"] == []
    r = await client.post("/v1/projects/jupiter/services/web/start")
    await wait_tasks(client, r.json()["tasks"])
    assert len(running(driver, "web")) == 3
    r = await client.post("/v1/projects/jupiter/services/web/start")
    assert r.status_code == 409 and "already running" in r.json()["message"]

    r = await client.delete("/v1/projects/jupiter")
    await wait_tasks(client, r.json()["tasks"])
    assert driver.instances == {} and driver.networks == set()
    assert (await client.get("/v1/projects/jupiter")).status_code == 404


async def test_update_replaces_changed_service_only(daemon):
    client, driver, _ = daemon
    r = await client.post("/v1/projects", json={"name": "p", "manifest": MANIFEST})
    await wait_tasks(client, r.json()["tasks"])
    backend_before = {i.id for i in running(driver, "backend")}
    r = await client.put("/v1/projects/p", json={"manifest": MANIFEST.replace("httpd -f -p 80", "httpd -f -p 81")})
    body = r.json()
    assert body["changed"] and body["version"]["seq"] == 2 and "web: changed" in body["version"]["summary"]
    await wait_tasks(client, body["tasks"])
    web = running(driver, "web")
    assert len(web) == 3 and all(i.version_id == body["version"]["id"] for i in web)
    assert {i.id for i in running(driver, "backend")} == backend_before
    # the same text again is not a new version
    r = await client.put("/v1/projects/p", json={"manifest": MANIFEST.replace("httpd -f -p 80", "httpd -f -p 81")})
    assert r.json()["changed"] is False


async def test_invalid_manifest_changes_nothing(daemon):
    client, driver, _ = daemon
    r = await client.post("/v1/projects", json={"name": "p", "manifest": MANIFEST})
    await wait_tasks(client, r.json()["tasks"])
    bad = MANIFEST.replace("image: busybox\n    command: sleep", "imgae: busybox\n    command: sleep")
    r = await client.put("/v1/projects/p", json={"manifest": bad, "filename": "p.yaml"})
    assert r.status_code == 422
    details = r.json()["details"]
    assert any("did you mean 'image'" in d["message"] and d["file"] == "p.yaml" for d in details)
    project = (await client.get("/v1/projects/p")).json()
    assert project["version"]["seq"] == 1


async def test_reconciler_replaces_killed_instance(daemon):
    client, driver, _ = daemon
    r = await client.post("/v1/projects", json={"name": "p", "manifest": MANIFEST})
    await wait_tasks(client, r.json()["tasks"])
    victim = running(driver, "web")[0]
    driver.kill(victim.id)
    with trio.fail_after(5):
        while len(running(driver, "web")) < 3:
            await trio.sleep(0.05)


async def test_queue_stop_freezes_service(virtual_clock, daemon):
    client, driver, _ = daemon
    driver.latency = 0.2
    r = await client.post("/v1/projects", json={"name": "p", "manifest": MANIFEST})
    await wait_tasks(client, r.json()["tasks"])
    r = await client.post("/v1/projects/p/services/web/scale", json={"scale": 40})
    task = r.json()["tasks"][0]
    with trio.fail_after(5):
        while (await client.get(f"/v1/queue/{task['id']}")).json()["state"] != "active":
            await trio.sleep(0.02)
    await trio.sleep(0.3)
    r = await client.delete(f"/v1/queue/{task['id'][:8]}")
    assert r.json()["state"] == "terminated"
    count = len(running(driver, "web"))
    assert count < 40
    await trio.sleep(1.5)  # several reconcile passes (resync 0.5 s)
    assert len(running(driver, "web")) == count
    svc = (await client.get("/v1/projects/p/services/web")).json()
    assert svc["frozen"] and "stopped" in svc["frozen_reason"]
    r = await client.post("/v1/projects/p/services/web/thaw")
    await wait_tasks(client, r.json()["tasks"], timeout=30)
    assert len(running(driver, "web")) == 40


async def test_missing_image_refuses_the_add_and_one_removed_later_fails_its_task_clearly(daemon):
    client, driver, _ = daemon
    r = await client.post("/v1/projects", json={"name": "p", "manifest": "services:\n  a:\n    image: nosuch\n"})
    assert r.status_code == 502 and r.json()["error"] == "registry-refused" and "nosuch" in r.json()["message"]
    assert (await client.get("/v1/projects")).json() == []  # the failed pull changed nothing
    driver.runtime.images.add("gone")
    r = await client.post("/v1/projects", json={"name": "p", "manifest": "services:\n  a:\n    image: gone\n"
                                                                       "    scale: 0\n"})
    await wait_tasks(client, r.json()["tasks"])
    driver.runtime.images.discard("gone")  # pinned, then removed behind the daemon's back
    r = await client.post("/v1/projects/p/services/a/scale", json={"scale": 1})
    got = await wait_tasks(client, r.json()["tasks"])
    assert got["state"] == "failed" and "gone" in got["message"]


async def test_restart_policy_on_failure_gives_up_and_service_goes_down(virtual_clock, daemon):
    client, driver, _ = daemon
    manifest = "services:\n  a:\n    image: crashy\n    restart: on-failure:2\n"
    r = await client.post("/v1/projects", json={"name": "p", "manifest": manifest})
    await wait_tasks(client, r.json()["tasks"], timeout=20)
    # the start task creates the instance; restarts happen in converge tasks after it
    with trio.fail_after(20):
        while not (await client.get("/v1/projects/p/services/a")).json()["frozen"]:
            await trio.sleep(0.1)
    starts = [c for c in driver.calls if c[0] == "start"]
    assert len(starts) == 2, driver.calls  # exactly the two restarts the policy allows
    svc = (await client.get("/v1/projects/p/services/a")).json()
    assert "down" in svc["frozen_reason"] and "on-failure:2" in svc["frozen_reason"]
    # kept stopped for inspection (preservestopped on-failure, exit code 1), not replaced
    [inst] = driver.instances.values()
    assert inst.state == "exited"
    await trio.sleep(1.5)
    assert len(driver.instances) == 1 and len([c for c in driver.calls if c[0] == "create"]) == 1
    tasks = (await client.get("/v1/queue")).json()
    assert any(t["state"] == "failed" and "will not start it again" in (t["message"] or "") for t in tasks)


async def _responder(nursery, state: dict) -> int:
    """A local HTTP server answering 200, or 500 once ``state['fail']`` is set."""

    async def handle(stream):
        try:
            await stream.receive_some(4096)
            code = b"500 Oops" if state["fail"] else b"200 OK"
            await stream.send_all(b"HTTP/1.1 " + code + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def test_every_instance_failing_backs_off_instead_of_churning(virtual_clock, daemon, nursery):
    client, driver, _ = daemon
    state = {"fail": False}
    port = await _responder(nursery, state)
    manifest = (f"services:\n  web:\n    image: busybox\n    scale: 2\n    healthchecks:\n"
                f"      - type: http\n        port: {port}\n        poll: 0.2\n        retries: 1\n")
    r = await client.post("/v1/projects", json={"name": "p", "manifest": manifest})
    await wait_tasks(client, r.json()["tasks"])
    async def healthy() -> int:
        rows = (await client.get("/v1/projects/p/services/web/health")).json()
        return sum(1 for h in rows if h["status"] == "healthy")

    with trio.fail_after(10):
        while await healthy() < 2:
            await trio.sleep(0.1)
    state["fail"] = True
    with trio.fail_after(20):
        while True:
            svc = (await client.get("/v1/projects/p/services/web")).json()
            step = ((svc.get("task") or {}).get("progress") or {}).get("step", "")
            if svc["replace_after"] and "backing off" in step:
                break
            await trio.sleep(0.1)
    assert "next attempt in" in step
    creates = len([c for c in driver.calls if c[0] == "create"])
    await trio.sleep(3)
    # 2 s then 4 s of back-off: at most one more round of replacements in these 3 s
    assert len([c for c in driver.calls if c[0] == "create"]) <= creates + 2
    # failed instances were retired (kept stopped, preservestopped on-failure), never more than scale serve
    assert len(running(driver, "web")) <= 2
    state["fail"] = False
    with trio.fail_after(30):
        while await healthy() < 2:
            await trio.sleep(0.2)


async def test_a_failing_service_is_retried_when_its_back_off_ends_not_at_the_resync(virtual_clock, tmp_path, nursery):
    """README: a service whose tasks keep failing is retried after 2 s, 4 s, 8 s ...; with a
    60 s resync the retries must still come at those times, not at the next resync."""
    from mariposa.converge.reconciler import RETRY

    driver = FakeDriver(images=("busybox",))

    async def refuse(req):  # every create fails (an image removed after the version pinned it)
        raise DriverError("image 'busybox' is not on this host")

    driver.create = refuse  # type: ignore[method-assign]
    sock = str(tmp_path / "m.sock")
    config = DaemonConfig(state_dir=str(tmp_path / "state"), socket=sock, resync=60, manifest_dir=None)
    await nursery.start(run_daemon, config, {"docker": driver})
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=sock), base_url="http://m") as client:
        await client.post("/v1/projects", json={"name": "p", "manifest": "services:\n  a:\n    image: busybox\n"})
        await trio.sleep(20)
        tasks = sorted((await client.get("/v1/queue")).json(), key=lambda t: t["created"])
    assert len(tasks) >= 4 and all(t["state"] == "failed" for t in tasks[:4])
    for n, (before, after) in enumerate(zip(tasks, tasks[1:4], strict=False), start=1):
        gap = after["created"] - before["ended"]
        assert RETRY.delay(n) - 0.1 <= gap < RETRY.delay(n) + 1.0, (n, gap)


async def test_following_tasks_streams_each_change_and_ends_when_all_end(daemon):
    """``--wait`` follows tasks on one stream: every task once at first, again whenever it
    changes, and the stream ends with the last task's end, not at the next poll."""
    client, driver, _ = daemon
    r = await client.post("/v1/projects", json={"name": "jupiter", "manifest": MANIFEST})
    tasks = r.json()["tasks"]
    ids = ",".join(t["id"][:10] for t in tasks)  # prefixes name tasks here as everywhere
    seen: list[dict] = []
    with trio.fail_after(10):
        # a stream's connection is not reused (the server may close it as the stream ends)
        async with client.stream("GET", "/v1/queue", params={"follow": "1", "ids": ids},
                                 headers={"Connection": "close"}) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.strip():
                    seen.append(json.loads(line))
    assert {t["id"] for t in seen} == {t["id"] for t in tasks}
    last = {t["id"]: t for t in seen}
    assert all(t["state"] == "completed" for t in last.values())
    assert len(running(driver, "web")) == 3
    # a change is sent once: no two consecutive copies of one task are alike
    for task_id in last:
        mine = [t for t in seen if t["id"] == task_id]
        assert all(a != b for a, b in zip(mine, mine[1:], strict=False))

    r = await client.get("/v1/queue", params={"follow": "1", "ids": ""})
    assert r.status_code == 400 and "ids" in r.json()["message"]
    r = await client.get("/v1/queue", params={"follow": "1", "ids": "nosuchtask"})
    assert r.status_code == 404
