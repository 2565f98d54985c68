"""A service's listing counts its running instances' health verdicts itself (control/views.py),
so that a page of a project of 10,000 instances needs no list of them to show three numbers."""

from __future__ import annotations

from tests.unit.conftest import ROOT, Core


async def test_each_service_carries_its_running_instances_health_counts(core: Core):
    result = await core.control.projects.add(
        ROOT, "shop", "services:\n  web:\n    image: busybox\n    command: sleep 1000\n    scale: 3\n")
    await core.settle(result)
    [web] = await core.control.services.list(ROOT, "shop")
    assert web["running"] == 3
    assert web["health"] == {"healthy": 0, "unhealthy": 0, "unknown": 3}  # no checks: no verdict
    instances = await core.control.services.instances(ROOT, "shop", "web")
    by_verdict = {"healthy": 0, "unhealthy": 0, "unknown": 0}
    for i in instances:
        by_verdict[i["health"] if i["health"] in ("healthy", "unhealthy") else "unknown"] += 1
    assert web["health"] == by_verdict  # what the page counted from every instance before
