#!/usr/bin/env python3
"""Benchmark: the CPU it costs to sample N Docker containers every S seconds, next to
``docker stats --no-stream`` of the same N at the same interval.

N idle busybox containers are started (labelled with an owner of this run's own, removed at the
end, pass or fail), then for R rounds, one every S seconds:

- **mariposa, cgroup files** (the Docker driver's default): ``DockerDriver.stats`` for all N at
  once, as the daemon's collector calls it;
- **mariposa, Engine API** (its fallback for a remote Engine): the same calls with the driver's
  stats taken from ``GET /containers/ID/stats?stream=false&one-shot=true``;
- **docker stats --no-stream** of the same N (the peer).

For each round: this process's CPU (``time.process_time``; for the peer, the docker CLI's, from
the children's rusage) and the Engine's (``dockerd``, ``containerd`` and the N containers'
``containerd-shim``s, from /proc) over the sampling, and the sampling's wall time. The table gives
the median round, and per instance.

    .venv/bin/python tests/bench/bench_metrics.py [--instances 100] [--rounds 6] [--interval 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mariposa.drivers.docker import DockerDriver  # noqa: E402
from mariposa.logs import configure as configure_logs  # noqa: E402
from mariposa.model import LABEL_INSTANCE, LABEL_OWNER, LABEL_PROJECT, LABEL_SERVICE, Instance  # noqa: E402
from tests.bench.procstat import cpu_seconds  # noqa: E402
from tests.integration.harness import IMAGE  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _pids_named(*names: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


class Engine:
    """The CPU seconds of the Engine's processes that serve these containers' stats."""

    def __init__(self, init_pids: list[int]) -> None:
        self.pids = _pids_named("dockerd", "containerd") + sorted({_ppid(p) for p in init_pids})

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total


def start_containers(owner: str, n: int) -> list[str]:
    def run(i: int) -> str:
        argv = ["docker", "run", "-d", "--name", f"mbench-{owner}-{i}", "--label", f"{LABEL_OWNER}={owner}",
                "--label", f"{LABEL_INSTANCE}={owner}-{i}", "--label", f"{LABEL_PROJECT}=bench",
                "--label", f"{LABEL_SERVICE}=idle", IMAGE, "sleep", "1000000"]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout.strip()

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(run, range(n)))


def remove_containers(owner: str) -> None:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL_OWNER}={owner}"],
                         capture_output=True, text=True, timeout=60).stdout.split()
    for i in range(0, len(ids), 50):
        subprocess.run(["docker", "rm", "-f", *ids[i:i + 50]], capture_output=True, timeout=300)


def init_pids(ids: list[str]) -> list[int]:
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", *ids], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return [int(p) for p in out.split()]


async def driver_rounds(owner: str, source: str, rounds: int, interval: float, engine: Engine,
                        n: int) -> list[tuple[float, float, float, int]]:
    """(our CPU s, the Engine's CPU s, wall s, readings) per round."""
    driver = DockerDriver(owner, stats_source=source)
    out = []
    try:
        instances: list[Instance] = await driver.inventory()
        assert len(instances) == n, f"{len(instances)} of {n} containers listed"
        next_at = trio.current_time()
        for _ in range(rounds + 1):  # the first round warms up (pids, connections): not counted
            await trio.sleep_until(next_at)
            next_at += interval
            got: list[object] = []
            ours0, engine0, wall0 = time.process_time(), engine.cpu(), time.perf_counter()

            async def one(inst: Instance) -> None:
                got.append(await driver.stats(inst))  # noqa: B023 - awaited within the round

            async with trio.open_nursery() as nursery:
                for inst in instances:
                    nursery.start_soon(one, inst)
            wall = time.perf_counter() - wall0
            out.append((time.process_time() - ours0, engine.cpu() - engine0, wall,
                        sum(1 for g in got if g is not None)))
    finally:
        await driver.aclose()
    return out[1:]


def cli_rounds(ids: list[str], rounds: int, interval: float, engine: Engine) -> list[tuple[float, float, float, int]]:
    out = []
    next_at = time.monotonic()
    for _ in range(rounds + 1):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        engine0, wall0 = engine.cpu(), time.perf_counter()
        done = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.ID}} {{.CPUPerc}} {{.MemUsage}}",
                               *ids], capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - wall0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cli = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        out.append((cli, engine.cpu() - engine0, wall, len(done.stdout.splitlines())))
    return out[1:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--interval", type=float, default=10.0)
    args = ap.parse_args()
    configure_logs(level="info")  # as the daemon runs: no debug line per Engine call
    n = args.instances
    owner = f"mbench{uuid.uuid4().hex[:8]}"
    results: dict[str, list[tuple[float, float, float, int]]] = {}
    try:
        t0 = time.monotonic()
        ids = start_containers(owner, n)
        print(f"{n} idle containers up in {time.monotonic() - t0:.0f} s; {args.rounds} rounds every "
              f"{args.interval:g} s each ...", flush=True)
        engine = Engine(init_pids(ids))
        idle0, at0 = engine.cpu(), time.monotonic()
        time.sleep(min(args.interval, 5.0))
        idle = (engine.cpu() - idle0) / (time.monotonic() - at0)
        for source in ("cgroup", "api"):
            results[f"mariposa DockerDriver.stats, {'cgroup files' if source == 'cgroup' else 'Engine API'}"] = \
                trio.run(driver_rounds, owner, source, args.rounds, args.interval, engine, n)
        results["docker stats --no-stream (peer)"] = cli_rounds(ids, args.rounds, args.interval, engine)
    finally:
        remove_containers(owner)

    print(f"\nSampling {n} idle containers every {args.interval:g} s; median of {args.rounds} rounds "
          f"(2-core host, Engine {engine_version()}):")
    head = f"  {'sampler':<44} {'ours ms':>8} {'Engine ms':>10} {'total ms':>9} {'per inst':>9} {'wall s':>7} " \
           f"{'% core':>7} {'read':>5}"
    print(head)
    for name, rows in results.items():
        ours = statistics.median(r[0] for r in rows) * 1e3
        # the Engine's CPU net of what it spends anyway (others' containers, its own timers)
        eng = statistics.median(max(0.0, r[1] - idle * r[2]) for r in rows) * 1e3
        total = statistics.median((r[0] + max(0.0, r[1] - idle * r[2])) for r in rows) * 1e3
        wall = statistics.median(r[2] for r in rows)
        read = min(r[3] for r in rows)
        print(f"  {name:<44} {ours:>8.1f} {eng:>10.1f} {total:>9.1f} {total / n:>8.2f}ms {wall:>7.2f} "
              f"{total / 1e3 / args.interval * 100:>6.2f}% {read:>5}")
    print(f"  ours: this process (mariposa) or the docker CLI; Engine: dockerd + containerd + the {n} shims, "
          f"net of the {idle * 1e3:.0f} ms/s it used when nobody sampled; '% core': total CPU over the interval; "
          "'read': fewest readings a round got")


def engine_version() -> str:
    done = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    main()
