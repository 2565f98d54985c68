#!/usr/bin/env python3
"""Benchmark: scaling a service from 1 to 20 running tasks on the Swarm through Mariposa
(``cluster = "swarm"``: ``mariposa service scale web 20``), next to ``docker service scale``.

Run as root on an engine that is a Swarm manager (``docker swarm init --advertise-addr 127.0.0.1``):
    .venv/bin/python tests/bench/bench_swarm_backend.py [--rounds 3] [--replicas 20]
Prints one table; every figure is a median over the rounds.

How the figures are taken, and why:
- Both peers start from one running task of the same Swarm service spec in effect (the same image
  by id, command, ``Init``, ``endpoint_mode dnsrr``, an attachable overlay) and are timed from the
  command until ``docker service ps`` shows N tasks running (polled every 0.1 s by the same
  function): Mariposa's is ``mariposa service scale web N`` without ``--wait`` (what the Swarm
  does is the same either way; the CLI's wait would add its own polling), the peer's
  ``docker service scale --detach NAME=N``.
- What Mariposa adds is its API call, the task queue and one Swarm update; the tasks are the
  Swarm's to start in both, so the two should be close.
- One round runs both peers back to back, in an order that alternates between rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import IMAGE, Daemon, docker, wait_until  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402

COMMAND = "sleep 100000"
MANIFEST = f"""
services:
  web:
    image: {IMAGE}
    command: {COMMAND}
    endpoint_mode: dnsrr
    scale: 1
"""


def running(service: str) -> int:
    out = docker("service", "ps", service, "--format", "{{json .}}", "--filter", "desired-state=running", check=False)
    states = [json.loads(line)["CurrentState"] for line in out.splitlines() if line.strip()]
    return sum(1 for state in states if state.startswith("Running"))


def until_running(service: str, n: int, started: float, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running(service) == n:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{service}: {n} tasks not running after {timeout} s")


def mariposa_round(replicas: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="bench-swarm-"))
    d = Daemon(tmp).start("--cluster", "swarm")
    try:
        (tmp / "m.yaml").write_text(MANIFEST)
        d.cli("project", "add", "bs", str(tmp / "m.yaml"), "--wait")
        name = next(line for line in docker("service", "ls", "--format", "{{.Name}}").split()
                    if line.startswith("mariposa-bs-web-"))
        wait_until(lambda: running(name) == 1, timeout=60, what="1 task")
        started = time.monotonic()
        d.cli("-j", "bs", "service", "scale", "web", str(replicas))
        took = until_running(name, replicas, started)
        d.cli("project", "delete", "bs", "--wait", timeout=300)
        return took
    finally:
        owner = d.owner
        d.kill()
        for service in docker("service", "ls", "-q", "--filter", f"label=io.mariposa.owner={owner}").split():
            docker("service", "rm", service, check=False)


def docker_round(replicas: int) -> float:
    tag = uuid.uuid4().hex[:8]
    net, name = f"bench-swarm-{tag}-net", f"bench-swarm-{tag}"
    image_id = docker("image", "inspect", "--format", "{{.Id}}", IMAGE).strip()
    docker("network", "create", "--driver", "overlay", "--attachable", net)
    try:
        docker("service", "create", "--detach", "--no-resolve-image", "--name", name, "--network", net, "--init",
               "--endpoint-mode", "dnsrr", "--replicas", "1", image_id, "sh", "-c", COMMAND)
        wait_until(lambda: running(name) == 1, timeout=60, what="1 task")
        started = time.monotonic()
        docker("service", "scale", "--detach", f"{name}={replicas}")
        return until_running(name, replicas, started)
    finally:
        docker("service", "rm", name, check=False)
        for _ in range(60):
            if docker("network", "rm", net, check=False) or net not in docker("network", "ls"):
                break
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=20)
    args = parser.parse_args()
    ensure_image()
    figures: dict[str, list[float]] = {"mariposa (cluster swarm)": [], "docker service scale": []}
    for r in range(args.rounds):
        peers = [("mariposa (cluster swarm)", mariposa_round), ("docker service scale", docker_round)]
        for label, fn in peers if r % 2 == 0 else reversed(peers):
            figures[label].append(fn(args.replicas))
            print(f"round {r + 1}: {label}: {figures[label][-1]:.2f} s", file=sys.stderr)
    print(f"{'scale 1 -> ' + str(args.replicas) + ' on the Swarm':<32} {'median s':>9} {'rounds':>24}")
    for label, values in figures.items():
        print(f"{label:<32} {statistics.median(values):>9.2f} {' '.join(f'{v:.2f}' for v in values):>24}")


if __name__ == "__main__":
    main()
