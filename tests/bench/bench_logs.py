#!/usr/bin/env python3
"""Benchmark: `mariposa service logs --tail 1000` of 10 instances that each printed 2,000 lines,
next to `docker-compose logs --tail 1000` of the same 10 containers made by compose, and to 10
sequential `docker logs --tail 1000` (one client's floor). Time to the first line and to the
end, measured from the command's start (its interpreter's start-up included, as a user waits
for it); the control API alone (no CLI process) is shown too.

Run as root on a host with dockerd running and docker-compose installed:
    .venv/bin/python tests/bench/bench_logs.py [--rounds 5] [--instances 10] [--lines 2000] [--tail 1000]
Prints one table; every figure is a median over the rounds.
"""

from __future__ import annotations

import argparse
import json
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

from tests.integration.harness import IMAGE, MARIPOSA, Daemon, docker, wait_until  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402

LINE = "GET /static/app.js HTTP/1.1 200 5120 \\\"-\\\" \\\"Mozilla/5.0 (X11; Linux x86_64)\\\" request"


def script(lines: int) -> str:
    return f'i=0; while [ $i -lt {lines} ]; do echo "{LINE} $i"; i=$((i+1)); done; exec sleep 100000'


def manifest(n: int, lines: int) -> str:
    return f"""
services:
  web:
    image: {IMAGE}
    scale: {n}
    command: ["sh", "-c", {json.dumps(script(lines))}]
    stop:
      timeout: 1
"""


def compose_file(lines: int) -> str:
    return f"""
version: "2.4"
services:
  web:
    image: {IMAGE}
    init: true
    command: ["sh", "-c", {json.dumps(script(lines).replace("$", "$$"))}]
"""


def measure(argv: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """(seconds to the first log line, seconds to the end, log lines) of a command's stdout;
    compose's "Attaching to ..." header is not a log line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    first = None
    count = 0
    for line in proc.stdout:
        if line.startswith(b"Attaching to "):
            continue
        if first is None:
            first = time.perf_counter() - t0
        count += 1
    err = proc.stderr.read() if proc.stderr else b""
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {err.decode()[-500:]}")
    return first or 0.0, time.perf_counter() - t0, count


def measure_api(socket: str, path: str) -> tuple[float, float, int]:
    import httpx

    t0 = time.perf_counter()
    first, count = None, 0
    with httpx.Client(transport=httpx.HTTPTransport(uds=socket), base_url="http://m", timeout=60) as c:
        with c.stream("GET", path, params={"tail": "1000"}) as resp:
            for line in resp.iter_lines():
                if line:
                    if first is None:
                        first = time.perf_counter() - t0
                    count += 1
    return first or 0.0, time.perf_counter() - t0, count


def printed_all(ids: list[str], lines: int) -> bool:
    return all(docker("logs", "--tail", "1", i).strip().endswith(f"request {lines - 1}") for i in ids)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--tail", type=int, default=1000)
    args = ap.parse_args()
    compose = shutil.which("docker-compose")
    if not compose:
        raise SystemExit("docker-compose not installed: apt-get install docker-compose")
    ensure_image()
    n, tail = args.instances, args.tail
    expected = n * min(tail, args.lines)
    results: dict[str, list[tuple[float, float]]] = {}

    def record(name: str, got: tuple[float, float, int]) -> None:
        first, total, count = got
        if count != expected:
            raise SystemExit(f"{name}: {count} lines, expected {expected}")
        results.setdefault(name, []).append((first, total))

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        d: Daemon | None = None
        project = f"lbench{os.getpid()}"
        (tmp / "docker-compose.yml").write_text(compose_file(args.lines))
        base = [compose, "-p", project, "-f", str(tmp / "docker-compose.yml")]
        try:
            d = Daemon(tmp).start()
            (tmp / "bench.yaml").write_text(manifest(n, args.lines))
            d.cli("project", "add", "bench", str(tmp / "bench.yaml"), "--wait", timeout=600)
            up = subprocess.run([*base, "up", "-d", "--scale", f"web={n}"], capture_output=True, text=True)
            if up.returncode != 0:
                raise SystemExit(f"docker-compose up failed: {up.stderr[-1000:]}")
            ours = [c["ID"] for c in d.containers()]
            theirs = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}").split()
            assert len(ours) == n and len(theirs) == n, (len(ours), len(theirs))
            wait_until(lambda: printed_all(ours + theirs, args.lines), timeout=300, what="every line printed")
            env = {**os.environ, "MARIPOSA_SOCKET": d.socket}
            for r in range(args.rounds):
                record("mariposa -j P service logs web --tail N", measure(
                    [MARIPOSA, "-j", "bench", "service", "logs", "web", "--tail", str(tail)], env))
                record("docker-compose logs --no-color --tail N", measure(
                    [*base, "logs", "--no-color", "--tail", str(tail)]))
                t0 = time.perf_counter()
                firsts, count = [], 0
                for cid in theirs:
                    first, _, got = measure(["docker", "logs", "--tail", str(tail), cid])
                    firsts.append(first)
                    count += got
                record(f"{n} x docker logs --tail N (sequential)", (firsts[0], time.perf_counter() - t0, count))
                record("mariposa control API alone (no CLI process)", measure_api(
                    d.socket, "/v1/projects/bench/services/web/logs"))
                print(f"round {r + 1}: " + ", ".join(f"{k.split()[0]} {v[-1][0]:.2f}/{v[-1][1]:.2f}s"
                                                     for k, v in results.items()), flush=True)
        finally:
            subprocess.run([*base, "down", "-t", "1"], capture_output=True)
            if d is not None:
                d.cleanup()

    version = docker("version", "--format", "{{.Server.Version}}").strip()
    print(f"\n--tail {tail} of {n} instances that printed {args.lines} lines each ({expected} lines out; "
          f"median of {args.rounds}, busybox, dockerd {version}):")
    print(f"  {'peer':<46} {'first line':>11} {'total':>8}")
    for name, values in results.items():
        first = statistics.median(v[0] for v in values)
        total = statistics.median(v[1] for v in values)
        print(f"  {name:<46} {first:>10.3f}s {total:>7.3f}s")
    m = statistics.median(v[1] for v in results["mariposa -j P service logs web --tail N"])
    c = statistics.median(v[1] for v in results["docker-compose logs --no-color --tail N"])
    print(f"  mariposa / docker-compose (total) = {m / c:.2f}")


if __name__ == "__main__":
    main()
