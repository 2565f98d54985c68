#!/usr/bin/env python3
"""Benchmark: how fast does Mariposa scale a service from 1 to 20 running instances, next to
docker-compose and to the Docker CLI's floor (19 parallel ``docker run -d``); and what does the
daemon cost at idle with 100 instances?

Run as root on a host with dockerd running (tests/run.sh sets one up):
    .venv/bin/python tests/bench/bench_scale.py [--rounds 3] [--instances 20] [--idle 100]
Prints one table; every figure is a median over the rounds.

How the figures are taken, and why:
- Every peer starts from one running instance on its own user-defined network and is timed until
  it says all N run: ``mariposa service scale web N --wait`` (the task completed),
  ``docker-compose up -d --scale web=N`` and the last ``docker run -d`` of N-1 returning. What runs
  is then counted through ``docker ps``, outside the timing.
- All peers make the same containers: the same image and command, ``--init``, a label, a network
  alias on a project network (``docker run`` is given one network made for it, as compose and
  Mariposa make theirs).
- The parallel CLI is the floor for any client of the Engine: N-1 ``docker run -d`` processes at
  once, 8 at a time (Mariposa's default ``--parallelism``) and all at once. Its CLI processes cost
  CPU that the Engine then lacks, so on 2 cores the real floor is a little lower still.
- One round runs every peer back to back, in an order that rotates between rounds, so the load of
  a shared machine falls on all of them alike; the ratio is of medians.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.procstat import cpu_percent, rss_mib  # noqa: E402
from tests.integration.harness import IMAGE, Daemon, docker, wait_until  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402

COMMAND = "sleep 100000"
MANIFEST = f"""
services:
  web:
    image: {IMAGE}
    command: {COMMAND}
    scale: {{n}}
"""
COMPOSE = f"""
version: "2.4"
services:
  web:
    image: {IMAGE}
    command: {COMMAND}
    init: true
"""
_runs = itertools.count()
GOAL = 1.1  # the bound: Mariposa within 10 % of the parallel CLI's floor


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_mariposa(n: int, tmp: Path, parallelism: int = 8) -> float:
    d = Daemon(tmp).start("--parallelism", str(parallelism))
    try:
        manifest = tmp / "bench.yaml"
        manifest.write_text(MANIFEST.format(n=1))
        d.cli("project", "add", "bench", str(manifest), "--wait", timeout=600)
        wait_until(lambda: len(d.running("web")) == 1, timeout=60, what="one running")
        took = timed(lambda: d.cli("-j", "bench", "service", "scale", "web", str(n), "--wait", timeout=600))
        running = len(d.running("web"))
        assert running == n, f"mariposa: {running} running, not {n}"
        return took
    finally:
        d.cleanup()


def bench_compose(n: int, tmp: Path) -> float:
    compose = shutil.which("docker-compose")
    if not compose:
        raise SystemExit("docker-compose not installed: apt-get install docker-compose")
    (tmp / "docker-compose.yml").write_text(COMPOSE)
    project = f"mbench{os.getpid()}"
    base = [compose, "-p", project, "-f", str(tmp / "docker-compose.yml")]
    try:
        subprocess.run([*base, "up", "-d", "--scale", "web=1"], check=True, capture_output=True)
        took = timed(lambda: subprocess.run([*base, "up", "-d", "--scale", f"web={n}"], check=True,
                                            capture_output=True))
        running = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}").split()
        assert len(running) == n, f"compose: {len(running)} running, not {n}"
        return took
    finally:
        subprocess.run([*base, "down", "-t", "1"], capture_output=True)


def bench_docker_run(n: int, parallel: int) -> float:
    """N-1 ``docker run -d`` beside one already running, ``parallel`` processes at a time."""
    tag = f"mbench-{os.getpid()}-{next(_runs)}"
    label = f"mariposa.bench={tag}"
    docker("network", "create", "--label", label, tag)

    def run_one(_: int = 0) -> None:
        subprocess.run(["docker", "run", "-d", "--init", "--label", label, "--network", tag,
                        "--network-alias", "web", IMAGE, *COMMAND.split()], check=True, capture_output=True)

    try:
        run_one()
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            took = timed(lambda: list(pool.map(run_one, range(n - 1))))
        running = docker("ps", "-q", "--filter", f"label={label}").split()
        assert len(running) == n, f"docker run: {len(running)} running, not {n}"
        return took
    finally:
        ids = docker("ps", "-aq", "--filter", f"label={label}").split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        for _ in range(10):  # the Engine may hold an endpoint a moment after its container went
            if subprocess.run(["docker", "network", "rm", tag], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)


def bench_idle(n: int, tmp: Path, window: float) -> tuple[float, float, float]:
    d = Daemon(tmp).start()
    try:
        manifest = tmp / "idle.yaml"
        manifest.write_text(MANIFEST.format(n=n))
        took = timed(lambda: d.cli("project", "add", "idle", str(manifest), "--wait", timeout=900))
        wait_until(lambda: len(d.running("web")) == n, timeout=120, what=f"{n} running")
        time.sleep(3)
        cpu = cpu_percent(d.proc.pid, window)
        return cpu, rss_mib(d.proc.pid), took
    finally:
        d.cleanup()


def _in_tmp(fn: Callable[[Path], float]) -> Callable[[], float]:
    def run() -> float:
        with tempfile.TemporaryDirectory() as t:
            return fn(Path(t))
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--parallelism", type=int, default=8, help="the daemon's --parallelism")
    ap.add_argument("--idle", type=int, default=100, help="instances for the idle measurement (0 to skip)")
    ap.add_argument("--idle-window", type=float, default=30.0)
    args = ap.parse_args()
    ensure_image()
    n = args.instances
    long = {
        "mariposa": f"mariposa service scale web {n} --wait",
        "compose": f"docker-compose up -d --scale web={n}",
        "cli x8": f"{n - 1} x docker run -d, 8 in parallel",
        f"cli x{n - 1}": f"{n - 1} x docker run -d, {n - 1} in parallel",
    }
    peers: dict[str, Callable[[], float]] = {
        "mariposa": _in_tmp(lambda t: bench_mariposa(n, t, args.parallelism)),
        "compose": _in_tmp(lambda t: bench_compose(n, t)),
        "cli x8": lambda: bench_docker_run(n, 8),
        f"cli x{n - 1}": lambda: bench_docker_run(n, n - 1),
    }
    results: dict[str, list[float]] = {name: [] for name in peers}
    loads = [os.getloadavg()[0]]
    names = list(peers)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            results[name].append(peers[name]())
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1} (load {loads[-1]:.1f}): "
              + ", ".join(f"{name} {results[name][-1]:.2f}s" for name in names), flush=True)

    version = docker("version", "--format", "{{.Server.Version}}").strip()
    print(f"\nTime to scale a service from 1 to {n} running instances (median of {args.rounds}, busybox, "
          f"dockerd {version}, {os.cpu_count()} cores, 1-min load {min(loads):.1f}-{max(loads):.1f}):")
    print(f"  {'peer':<42} {'median':>8} {'min':>8} {'max':>8} {'per instance':>13}")
    med = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        print(f"  {long[name]:<42} {med[name]:>7.2f}s {min(values):>7.2f}s {max(values):>7.2f}s "
              f"{med[name] / (n - 1) * 1000:>10.0f} ms")
    floor = min(names[2:], key=lambda k: med[k])
    print(f"  mariposa / docker-compose = {med['mariposa'] / med['compose']:.2f}")
    print(f"  mariposa / parallel-CLI floor ({long[floor]}) = {med['mariposa'] / med[floor]:.2f} "
          f"(goal: <= {GOAL:.2f})")

    if args.idle:
        with tempfile.TemporaryDirectory() as t:
            cpu, rss, took = bench_idle(args.idle, Path(t), args.idle_window)
        print(f"\nDaemon at idle with {args.idle} instances under management ({args.idle_window:.0f} s window):")
        print(f"  CPU {cpu:.2f}% of one core, RSS {rss:.1f} MiB (bring-up of {args.idle} took {took:.1f} s)")


if __name__ == "__main__":
    main()
