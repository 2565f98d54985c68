#!/usr/bin/env python3
"""Benchmark: 1,000 sequential `meta set` through the CLI and through the control API (ops/s).

Run on a host with dockerd (the daemon starts with the Docker driver; meta touches only the store):
    .venv/bin/python tests/bench/bench_meta.py [--count 1000]

How the figures are taken, and why:
- One project whose manifest uses no meta, so a set is the store transaction, its event and the
  check for services to roll out: what every `meta set` costs. Each write is a new value, so each
  one really writes.
- CLI: `mariposa -j P meta set k vN` as a process, one after the other: what a shell script
  gets, process start included. API: PUT /v1/projects/P/meta/k on one kept-alive connection to
  the control socket: the daemon's own cost. Sequential both: ops/s is 1 / latency.
- Also printed: p50/p99 latency of the API calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import IMAGE, Daemon  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mariposa-bench-meta-") as tmp:
        daemon = Daemon(Path(tmp)).start()
        try:
            manifest = Path(tmp) / "b.yaml"
            manifest.write_text(f"services:\n  app:\n    image: {IMAGE}\n    command: sleep 100000\n    scale: 0\n")
            daemon.cli("project", "add", "b", str(manifest), "--wait")

            t0 = time.perf_counter()
            for n in range(args.count):
                daemon.cli("-j", "b", "meta", "set", "k", f"cli-{n}")
            cli_s = time.perf_counter() - t0

            latencies = []
            transport = httpx.HTTPTransport(uds=daemon.socket)
            with httpx.Client(transport=transport, base_url="http://m", timeout=30) as c:
                t0 = time.perf_counter()
                for n in range(args.count):
                    t = time.perf_counter()
                    c.put("/v1/projects/b/meta/k", json={"value": f"api-{n}"}).raise_for_status()
                    latencies.append(time.perf_counter() - t)
                api_s = time.perf_counter() - t0
            assert daemon.cli("-j", "b", "meta", "get", "k").stdout == f"api-{args.count - 1}\n"
        finally:
            daemon.cleanup()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"{args.count} sequential meta set")
    print(f"  CLI (a process each): {args.count / cli_s:8.1f} ops/s  ({cli_s:.1f} s)")
    print(f"  API (one connection): {args.count / api_s:8.1f} ops/s  ({api_s:.1f} s); "
          f"p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")


if __name__ == "__main__":
    main()
