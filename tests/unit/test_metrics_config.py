"""metrics_interval and metrics_listen: validated like the other keys (file and line), the
interval live on SIGHUP (the hour in memory resized to it), and a metrics port already taken
refuses the daemon's start; the listener serves GET /metrics and nothing else."""

from __future__ import annotations

import socket

import httpx
import pytest

from mariposa.config import ConfigError, load
from mariposa.daemon import DaemonConfig, run_daemon
from mariposa.drivers.fake import FakeDriver
from mariposa.metrics.history import MetricsHistory, Sample
from mariposa.triggers.listener import ListenError


def write(tmp_path, text: str) -> str:
    path = tmp_path / "mariposa.toml"
    path.write_text(text)
    return str(path)


def test_keys_are_validated_with_their_line(tmp_path):
    config = load(write(tmp_path, 'metrics_interval = 2.5\nmetrics_listen = "127.0.0.1:9464"\n'))
    assert config.metrics_interval == 2.5 and config.metrics_listen == "127.0.0.1:9464"
    assert load(write(tmp_path, "")).metrics_interval == 10.0 and load(write(tmp_path, "")).metrics_listen is None
    for text, message in (("\nmetrics_interval = 0\n", ":2: metrics_interval: must be from 0.1 to 3600"),
                          ('metrics_interval = "fast"\n', ":1: metrics_interval: expected a number"),
                          ('\n\nmetrics_listen = "9464"\n', ":3: metrics_listen: metrics_listen must be HOST:PORT")):
        with pytest.raises(ConfigError) as info:
            load(write(tmp_path, text))
        assert message in info.value.message


def test_a_new_interval_resizes_the_hour_keeping_the_newest():
    history = MetricsHistory(10.0)
    for t in range(400):
        history.record("i", "p", "web", Sample(float(t), 1.0, 1, None, None, 0.0, 0.0, 0.0, 0.0))
    assert len(history.series("i").samples()) == 361
    history.resize(60.0)
    samples = history.series("i").samples()
    assert len(samples) == 61 and samples[-1].when == 399.0 and history.capacity == 61


def taken_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


async def test_a_taken_metrics_port_refuses_the_start(tmp_path):
    sock, port = taken_port()
    try:
        config = DaemonConfig(state_dir=str(tmp_path / "state"), socket=str(tmp_path / "m.sock"), manifest_dir=None,
                              metrics_listen=f"127.0.0.1:{port}", run_dir=str(tmp_path / "run"))
        with pytest.raises(ListenError, match=f"metrics_listen 127.0.0.1:{port}: cannot listen there"):
            await run_daemon(config, {"docker": FakeDriver()})
    finally:
        sock.close()


async def test_the_metrics_port_serves_metrics_only(tmp_path, nursery):
    sock, port = taken_port()
    sock.close()
    config = DaemonConfig(state_dir=str(tmp_path / "state"), socket=str(tmp_path / "m.sock"), manifest_dir=None,
                          metrics_listen=f"127.0.0.1:{port}", metrics_interval=0.5, run_dir=str(tmp_path / "run"))
    await nursery.start(run_daemon, config, {"docker": FakeDriver()})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        r = await client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "# TYPE mariposa_tasks gauge" in r.text and "mariposa_metrics_interval_seconds 0.5" in r.text
        assert (await client.get("/v1/projects")).status_code == 404
        assert (await client.post("/metrics")).status_code == 405
    nursery.cancel_scope.cancel()


def test_event_lag_and_health_check_rate():
    from mariposa.metrics.own import DaemonGauges

    gauges = DaemonGauges()
    gauges.note_event(1000.0, None)  # a runtime that stamps nothing is not counted
    assert gauges.event_lag is None and gauges.event_lag_max(1000.0) is None
    gauges.note_event(1000.0, 999.5)
    gauges.note_event(1010.0, 1009.9)
    assert gauges.event_lag == pytest.approx(0.1) and gauges.event_lag_max(1010.0) == pytest.approx(0.5)
    assert gauges.event_lag_max(1065.0) == pytest.approx(0.1)  # the 0.5 s one is over a minute old
    gauges.note_event(1070.0, 1071.0)  # a runtime clock ahead of ours: no negative lag
    assert gauges.event_lag == 0.0

    for t in range(0, 200, 10):
        gauges.note_probes(float(t), t * 5)  # 5 checks a second
    assert gauges.checks_per_second(190.0, 950) == pytest.approx(5.0)
