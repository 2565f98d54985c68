#!/usr/bin/env python3
"""Benchmark: from a metric crossing an autoscale threshold to the scale task, in seconds, next to
the bound the semantics allow (``time`` + one ``metrics_interval``), on real Docker.

For each (time, interval) pair, a daemon samples every ``interval`` seconds; a service's one
instance idles until /tmp/go exists, then burns a core. Its trigger is ``cpu > 50%`` for ``time``.
Once the collector has sampled it idle, ``docker exec ... touch /tmp/go`` starts the burning
(that instant is the crossing, to within the exec's own latency), and the scale task's
``created`` stamp (the daemon's clock, the wall clock here) ends the measurement. The window
must be covered by samples that all hold: the first is the round that ends at least half an
interval of burning later, so the decision lands between ``time`` and ``time + interval`` after
the crossing, plus the round's own work.

There is no peer at hand: Kubernetes' HPA is not on this host (its default is a 15 s sync period
and a 5 min scale-down stabilisation, for comparison only), and docker-compose has no autoscaler.

    .venv/bin/python tests/bench/bench_autoscale.py [--pairs 10:2,20:5] [--repeat 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import IMAGE, Daemon, docker, wait_until  # noqa: E402

MANIFEST = """services:
  hot:
    image: {image}
    command: ["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.2; done; while :; do :; done"]
    stop: {{timeout: 1}}
    triggers:
      - {{name: highcpu, metric: cpu, operator: ">", value: 50%, time: {window}s, action: increment}}
    autoscale: {{enable: true, min: 1, max: 2, retrigger_delay: 1s}}
"""


def one(d: Daemon, tmp: Path, name: str, window: float, interval: float) -> float:
    path = tmp / f"{name}.yaml"
    path.write_text(MANIFEST.format(image=IMAGE, window=window))
    d.cli("project", "add", name, str(path), "--wait")
    container = wait_until(lambda: d.running("hot") and d.running("hot")[0], timeout=60, what="the instance")
    time.sleep(3 * interval)  # sampled idle: the metric is below the threshold before the crossing
    crossed = time.time()
    docker("exec", container["ID"], "touch", "/tmp/go")
    task = wait_until(lambda: next((t for t in d.json("-j", name, "queue", "list") if t["author"] == "autoscale"),
                                   None), timeout=window + 10 * interval + 60, interval=0.5, what="the scale task")
    d.cli("project", "delete", name, "--wait")
    return task["created"] - crossed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="10:2,20:5", help="time:interval pairs, seconds")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    pairs = [tuple(float(x) for x in p.split(":")) for p in args.pairs.split(",")]
    rows = []
    for window, interval in pairs:
        with tempfile.TemporaryDirectory(prefix="bench-autoscale-") as name:
            tmp = Path(name)
            config = tmp / "mariposa.toml"
            config.write_text(f"metrics_interval = {interval}\n")
            d = Daemon(tmp).start("--config", str(config))
            try:
                took = [one(d, tmp, f"as{i}", window, interval) for i in range(args.repeat)]
            finally:
                d.cleanup()
        rows.append((window, interval, took))
        print(f"time {window:g} s, interval {interval:g} s: {', '.join(f'{t:.1f}' for t in took)} s", flush=True)
    print(f"\n{'time':>6} {'interval':>9} {'measured (median)':>18} {'min':>6} {'max':>6} {'bound time+interval':>20}")
    for window, interval, took in rows:
        print(f"{window:5g}s {interval:8g}s {statistics.median(took):17.1f}s {min(took):5.1f}s {max(took):5.1f}s "
              f"{window + interval:19.1f}s")
    print("\npeer: none on this host (no Kubernetes HPA; docker-compose has no autoscaler)")


if __name__ == "__main__":
    main()
