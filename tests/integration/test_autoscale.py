"""Autoscale on real Docker (issue 17's "Must show"): a CPU burner at scale 1 with ``cpu > 50%``
for 20 s, ``max: 3`` and ``retrigger_delay: 20s`` scales to 2, then to 3, never to 4, each scale
task naming its trigger; stopping the burners scales back down to ``min`` with a decrement
trigger. The daemon samples every 2 s (``metrics_interval``), so the whole story takes about
two and a half minutes: two windows up, one more to see no fourth, two windows down.

The burner stops when /tmp/stop exists and then idles (``exec sleep``), so one ``docker exec``
turns a burning instance into an idle one without a restart (a restart would be a new window)."""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import IMAGE, LATE, Daemon, docker, wait_until

pytestmark = pytest.mark.usefixtures("docker_images")

MANIFEST = f"""services:
  burner:
    image: {IMAGE}
    command: ["sh", "-c", "while [ ! -e /tmp/stop ]; do :; done; exec sleep 1d"]
    stop: {{timeout: 1}}
    triggers:
      - name: highcpu
        metric: cpu
        operator: ">"
        value: 50%
        time: 20s
        action: increment
      - name: idle
        metric: cpu
        operator: "<"
        value: 10%
        time: 20s
        action: decrement
    autoscale:
      enable: true
      min: 1
      max: 3
      retrigger_delay: 20s
"""
WINDOW = 20.0
INTERVAL = 2.0
# one decision: a covered window after the retrigger delay, then a collector round, then the scale
# task's Docker work, on a machine other tests load too
STEP = WINDOW + 2 * INTERVAL + LATE * 2


@pytest.fixture
def daemon(tmp_path):
    config = tmp_path / "mariposa.toml"
    config.write_text(f"metrics_interval = {INTERVAL}\n")
    d = Daemon(tmp_path).start("--config", str(config))
    yield d
    d.cleanup()


def autoscale_tasks(d: Daemon) -> list[dict]:
    return sorted((t for t in d.json("-j", "burn", "queue", "list") if t["author"] == "autoscale"),
                  key=lambda t: t["created"])


def test_burners_scale_up_to_max_and_back_down_to_min(daemon, tmp_path):
    (tmp_path / "burn.yaml").write_text(MANIFEST)
    daemon.cli("project", "add", "burn", str(tmp_path / "burn.yaml"), "--wait")
    assert len(daemon.running("burner")) == 1
    started = time.monotonic()

    wait_until(lambda: len(daemon.running("burner")) == 2, timeout=STEP, what="the first scale up, to 2")
    wait_until(lambda: len(daemon.running("burner")) == 3, timeout=STEP + 20, what="the second scale up, to 3")
    up = time.monotonic() - started
    # burning on at max for another retrigger delay and window: never a fourth
    deadline = time.monotonic() + WINDOW + 2 * INTERVAL + 10
    while time.monotonic() < deadline:
        assert len(daemon.running("burner")) <= 3
        time.sleep(1)
    tasks = autoscale_tasks(daemon)
    assert [(t["params"]["from"], t["params"]["to"]) for t in tasks] == [(1, 2), (2, 3)]
    for task in tasks:
        assert task["params"]["reason"].startswith("highcpu: cpu ") and task["params"]["reason"].endswith(
            "> 50% for 20s")
        shown = daemon.cli("-j", "burn", "queue", "get", task["id"]).stdout
        assert "reason" in shown and "highcpu: cpu" in shown
    events = daemon.json("-j", "burn", "events", "--type", "autoscale")
    assert [e["message"].split(":")[0] for e in events] == ["burner 1 -> 2", "burner 2 -> 3"]
    assert all(e["author"] == "autoscale" for e in events)
    scaled = [e for e in daemon.json("-j", "burn", "events", "--type", "service.scale") if e["author"] == "autoscale"]
    assert len(scaled) == 2 and all("(highcpu: cpu" in e["message"] for e in scaled)
    assert events[1]["time"] - events[0]["time"] >= 20 - 0.1  # retrigger_delay
    # a manual scale outside the range is refused, naming it
    refused = daemon.cli("-j", "burn", "service", "scale", "burner", "5", check=False)
    assert refused.returncode != 0 and "burner autoscales between 1 and 3" in refused.stderr

    for c in daemon.running("burner"):
        docker("exec", c["ID"], "touch", "/tmp/stop")
    stopped = time.monotonic()
    wait_until(lambda: len(daemon.running("burner")) == 2, timeout=STEP, what="the first scale down, to 2")
    wait_until(lambda: len(daemon.running("burner")) == 1, timeout=STEP + 20, what="the second scale down, to 1")
    down = time.monotonic() - stopped
    time.sleep(WINDOW + 2 * INTERVAL + 5)  # idle at min: never below it
    assert len(daemon.running("burner")) == 1
    downs = [t for t in autoscale_tasks(daemon) if t["params"]["reason"].startswith("idle: cpu ")]
    assert [(t["params"]["from"], t["params"]["to"]) for t in downs] == [(3, 2), (2, 1)]
    print(f"scaled 1 -> 3 in {up:.0f} s, 3 -> 1 in {down:.0f} s after the burners stopped")
