"""Metrics on the real Engine (issue 17): `mariposa top --once` shows a CPU burner near a core
and an idle instance near none; GET /metrics, on the control socket and on the metrics_listen
port, parses with prometheus_client's parser and has exactly one series per running instance of
each per-instance metric; `service stats` sums its instances. The collector samples every second
here (metrics_interval = 1 in the daemon's configuration file)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import IMAGE, Daemon, wait_until

pytestmark = pytest.mark.docker

MANIFEST = f"""services:
  burner:
    image: {IMAGE}
    command: sh -c 'while :; do :; done'
  idle:
    image: {IMAGE}
    command: sleep 3600
    scale: 2
"""
PER_INSTANCE = ("mariposa_instance_cpu_percent", "mariposa_instance_memory_bytes",
                "mariposa_instance_network_receive_bytes_per_second",
                "mariposa_instance_network_transmit_bytes_per_second",
                "mariposa_instance_block_read_bytes_per_second", "mariposa_instance_block_write_bytes_per_second")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def daemon(tmp_path):
    port = free_port()
    config = tmp_path / "mariposa.toml"
    config.write_text(f'metrics_interval = 1\nmetrics_listen = "127.0.0.1:{port}"\n')
    d = Daemon(tmp_path).start("--config", str(config))
    d.metrics_port = port  # type: ignore[attr-defined]
    yield d
    d.cleanup()


def scrape_socket(d: Daemon) -> tuple[str, str]:
    transport = httpx.HTTPTransport(uds=d.socket, verify=False)
    with httpx.Client(transport=transport, base_url="http://m", timeout=30) as c:
        r = c.get("/metrics")
        r.raise_for_status()
        return r.headers["content-type"], r.text


def scrape_tcp(d: Daemon) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=30) as r:  # type: ignore[attr-defined]
        return r.headers["content-type"], r.read().decode()


def cpu_column(text: str, service: str) -> list[float]:
    """The CPU cells of ``service``'s rows in `top --once`'s table."""
    found = []
    for line in text.splitlines():
        cells = line.split()
        if len(cells) > 4 and cells[1] == service:
            found.append(float(next(c for c in cells if c.endswith("%")).rstrip("%")))
    return found


def test_top_metrics_and_service_stats(daemon: Daemon, tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    daemon.cli("project", "add", "m", str(manifest), "--wait")

    def settled():
        rows = daemon.json("top", "-j", "m")
        return len(rows) == 3 and all(r["cpu"] is not None for r in rows) and rows

    rows = wait_until(settled, timeout=60, what="a sample of every instance")
    assert {r["service"] for r in rows} == {"burner", "idle"} and all(r["sample"] for r in rows)

    # the burner's first samples may cover its start: a few frames later it is near a core
    def frame():
        text = daemon.cli("top", "-j", "m", "--once").stdout
        burner, idle = cpu_column(text, "burner"), cpu_column(text, "idle")
        return len(burner) == 1 and burner[0] > 50 and len(idle) == 2 and all(c < 10 for c in idle) and text

    text = wait_until(frame, timeout=60, interval=1, what="top showing the burner near a core, the idle ones near 0")
    for title in ("CPU", "MEMORY", "NET RX", "HEALTH", "RESTARTS", "AGE"):
        assert title in text
    just_idle = daemon.json("top", "-j", "m", "--service", "idle")
    assert len(just_idle) == 2 and {r["service"] for r in just_idle} == {"idle"}

    names = {r["instance"] for r in rows}
    for kind, text in (scrape_socket(daemon), scrape_tcp(daemon)):
        assert kind == "text/plain; version=0.0.4; charset=utf-8"
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name in PER_INSTANCE:
            mine = [s for s in families[name].samples if s.labels["project"] == "m"]
            assert sorted(s.labels["instance"] for s in mine) == sorted(names), name
        cpu = {s.labels["service"]: s.value for s in families["mariposa_instance_cpu_percent"].samples
               if s.labels["project"] == "m" and s.labels["service"] == "burner"}
        assert cpu["burner"] > 50
        tasks = {s.labels["state"]: s.value for s in families["mariposa_tasks"].samples}
        assert tasks["completed"] >= 2
        assert families["mariposa_reconcile_duration_seconds"].samples
        assert "mariposa_health_checks" in families
        [lag] = families["mariposa_event_lag_seconds"].samples  # the Engine stamped the containers' events
        assert 0 <= lag.value < 30
    # the metrics port serves /metrics and nothing else
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/v1/projects", timeout=30)  # type: ignore[attr-defined]
    assert info.value.code == 404

    stats = daemon.json("-j", "m", "service", "stats", "idle", "--since", "10m")
    assert stats["source"] == "memory" and len(stats["instances"]) == 2
    total = stats["total"]
    for key in ("cpu", "memory", "net_rx", "net_tx", "block_read", "block_write"):
        assert total[key] == pytest.approx(sum(i[key] for i in stats["instances"]))
    assert total["cpu_average"] == pytest.approx(total["cpu"] / 2)
    assert all(i["count"] == len(i["samples"]) > 0 for i in stats["instances"])
    out = daemon.cli("-j", "m", "service", "stats", "idle").stdout
    assert "total (2)" in out and "average CPU per instance" in out
    refused = daemon.cli("-j", "m", "service", "stats", "idle", "--since", "3d", check=False)
    assert refused.returncode == 1 and "at most 24h" in refused.stderr
