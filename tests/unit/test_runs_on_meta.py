"""Event services run on a meta change (``on: {meta: [...]}``, runs/on_meta.py), in the whole
daemon on the fake driver with a virtual clock: a changed watched key queues exactly one run
with trigger ``event`` and ``MARIPOSA_META_KEYS``; a write of the same value, or of a key no
service watches, queues none; a full queue records the run skipped and keeps the meta change."""

from __future__ import annotations

import attrs
import pytest
from trio.testing import MockClock

from tests.unit.test_runs_fake import START, make


@pytest.fixture
def virtual_clock():
    return MockClock(autojump_threshold=0.02)  # as test_runs_fake.py's, which says why

EVENT = ("services:\n  job:\n    service_type: event\n    image: busybox\n    command: sh -c 'sleep 1'\n"
         "    on:\n      meta: [color, size]\n")


async def meta(s, method: str, key: str, **body):
    call = {"PUT": s.client.put, "DELETE": s.client.delete, "POST": s.client.post}[method]
    path = f"/v1/projects/p/meta/{key}" + ("/increment" if method == "POST" else "")
    with s.frozen():
        r = await (call(path, json=body) if method != "DELETE" else call(path))
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_changed_watched_key_queues_one_event_run(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add(EVENT)
    first = await meta(s, "PUT", "color", value="red")  # a key that was not set: a change
    assert len(first["runs"]) == 1
    assert (await meta(s, "PUT", "color", value="red"))["runs"] == []  # the same value: nothing
    assert (await meta(s, "PUT", "other", value="x"))["runs"] == []  # nobody watches it
    await s.until(START + 5)
    runs = await s.runs()
    assert [(r["id"], r["trigger"], r["state"]) for r in runs] == [(first["runs"][0], "event", "succeeded")]
    assert runs[0]["env"] == [["MARIPOSA_META_KEYS", "color"]]
    # an increment, a removal and an import each change the value: one run each
    await meta(s, "POST", "size", by=2)
    await meta(s, "DELETE", "color")
    with s.frozen():
        r = await s.client.post("/v1/projects/p/meta", json={"manifest": "size: '2'\ncolor: blue\n", "force": True})
    assert r.status_code == 200 and len(r.json()["runs"]) == 1, r.text  # size kept its value: color only
    await s.until(START + 20)
    runs = await s.runs()
    assert [r["env"][0][1] for r in runs] == ["color", "size", "color", "color"]
    assert all(r["state"] == "succeeded" and r["trigger"] == "event" for r in runs)


async def test_a_full_queue_records_the_run_skipped_and_keeps_the_change(virtual_clock, tmp_path, nursery):
    s = await make(tmp_path, nursery, virtual_clock)
    await s.add((EVENT + "    queue_limit: 1\n").replace("sleep 1", "sleep 100"))
    await meta(s, "PUT", "color", value="a")
    await s.until(START + 1)  # it runs; the next waits; the one after finds the queue full
    await meta(s, "PUT", "color", value="b")
    await meta(s, "PUT", "color", value="c")
    with s.frozen():
        assert (await s.client.get("/v1/projects/p/meta/color")).json()["value"] == "c"
    states = sorted(r["state"] for r in await s.runs())
    assert states == ["queued", "running", "skipped"]
    [skipped] = [r for r in await s.runs() if r["state"] == "skipped"]
    assert "queue_limit 1" in skipped["reason"] and "meta color changed" in skipped["reason"]


def test_a_project_spec_finds_its_services_by_name_and_compares_by_them_alone():
    # found by the scheduler's CPU bench: a scan per lookup made 1,000 services quadratic
    from mariposa.model import ProjectSpec, ServiceSpec

    services = tuple(ServiceSpec(name=f"s{n}", image="busybox") for n in range(1000))
    spec = ProjectSpec(services=services)
    assert spec.service("s999") is services[999] and spec.service("nope") is None
    assert spec == ProjectSpec(services=services) and "_by_name" not in repr(spec)
    assert attrs.evolve(spec, services=services[:1]).service("s999") is None
