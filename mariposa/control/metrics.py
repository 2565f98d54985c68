"""What the collector saw: ``top`` (one row per instance, its latest sample beside its health,
restarts and age), ``service stats`` (a service's instances over a window, and their sum) and the
Prometheus exposition of all of it plus the daemon's own numbers (``GET /metrics``).

The last hour comes from memory (metrics/history.py) at full resolution; a longer window (up to
a day) from the minute rows in SQLite (store/metrics.py).
"""

from __future__ import annotations

from typing import Any

from mariposa.control import views
from mariposa.control.base import Area, operation
from mariposa.control.caller import Caller
from mariposa.errors import BadRequest
from mariposa.metrics import exposition
from mariposa.metrics.exposition import Family
from mariposa.metrics.history import HOUR, Sample
from mariposa.store import goal as goal_store
from mariposa.store import instances as instance_store
from mariposa.store import metrics as metric_store
from mariposa.store.metrics import DAY

TASK_STATES = ("queued", "active", "completed", "failed", "terminated")
RATES = ("net_rx", "net_tx", "block_read", "block_write")


def parse_window(value: object) -> float:
    """``--since``: a duration (``90s``, ``30m``, ``1h``, ``6h``, ``1d``) back from now, at most a day."""
    from mariposa.manifest.scheduling import parse_duration

    if value is None or value == "":
        return HOUR
    try:
        seconds = parse_duration(value)
    except (TypeError, ValueError):
        raise BadRequest(f"'since' must be a duration such as 10m, 1h or 6h, not '{value}'") from None
    if seconds > DAY:
        raise BadRequest(f"'since' must be at most 24h (the day kept at one-minute resolution), not '{value}'")
    return seconds


def _summary(samples: list[dict]) -> dict:
    """Averages (memory: the average and the most) of rows with the Sample's fields."""
    n = len(samples)
    if not n:
        return {"count": 0, "cpu": None, "cpu_max": None, "memory": None, "memory_max": None,
                "memory_limit": None, **{k: None for k in RATES}}
    return {
        "count": n,
        "cpu": sum(s["cpu"] for s in samples) / n,
        "cpu_max": max(s["cpu"] for s in samples),
        "memory": round(sum(s["memory"] for s in samples) / n),
        "memory_max": max(s.get("memory_max", s["memory"]) for s in samples),
        "memory_limit": samples[-1]["memory_limit"],
        **{k: sum(s[k] for s in samples) / n for k in RATES},
    }


class Metrics(Area):
    @operation("metrics.top", target="project", each="project_id")
    async def top(self, caller: Caller, project: str | None = None, service: str | None = None) -> list[dict]:
        """Every instance (of a project, of a service), its latest sample and how it is."""
        project_id = await self._project_id(project)
        if service is not None:
            if project is None:
                raise BadRequest("a service is named within its project: give the project too")
            service = (await self.ctx.store.call(goal_store.get_service, await self._project(project), service)).name
        found = [i for i in await self.ctx.inventory(project_id) if service is None or i.service == service]
        found.sort(key=lambda i: (i.project_name, i.service, i.name))
        records = await self.ctx.store.call(instance_store.for_project, project_id)
        now = self.ctx.clock.now()
        rows = []
        for inst in found:
            data = views.instance_json(self.ctx, inst, records.get(inst.id))
            sample = self.ctx.metrics.latest(inst.id) if self.ctx.metrics is not None and inst.running else None
            started = (records.get(inst.id) or {}).get("last_start_at") or inst.created
            rows.append({
                "project": inst.project_name, "project_id": inst.project_id, "service": inst.service,
                "instance": inst.name, "id": inst.id,
                "compute_type": inst.compute_type, "state": inst.state, "health": data["health"],
                "restarts": data["restarts"], "age": max(0.0, now - started) if inst.running else None,
                **_levels(sample), "sample": sample.to_json() if sample else None,
            })
        return rows

    @operation("service.stats", target="project")
    async def service_stats(self, caller: Caller, project: str, service: str, since: object = None) -> dict:
        """A service's instances over the last ``since`` (default an hour, at most a day): each
        one's averages, and their sum (the average CPU too), with the samples they are of."""
        window = parse_window(since)
        row = await self._project(project)
        service = (await self.ctx.store.call(goal_store.get_service, row, service)).name  # NotFound, by name or id
        now = self.ctx.clock.now()
        start = now - window
        names = {i.id: i.name for i in await self.ctx.inventory(row.id) if i.service == service}
        per: dict[str, list[dict]] = {}
        if window <= HOUR:
            source = "memory"
            history = self.ctx.metrics
            series = history.of(row.id, service) if history is not None else {}
            for instance_id, s in series.items():
                per[instance_id] = [x.to_json() for x in s.samples(since=start)]
        else:
            source = "minutes"
            for r in await self.ctx.store.call(metric_store.minutes, row.id, service, start):
                per.setdefault(r["instance_id"], []).append({"when": r["minute"], **{
                    k: r[k] for k in ("cpu", "memory", "memory_max", "memory_limit", *RATES, "samples")}})
        instances = []
        for instance_id, samples in sorted(per.items(), key=lambda kv: names.get(kv[0], kv[0])):
            if not samples:
                continue
            instances.append({"id": instance_id, "instance": names.get(instance_id, instance_id[:12]),
                              "running": instance_id in names, **_summary(samples), "samples": samples})
        total: dict[str, Any] = {"instances": len(instances)}
        for key in ("cpu", "memory", "memory_max", *RATES):
            total[key] = sum(i[key] for i in instances) if instances else None
        total["cpu_average"] = total["cpu"] / len(instances) if instances else None
        return {"project": row.name, "service": service, "since": start, "until": now, "window": window,
                "source": source, "interval": self.ctx.metrics.interval if self.ctx.metrics else None,
                "instances": instances, "total": total}

    @operation("metrics.scrape", kind="host")
    async def exposition(self, caller: Caller) -> str:
        """Everything in the Prometheus text format."""
        return exposition.render(await self._families())

    async def _families(self) -> list[Family]:
        ctx = self.ctx
        now = ctx.clock.now()
        per_instance = [
            Family("mariposa_instance_cpu_percent", "gauge", "CPU used over the last interval, percent of one core"),
            Family("mariposa_instance_memory_bytes", "gauge", "Memory in use"),
            Family("mariposa_instance_memory_limit_bytes", "gauge", "Memory limit (instances with one)"),
            Family("mariposa_instance_network_receive_bytes_per_second", "gauge", "Network bytes received a second"),
            Family("mariposa_instance_network_transmit_bytes_per_second", "gauge", "Network bytes sent a second"),
            Family("mariposa_instance_block_read_bytes_per_second", "gauge", "Block device bytes read a second"),
            Family("mariposa_instance_block_write_bytes_per_second", "gauge", "Block device bytes written a second"),
        ]
        history = ctx.metrics
        if history is not None:
            for inst in sorted(await ctx.inventory(), key=lambda i: i.id):
                sample = history.latest(inst.id) if inst.running else None
                if sample is None:
                    continue
                labels = {"project": inst.project_name, "service": inst.service, "instance": inst.name,
                          "compute_type": inst.compute_type}
                cpu, memory, limit, rx, tx, read, write = per_instance
                cpu.add(sample.cpu, labels)
                memory.add(sample.memory, labels)
                if sample.memory_limit:
                    limit.add(sample.memory_limit, labels)
                rx.add(sample.net_rx, labels)
                tx.add(sample.net_tx, labels)
                read.add(sample.block_read, labels)
                write.add(sample.block_write, labels)
        gauges = ctx.gauges
        counts = await ctx.store.call(metric_store.tasks_by_state)
        tasks = Family("mariposa_tasks", "gauge", "Tasks by state")
        for state in TASK_STATES:
            tasks.add(counts.get(state, 0), {"state": state})
        reconcile = exposition.histogram(
            Family("mariposa_reconcile_duration_seconds", "histogram", "How long one reconcile pass took"),
            gauges.reconcile.cumulative(), gauges.reconcile.total, gauges.reconcile.count)
        probes = ctx.monitor.probes if ctx.monitor is not None else 0
        checks = Family("mariposa_health_checks_total", "counter", "Health checks run").add(probes)
        rate = Family("mariposa_health_checks_per_second", "gauge",
                      "Health checks a second over about the last minute").add(gauges.checks_per_second(now, probes))
        lag = Family("mariposa_event_lag_seconds", "gauge",
                     "From a runtime's stamp on its last event to the daemon handling it")
        lag_max = Family("mariposa_event_lag_max_seconds", "gauge", "The most event lag over the last minute")
        if gauges.event_lag is not None:
            lag.add(gauges.event_lag)
        worst = gauges.event_lag_max(now)
        if worst is not None:
            lag_max.add(worst)
        interval = Family("mariposa_metrics_interval_seconds", "gauge", "Seconds between two samples")
        if history is not None:
            interval.add(history.interval)
        return [*per_instance, tasks, reconcile, checks, rate, lag, lag_max, interval]


def _levels(sample: Sample | None) -> dict:
    if sample is None:
        return {"cpu": None, "memory": None, "memory_limit": None, "memory_percent": None,
                **{k: None for k in RATES}}
    return {"cpu": sample.cpu, "memory": sample.memory, "memory_limit": sample.memory_limit,
            "memory_percent": sample.memory_percent, **{k: getattr(sample, k) for k in RATES}}
