#!/usr/bin/env python3
"""Benchmark: Mariposa's Swarm backend (``cluster = "swarm"``) next to the docker CLI on the same
Swarm, and next to Mariposa on the local engine: scaling a service 1 -> 20, and a rolling update
of 10 instances two at a time.

Run as root on an engine that is a Swarm manager (``docker swarm init --advertise-addr 127.0.0.1``):
    .venv/bin/python tests/bench/bench_swarm_backend.py [--rounds 3] [--replicas 20] [--roll 10]
Prints one table; every figure is a median over the rounds.

How the figures are taken, and why:
- Scale. Every peer starts from one running instance of the same service (the same image by id,
  command, ``Init``; on the Swarm ``endpoint_mode dnsrr`` and an attachable overlay) and is timed
  from the command until N run, polled every 0.1 s: on the Swarm, ``docker service ps`` shows N
  tasks running; locally, ``docker ps`` shows N containers of the daemon's. Mariposa's command is
  ``mariposa service scale web N`` without ``--wait`` (the CLI's wait would add its own polling),
  the peer's ``docker service scale --detach NAME=N``. Locally, a second daemon with ``cluster
  none`` runs the same manifest (its instances are containers it makes one by one itself).
- Rolling update of 10 (``--roll``): both sides run 10 tasks with ``min_healthy_time`` / update
  monitor 1 s, parallelism 2, delay 0, start-first, failure action pause, and change one
  environment variable. Mariposa: ``mariposa project update NAME NEW.yaml --rolling 2 --wait``,
  timed until the command returns (its task completed) and 10 tasks run the new spec. The peer:
  ``docker service update --detach --env-add ... --update-parallelism 2 --update-monitor 1s``,
  timed until the service's ``UpdateStatus.State`` is ``completed`` (polled every 0.1 s). Both
  also by the Engine's own clock (``UpdateStatus.CompletedAt - StartedAt``): what the Swarm
  took to roll, so the rest of each wall time is its client's (Mariposa: making the version,
  its task queue, the converge's polling and the CLI's wait).
- What Mariposa adds on the Swarm is its API call, the task queue and its own polling of the
  Swarm; the tasks are the Swarm's to start in both, so the two should be close.
- One round runs every peer back to back, in an order that alternates between rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
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
ROLL_MANIFEST = """
services:
  web:
    image: {image}
    command: {command}
    endpoint_mode: dnsrr
    scale: {scale}
    min_healthy_time: 1
    environment:
      ROUND: "{round}"
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


def swarm_service_of(project: str) -> str:
    return next(line for line in docker("service", "ls", "--format", "{{.Name}}").split()
                if line.startswith(f"mariposa-{project}-web-"))


@contextlib.contextmanager
def swarm_daemon(prefix: str) -> Iterator[tuple[Daemon, Path]]:
    """A daemon with cluster = "swarm" in a new directory; its Swarm services go with it."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    d = Daemon(tmp).start("--cluster", "swarm")
    try:
        yield d, tmp
    finally:
        owner = d.owner
        d.kill()
        for service in docker("service", "ls", "-q", "--filter", f"label=io.mariposa.owner={owner}").split():
            docker("service", "rm", service, check=False)


def mariposa_round(replicas: int) -> float:
    with swarm_daemon("bench-swarm-") as (d, tmp):
        (tmp / "m.yaml").write_text(MANIFEST)
        d.cli("project", "add", "bs", str(tmp / "m.yaml"), "--wait")
        name = swarm_service_of("bs")
        wait_until(lambda: running(name) == 1, timeout=60, what="1 task")
        started = time.monotonic()
        d.cli("-j", "bs", "service", "scale", "web", str(replicas))
        took = until_running(name, replicas, started)
        d.cli("project", "delete", "bs", "--wait", timeout=300)
        return took


def local_containers(owner: str) -> int:
    return len(docker("ps", "-q", "--filter", f"label=io.mariposa.owner={owner}").split())


def local_round(replicas: int) -> float:
    """The same manifest through a daemon of the local engine (cluster none)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-local-"))
    d = Daemon(tmp).start()
    try:
        (tmp / "m.yaml").write_text(MANIFEST)
        d.cli("project", "add", "bl", str(tmp / "m.yaml"), "--wait")
        owner = d.owner or ""
        wait_until(lambda: local_containers(owner) == 1, timeout=60, what="1 instance")
        started = time.monotonic()
        d.cli("-j", "bl", "service", "scale", "web", str(replicas))
        deadline = started + 300
        while local_containers(owner) != replicas:
            if time.monotonic() > deadline:
                raise AssertionError(f"{replicas} instances not running after 300 s")
            time.sleep(0.1)
        took = time.monotonic() - started
        d.cli("project", "delete", "bl", "--wait", timeout=300)
        return took
    finally:
        d.kill()


def running_env(service: str, env: str) -> int:
    """Tasks of ``service`` running with ``env`` in their spec (the new version's)."""
    out = docker("service", "ps", service, "-q", "--filter", "desired-state=running", check=False).split()
    if not out:
        return 0
    lines = docker("inspect", "--format", "{{.Status.State}} {{json .Spec.ContainerSpec.Env}}", *out,
                   check=False).splitlines()
    return sum(1 for line in lines if line.startswith("running ") and env in line)


def engine_update_seconds(service: str) -> float:
    """The update by the Engine's own clock: ``UpdateStatus.CompletedAt - StartedAt``."""
    fmt = "{{.UpdateStatus.StartedAt.UnixNano}} {{.UpdateStatus.CompletedAt.UnixNano}}"
    started, completed = map(int, docker("service", "inspect", "--format", fmt, service).split())
    return (completed - started) / 1e9


ENGINE: dict[str, list[float]] = {"mariposa": [], "docker": []}  # the Engine's clock, per round


def mariposa_roll_round(n: int) -> float:
    with swarm_daemon("bench-sroll-") as (d, tmp):
        for r in (0, 1):
            (tmp / f"m{r}.yaml").write_text(ROLL_MANIFEST.format(image=IMAGE, command=COMMAND, scale=n, round=r))
        d.cli("project", "add", "br", str(tmp / "m0.yaml"), "--wait", timeout=300)
        name = swarm_service_of("br")
        wait_until(lambda: running(name) == n, timeout=120, what=f"{n} tasks")
        started = time.monotonic()
        d.cli("project", "update", "br", str(tmp / "m1.yaml"), "--rolling", "2", "--wait", timeout=300)
        while running_env(name, "ROUND=1") != n:
            if time.monotonic() - started > 300:
                raise AssertionError(f"{n} tasks not on the new version after 300 s")
            time.sleep(0.1)
        took = time.monotonic() - started
        ENGINE["mariposa"].append(engine_update_seconds(name))
        d.cli("project", "delete", "br", "--wait", timeout=300)
        return took


@contextlib.contextmanager
def peer_service(*options: str) -> Iterator[str]:
    """The peer's service: made with the docker CLI on an attachable overlay of its own, like
    Mariposa's (dnsrr, init, the pinned image), with ``options``; removed with its network."""
    tag = uuid.uuid4().hex[:8]
    net, name = f"bench-swarm-{tag}-net", f"bench-swarm-{tag}"
    image_id = docker("image", "inspect", "--format", "{{.Id}}", IMAGE).strip()
    docker("network", "create", "--driver", "overlay", "--attachable", net)
    try:
        docker("service", "create", "--detach", "--no-resolve-image", "--name", name, "--network", net, "--init",
               "--endpoint-mode", "dnsrr", *options, image_id, "sh", "-c", COMMAND)
        yield name
    finally:
        docker("service", "rm", name, check=False)
        for _ in range(60):
            if docker("network", "rm", net, check=False) or net not in docker("network", "ls"):
                break
            time.sleep(0.5)


def docker_roll_round(n: int) -> float:
    with peer_service("--replicas", str(n), "--env", "ROUND=0", "--update-parallelism", "2", "--update-delay", "0s",
                      "--update-monitor", "1s", "--update-order", "start-first", "--update-failure-action",
                      "pause") as name:
        wait_until(lambda: running(name) == n, timeout=120, what=f"{n} tasks")
        started = time.monotonic()
        docker("service", "update", "--detach", "--env-add", "ROUND=1", "--update-parallelism", "2",
               "--update-delay", "0s", "--update-monitor", "1s", name)
        while docker("service", "inspect", "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
                     name).strip() != "completed":
            if time.monotonic() - started > 300:
                raise AssertionError("update not completed after 300 s")
            time.sleep(0.1)
        took = time.monotonic() - started
        ENGINE["docker"].append(engine_update_seconds(name))
        return took


def docker_round(replicas: int) -> float:
    with peer_service("--replicas", "1") as name:
        wait_until(lambda: running(name) == 1, timeout=60, what="1 task")
        started = time.monotonic()
        docker("service", "scale", "--detach", f"{name}={replicas}")
        return until_running(name, replicas, started)


def table(title: str, figures: dict[str, list[float]]) -> None:
    print(f"{title:<36} {'median s':>9} {'rounds':>24}")
    for label, values in figures.items():
        print(f"{label:<36} {statistics.median(values):>9.2f} {' '.join(f'{v:.2f}' for v in values):>24}")


def measure(rounds: int, peers: list[tuple[str, object]], arg: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {label: [] for label, _ in peers}
    for r in range(rounds):
        for label, fn in peers if r % 2 == 0 else list(reversed(peers)):
            figures[label].append(fn(arg))  # type: ignore[operator]
            print(f"round {r + 1}: {label}: {figures[label][-1]:.2f} s", file=sys.stderr, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--roll", type=int, default=10)
    parser.add_argument("--only", choices=("scale", "roll"))
    args = parser.parse_args()
    ensure_image()
    if args.only != "roll":
        scale = measure(args.rounds, [("mariposa (cluster swarm)", mariposa_round),
                                      ("docker service scale", docker_round),
                                      ("mariposa (local engine)", local_round)], args.replicas)
        table(f"scale 1 -> {args.replicas}", scale)
    if args.only != "scale":
        roll = measure(args.rounds, [("mariposa update --rolling 2 (swarm)", mariposa_roll_round),
                                     ("docker service update (par. 2)", docker_roll_round)], args.roll)
        roll["  the Engine's clock (mariposa's)"] = ENGINE["mariposa"]
        roll["  the Engine's clock (docker's)"] = ENGINE["docker"]
        table(f"rolling update of {args.roll}, 2 at a time", roll)


if __name__ == "__main__":
    main()
