"""GET /metrics as a scraper reads it (prometheus_client's own parser), `top` and `service stats`
from the control layer, on the fake driver and trio's MockClock."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mariposa.control import Caller
from mariposa.errors import BadRequest, Forbidden, NotFound
from mariposa.metrics import exposition
from mariposa.metrics.collector import Collector
from mariposa.metrics.exposition import Family
from tests.unit.conftest import ROOT
from tests.unit.test_metrics_collector import MANIFEST, by_service, rounds


def parse(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_label_values_and_help_are_escaped():
    odd = 'a "quoted" back\\slash\nnew line'
    text = exposition.render([Family("m_x", "gauge", "help with \\ and\nline").add(1.5, {"project": odd}),
                              Family("m_y_total", "counter", "a counter").add(7)])
    families = parse(text)
    [sample] = families["m_x"].samples
    assert sample.labels == {"project": odd} and sample.value == 1.5
    assert families["m_x"].documentation == "help with \\ and\nline"
    assert families["m_y"].type == "counter" and families["m_y"].samples[0].value == 7


async def test_scrape_top_and_stats(mock_clock, core, nursery):
    await core.settle(await core.control.projects.add(ROOT, "p", MANIFEST))
    collector = Collector(core.ctx, 10.0)
    await nursery.start(collector.run)
    [burner] = by_service(core, "burner")
    idle = by_service(core, "idle")
    core.driver.set_load(burner.id, cores=1.0, memory=64 << 20)
    for i in idle:
        core.driver.set_load(i.id, cores=0.1, memory=8 << 20)
    core.ctx.gauges.note_reconcile(0.003)
    core.ctx.gauges.note_reconcile(0.2)
    await rounds(collector, 3)

    families = parse(await core.control.metrics.exposition(ROOT))
    cpu = families["mariposa_instance_cpu_percent"].samples
    assert len(cpu) == 3 and len({s.labels["instance"] for s in cpu}) == 3
    assert {s.labels["service"]: s.value for s in cpu}["burner"] == pytest.approx(100.0, rel=0.01)
    assert all(s.labels["project"] == "p" and s.labels["compute_type"] == "docker" for s in cpu)
    assert len(families["mariposa_instance_memory_bytes"].samples) == 3
    tasks = {s.labels["state"]: s.value for s in families["mariposa_tasks"].samples}
    assert tasks["completed"] == 2 and tasks["queued"] == 0
    reconcile = {(s.name, s.labels.get("le")): s.value for s in families["mariposa_reconcile_duration_seconds"].samples}
    assert reconcile[("mariposa_reconcile_duration_seconds_bucket", "+Inf")] >= 2
    assert reconcile[("mariposa_reconcile_duration_seconds_bucket", "0.005")] >= 1
    assert "mariposa_health_checks" in families and "mariposa_health_checks_per_second" in families

    # a scraper through the metrics listener may read /metrics and nothing else
    scraper = Caller(transport="metrics-http")
    assert "mariposa_tasks" in await core.control.metrics.exposition(scraper)
    with pytest.raises(Forbidden):
        await core.control.projects.list(scraper)

    rows = await core.control.metrics.top(ROOT, "p")
    assert [r["service"] for r in rows] == ["burner", "idle", "idle"]
    assert rows[0]["cpu"] == pytest.approx(100.0, rel=0.01) and rows[0]["memory"] == 64 << 20
    assert rows[0]["state"] == "running" and rows[0]["restarts"] == 0 and rows[0]["age"] > 19  # 3 rounds of 10 s, less an instant
    assert len(await core.control.metrics.top(ROOT, "p", "idle")) == 2

    stats = await core.control.metrics.service_stats(ROOT, "p", "idle", since="1h")
    assert stats["source"] == "memory" and len(stats["instances"]) == 2
    assert stats["total"]["cpu"] == pytest.approx(20.0, rel=0.02)
    assert stats["total"]["cpu_average"] == pytest.approx(10.0, rel=0.02)
    assert stats["total"]["memory"] == 16 << 20
    assert all(i["count"] == len(i["samples"]) >= 2 for i in stats["instances"])
    with pytest.raises(NotFound, match="no service 'nothing'|nothing"):
        await core.control.metrics.service_stats(ROOT, "p", "nothing")
    with pytest.raises(NotFound):
        await core.control.metrics.top(ROOT, "p", "nothing")
    with pytest.raises(BadRequest, match="at most 24h"):
        await core.control.metrics.service_stats(ROOT, "p", "idle", since="2d")
    with pytest.raises(BadRequest, match="duration"):
        await core.control.metrics.service_stats(ROOT, "p", "idle", since="soon")

    await rounds(collector, 14)  # past a minute boundary or two: the minute rows
    stats = await core.control.metrics.service_stats(ROOT, "p", "idle", since="6h")
    assert stats["source"] == "minutes" and len(stats["instances"]) == 2
    assert stats["total"]["cpu"] == pytest.approx(20.0, rel=0.02)
