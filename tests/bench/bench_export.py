#!/usr/bin/env python3
"""Benchmark: `mariposa export` of large manifests, per target.

The export runs on a worker thread of the daemon, so what matters is its CPU time: this prints,
for manifests of 10, 100 and 400 services (400 of these come near the parser's bound of 25,000
values in a manifest), the CPU time
of each target's export (this thread's, best of ``--rounds``) and the parse of the manifest
beside it, the floor every export of a stored version already paid when the version was made.
Each service has ports, environment, a health check, an affinity rule, a volume and a secret, so
every builder and the report do real work. Most of an export's time is reading the manifest's
text again for the report's line:column of every field (the same ruamel load as the parse).

    .venv/bin/python tests/bench/bench_export.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mariposa.export import TARGETS, export  # noqa: E402
from mariposa.manifest import parse_manifest  # noqa: E402


def manifest(count: int) -> str:
    return "services:\n" + "".join(
        f"  s{i}:\n    image: mariposa-example/busybox:latest\n    scale: 1\n    ports: [80, '{20000 + i}:8080']\n"
        f"    environment: {{A: '{i}', B: hello}}\n    healthchecks: [{{type: http, port: 80, path: /health}}]\n"
        f"    affinity: ['node.labels.zone==a']\n    volumes: ['data{i}:/data']\n    secrets: [key]\n"
        f"    restart: on-failure:3\n    stop: {{timeout: 5}}\n"
        for i in range(count))


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.thread_time()
        fn()
        times.append(time.thread_time() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'services':>8}  {'parse':>8}  " + "  ".join(f"{t:>11}" for t in TARGETS) + "  entries")
    for count in (10, 100, 400):
        text = manifest(count)
        spec = parse_manifest(text, bind_roots=None)
        parse = best(functools.partial(parse_manifest, text, bind_roots=None), args.rounds)
        cells, entries = [], 0
        for target in TARGETS:
            took = best(functools.partial(export, target, spec, text, "bench"), args.rounds)
            entries = len(export(target, spec, text, "bench").entries)
            cells.append(f"{took * 1000:>8.0f} ms")
        print(f"{count:>8}  {parse * 1000:>5.0f} ms  " + "  ".join(cells) + f"  {entries}")


if __name__ == "__main__":
    main()
