"""The metrics collector on the fake driver and trio's MockClock: rates as the load was set,
gone instances forgotten, a failing stats() costing one instance's reading and never the loop,
and the minute rows of the day."""

from __future__ import annotations

import pytest

from mariposa.drivers.base import DriverError
from mariposa.metrics.collector import Collector
from mariposa.store import metrics as metric_store
from tests.unit.conftest import ROOT

MANIFEST = """
services:
  burner:
    image: busybox
    command: sh -c 'while :; do :; done'
  idle:
    image: busybox
    command: sleep 1000
    scale: 2
"""


async def started(core, nursery, interval: float = 10.0) -> Collector:
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    collector = Collector(core.ctx, interval)
    await nursery.start(collector.run)
    return collector


def by_service(core, service):
    return [i for i in core.driver.instances.values() if i.running and i.service == service]


async def rounds(collector: Collector, n: int) -> None:
    for _ in range(n):
        await collector.sampled.wait()


async def test_rates_follow_the_load(mock_clock, core, nursery):
    collector = await started(core, nursery)
    [burner] = by_service(core, "burner")
    idle = by_service(core, "idle")
    core.driver.set_load(burner.id, cores=1.0, memory=64 << 20)
    for i in idle:
        core.driver.set_load(i.id, cores=0.02)
    await rounds(collector, 4)
    history = core.ctx.metrics
    assert history is collector.history
    samples = history.series(burner.id).samples()
    assert len(samples) >= 2
    assert all(s.cpu == pytest.approx(100.0, rel=0.01) for s in samples[1:])
    assert samples[-1].memory == 64 << 20
    for i in idle:
        assert history.latest(i.id).cpu == pytest.approx(2.0, rel=0.05)
    # two readings 10 s apart on the one clock
    assert samples[-1].when - samples[-2].when == pytest.approx(10.0, abs=0.1)
    assert set(history.of(service="idle")) == {i.id for i in idle}

    core.driver.set_load(burner.id, cores=0.5)
    await rounds(collector, 2)
    assert history.latest(burner.id).cpu == pytest.approx(50.0, rel=0.01)


async def test_gone_instances_are_forgotten(mock_clock, core, nursery):
    collector = await started(core, nursery)
    await rounds(collector, 2)
    idle = by_service(core, "idle")
    assert all(core.ctx.metrics.latest(i.id) is not None for i in idle)
    await core.settle(await core.control.services.scale(ROOT, "p", "idle", "1"))
    await rounds(collector, 1)
    left = {i.id for i in by_service(core, "idle")}
    assert set(core.ctx.metrics.of(service="idle")) == left and len(left) == 1


async def test_a_failing_stats_costs_one_instance_and_is_logged_once(mock_clock, core, nursery, monkeypatch, caplog):
    collector = await started(core, nursery)
    [burner] = by_service(core, "burner")
    real = core.driver.stats
    calls = []

    async def flaky(inst):
        if inst.id == burner.id:
            calls.append(inst.id)
            raise DriverError("cgroup file vanished")
        return await real(inst)

    monkeypatch.setattr(core.driver, "stats", flaky)
    warnings = []
    monkeypatch.setattr("mariposa.metrics.collector.log.warning", lambda *a, **k: warnings.append((a, k)))
    await rounds(collector, 4)
    assert len(calls) >= 3
    assert core.ctx.metrics.latest(burner.id) is None
    assert all(core.ctx.metrics.latest(i.id) is not None for i in by_service(core, "idle"))
    assert len([w for w in warnings if w[1].get("instance") == burner.id[:12]]) == 1

    monkeypatch.setattr(core.driver, "stats", real)  # it recovers: two readings later, samples again
    await rounds(collector, 3)
    assert core.ctx.metrics.latest(burner.id) is not None


async def test_a_runtime_away_keeps_its_history(mock_clock, core, nursery, monkeypatch):
    collector = await started(core, nursery)
    await rounds(collector, 3)
    ids = {i.id for i in core.driver.instances.values() if i.running}

    async def away(project_id=None):
        raise DriverError("docker went away")

    monkeypatch.setattr(core.driver, "inventory", away)
    await rounds(collector, 2)
    assert set(core.ctx.metrics.of()) == ids


async def test_minute_rows(mock_clock, core, nursery):
    collector = await started(core, nursery, interval=10.0)
    [burner] = by_service(core, "burner")
    core.driver.set_load(burner.id, cores=1.0, memory=32 << 20)
    await rounds(collector, 3)
    core.driver.set_load(burner.id, memory=96 << 20)
    await rounds(collector, 20)  # past at least two minute boundaries
    assert collector.rollup.written > 0
    project = await core.ctx.projects.project("p")
    rows = await core.ctx.store.call(metric_store.minutes, project.id, "burner", 0)
    assert rows and all(r["instance_id"] == burner.id for r in rows)
    assert all(r["cpu"] == pytest.approx(100.0, rel=0.01) for r in rows)
    assert all(r["minute"] % 60 == 0 for r in rows)
    assert len({r["minute"] for r in rows}) == len(rows)
    assert max(r["memory_max"] for r in rows) == 96 << 20

    # a day later every one of them is gone (written as the collector would, a day on)
    first = min(r["minute"] for r in rows)
    later = first + 86400 + 60
    row = (later, burner.id, project.id, "burner", 6, 1.0, 1, 1, None, 0.0, 0.0, 0.0, 0.0)
    deleted = await core.ctx.store.call(metric_store.write_minutes, [row], later + 30)
    assert deleted >= len(rows)  # the idle ones too
    left = [r["minute"] for r in await core.ctx.store.call(metric_store.minutes, project.id, "burner", 0)]
    assert later in left and min(left) >= later + 30 - 86400  # (the collector goes on writing meanwhile)
