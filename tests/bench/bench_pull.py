#!/usr/bin/env python3
"""Benchmark: pull-and-converge of a 3-service project whose images are only in a local registry,
Mariposa (`mariposa project add --wait`) next to `docker-compose up -d` of the same services.

Run as root on a host with dockerd and Debian's docker-registry (tests/run.sh installs both):
    .venv/bin/python tests/bench/bench_pull.py [--rounds 3] [--payload-mb 16]
Prints one table; every figure is a median over the rounds.

How the figures are taken, and why:
- A real registry (Debian's docker-registry, tests/registry.py) on 127.0.0.1 holds three images,
  one per service, each the busybox root filesystem plus ``--payload-mb`` of random bytes in one
  layer of its own: no layer is shared with anything on the host, so every pull downloads and
  unpacks all of it. Before each run every local reference to them is removed (the image goes
  with its last one), so each peer starts with nothing.
- Timed from the command's start until it says all three run: ``mariposa project add P FILE
  --wait`` (pulls, pins, creates; the tasks completed) and ``docker-compose up -d`` (compose 1.29
  pulls what is missing, then creates). What runs is counted through ``docker ps`` afterwards.
- The same containers: image, command, ``init``, one project network. One round runs both peers,
  in an order that alternates, so a shared machine's load falls on both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import IMAGE, Daemon, docker  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402
from tests.registry import Registries, start  # noqa: E402

SERVICES = ("web", "api", "worker")
COMMAND = "sleep 100000"


def build_images(regs: Registries, payload_mb: int, tmp: Path) -> dict[str, str]:
    """One image per service in the registry, each with a layer of its own; none left locally."""
    cid = docker("create", IMAGE, "true").strip()
    try:
        base = tmp / "base.tar"
        subprocess.run(["docker", "export", "-o", str(base), cid], check=True)
    finally:
        docker("rm", cid, check=False)
    refs = {}
    for service in SERVICES:
        layer = tmp / f"{service}.tar"
        shutil.copy(base, layer)
        payload = tmp / "payload"
        payload.write_bytes(os.urandom(payload_mb * 1024 * 1024))
        with tarfile.open(layer, "a") as tar:
            tar.add(payload, arcname="payload")
        ref = regs.ref(regs.open_host, service)
        subprocess.run(["docker", "import", "--change", "ENV PATH=/bin:/sbin:/usr/bin", str(layer), ref],
                       check=True, capture_output=True)
        regs.push(ref, ref)  # pushed, and the local tag (the image with it) removed
        refs[service] = ref
    forget(regs)
    return refs


def forget(regs: Registries) -> None:
    """Every local reference to the bench's images: with the last one the image and its layer go."""
    for ref in regs.local_tags():
        regs.remove_local(ref)


def manifest(refs: dict[str, str]) -> str:
    return "services:\n" + "".join(f"  {s}:\n    image: {refs[s]}\n    command: {COMMAND}\n" for s in SERVICES)


def compose_file(refs: dict[str, str]) -> str:
    return 'version: "2.4"\nservices:\n' + "".join(
        f"  {s}:\n    image: {refs[s]}\n    command: {COMMAND}\n    init: true\n" for s in SERVICES)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_mariposa(refs: dict[str, str], regs: Registries, tmp: Path) -> float:
    forget(regs)
    d = Daemon(tmp).start()
    try:
        path = tmp / "bench.yaml"
        path.write_text(manifest(refs))
        took = timed(lambda: d.cli("project", "add", "bench", str(path), "--wait", timeout=900))
        running = len(d.running())
        assert running == len(SERVICES), f"mariposa: {running} running"
        return took
    finally:
        d.cleanup()
        forget(regs)


def bench_compose(refs: dict[str, str], regs: Registries, tmp: Path) -> float:
    compose = shutil.which("docker-compose")
    if not compose:
        raise SystemExit("docker-compose not installed: apt-get install docker-compose")
    forget(regs)
    (tmp / "docker-compose.yml").write_text(compose_file(refs))
    project = f"mpull{os.getpid()}"
    base = [compose, "-p", project, "-f", str(tmp / "docker-compose.yml")]
    try:
        took = timed(lambda: subprocess.run([*base, "up", "-d"], check=True, capture_output=True))
        running = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}").split()
        assert len(running) == len(SERVICES), f"compose: {len(running)} running"
        return took
    finally:
        subprocess.run([*base, "down", "-t", "1"], capture_output=True)
        forget(regs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--payload-mb", type=int, default=16, help="random bytes in each image's own layer")
    args = ap.parse_args()
    ensure_image()
    with tempfile.TemporaryDirectory() as t:
        regs = start(Path(t) / "registries")
        try:
            refs = build_images(regs, args.payload_mb, Path(t))
            peers: dict[str, Callable[[Path], float]] = {
                "mariposa": lambda tmp: bench_mariposa(refs, regs, tmp),
                "compose": lambda tmp: bench_compose(refs, regs, tmp),
            }
            long = {"mariposa": "mariposa project add P FILE --wait", "compose": "docker-compose up -d"}
            results: dict[str, list[float]] = {name: [] for name in peers}
            loads = [os.getloadavg()[0]]
            names = list(peers)
            for r in range(args.rounds):
                for name in names[r % 2:] + names[: r % 2]:
                    with tempfile.TemporaryDirectory() as run_tmp:
                        results[name].append(peers[name](Path(run_tmp)))
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1} (load {loads[-1]:.1f}): "
                      + ", ".join(f"{name} {results[name][-1]:.2f}s" for name in names), flush=True)
        finally:
            regs.close()
    version = docker("version", "--format", "{{.Server.Version}}").strip()
    size = (args.payload_mb * 1024 * 1024 + 2_000_000) / 1e6
    print(f"\nPull and converge 3 services, 3 images of ~{size:.0f} MB each only in a local docker-registry "
          f"(median of {args.rounds}, dockerd {version}, {os.cpu_count()} cores, "
          f"1-min load {min(loads):.1f}-{max(loads):.1f}):")
    print(f"  {'peer':<38} {'median':>8} {'min':>8} {'max':>8}")
    med = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        print(f"  {long[name]:<38} {med[name]:>7.2f}s {min(values):>7.2f}s {max(values):>7.2f}s")
    print(f"  mariposa / docker-compose = {med['mariposa'] / med['compose']:.2f}")


if __name__ == "__main__":
    main()
