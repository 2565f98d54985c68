#!/usr/bin/env python3
"""Benchmark: how fast does Mariposa bring up 20 instances, next to docker-compose and a plain
loop of `docker run -d`; and what does the daemon cost at idle with 100 instances?

Run as root on a host with dockerd running (tests/run.sh sets one up):
    .venv/bin/python tests/bench/bench_scale.py [--rounds 3] [--instances 20] [--idle 100]
Prints one table; every figure is a median over the rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_mariposa(n: int, tmp: Path, parallelism: int = 8) -> float:
    d = Daemon(tmp).start("--parallelism", str(parallelism))
    try:
        manifest = tmp / "bench.yaml"
        manifest.write_text(MANIFEST.format(n=n))

        def up():
            d.cli("project", "add", "bench", str(manifest), "--wait", timeout=600)
            assert len(d.running("web")) == n

        return timed(up)
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
        def up():
            subprocess.run([*base, "up", "-d", "--scale", f"web={n}"], check=True, capture_output=True)
            running = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}").split()
            assert len(running) == n, len(running)

        return timed(up)
    finally:
        subprocess.run([*base, "down", "-t", "1"], capture_output=True)


def bench_docker_run(n: int) -> float:
    label = f"mariposa.bench={os.getpid()}"

    def run_all():
        for _ in range(n):
            subprocess.run(["docker", "run", "-d", "--init", "--label", label, IMAGE, *COMMAND.split()],
                           check=True, capture_output=True)

    try:
        return timed(run_all)
    finally:
        ids = docker("ps", "-aq", "--filter", f"label={label}").split()
        if ids:
            docker("rm", "-f", *ids)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--idle", type=int, default=100, help="instances for the idle measurement (0 to skip)")
    ap.add_argument("--idle-window", type=float, default=30.0)
    args = ap.parse_args()
    ensure_image()
    n = args.instances
    results: dict[str, list[float]] = {"mariposa project add --wait": [], "docker-compose up -d --scale": [],
                                       f"{n} x docker run -d (sequential floor)": []}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as t:
            results["mariposa project add --wait"].append(bench_mariposa(n, Path(t)))
        with tempfile.TemporaryDirectory() as t:
            results["docker-compose up -d --scale"].append(bench_compose(n, Path(t)))
        results[f"{n} x docker run -d (sequential floor)"].append(bench_docker_run(n))
        print(f"round {r + 1}: " + ", ".join(f"{k.split()[0]} {v[-1]:.2f}s" for k, v in results.items()), flush=True)

    print(f"\nTime from nothing to {n} running instances (median of {args.rounds}, busybox, dockerd {docker('version', '--format', '{{.Server.Version}}').strip()}):")
    print(f"  {'peer':<42} {'median':>8} {'min':>8} {'max':>8} {'per instance':>13}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"  {name:<42} {med:>7.2f}s {min(values):>7.2f}s {max(values):>7.2f}s {med / n * 1000:>10.0f} ms")
    m, c = statistics.median(results["mariposa project add --wait"]), statistics.median(results["docker-compose up -d --scale"])
    print(f"  mariposa / docker-compose = {m / c:.2f} (goal: <= 1.00)")

    if args.idle:
        with tempfile.TemporaryDirectory() as t:
            cpu, rss, took = bench_idle(args.idle, Path(t), args.idle_window)
        print(f"\nDaemon at idle with {args.idle} instances under management ({args.idle_window:.0f} s window):")
        print(f"  CPU {cpu:.2f}% of one core, RSS {rss:.1f} MiB (bring-up of {args.idle} took {took:.1f} s)")


if __name__ == "__main__":
    main()
