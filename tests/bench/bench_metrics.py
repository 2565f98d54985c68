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

With ``--daemon``, the N containers are a real daemon's instead (``mariposa daemon`` as a process,
one project, one service at ``scale: N``, IMAGE, ``sleep``), the rows above are taken of them, and
two more tables say what the daemon itself spends, from /proc/PID/stat: R windows of S seconds
with the collector idle (``metrics_interval = 3600``, in a config file), then, after a SIGHUP
sets it to S, R windows of S seconds each holding one round (they start S/2 after the reload's
first round, so the first round, which has no rate to take, is left out). The difference is the
whole collector (listing, stats, rates, the hour in memory, the minute rows in SQLite) per round
and per instance; the Engine's CPU over the same windows likewise, so it stays comparable with
``docker stats --no-stream`` of the same N (run while the collector is idle). Means, not medians:
the minute rows are written in one round of 60/S. /proc counts CPU in ticks of 10 ms, and dockerd
serves every client of the host: on a shared machine the Engine's difference is mostly others'
work, so run it on a quiet one.

    .venv/bin/python tests/bench/bench_metrics.py [--instances 100] [--rounds 6] [--interval 10] [--daemon]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
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
from tests.bench.procstat import cpu_seconds, rss_mib  # noqa: E402
from tests.integration.harness import IMAGE, Daemon, wait_until  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402

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


IDLE_INTERVAL = 3600  # the longest metrics_interval the daemon takes: no round within the measurement
MANIFEST = f"""
services:
  idle:
    image: {IMAGE}
    command: sleep 1000000
    scale: {{n}}
"""


def start_daemon(tmp: Path, n: int) -> Daemon:
    """A daemon with N idle instances of one service, its collector idle (the config file's
    interval: a SIGHUP after rewriting it changes the interval live, as an operator would)."""
    config = tmp / "mariposa.toml"
    config.write_text(f"metrics_interval = {IDLE_INTERVAL}\n")
    d = Daemon(tmp)
    # the daemon's default resync (10 s), not the tests' 2 s: what a real daemon spends between rounds
    d.start("--config", str(config), "--resync", "10")
    manifest = tmp / "bench.yaml"
    manifest.write_text(MANIFEST.format(n=n))
    d.cli("project", "add", "bench", str(manifest), "--wait", timeout=1800)
    wait_until(lambda: len(d.running("idle")) == n, timeout=600, what=f"{n} instances running")
    return d


def set_interval(d: Daemon, tmp: Path, interval: float) -> float:
    """The config file's metrics_interval set and the daemon told (SIGHUP); when it reloaded
    (monotonic): its collector's first round at the new interval starts then."""
    reloaded = d.log.read_text().count("configuration reloaded")
    (tmp / "mariposa.toml").write_text(f"metrics_interval = {interval:g}\n")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: d.log.read_text().count("configuration reloaded") > reloaded, timeout=60,
               interval=0.05, what="the daemon reloaded its configuration")
    return time.monotonic()


def daemon_windows(pid: int, engine: Engine, rounds: int, interval: float,
                   start: float) -> list[tuple[float, float, float]]:
    """(the daemon's CPU s, the Engine's CPU s, wall s) of R back-to-back windows of S seconds
    from ``start`` (monotonic). /proc/PID/stat counts all the daemon's threads (the store's
    work and the cgroup file reads run in worker threads)."""
    time.sleep(max(0.0, start - time.monotonic()))
    out = []
    c0, e0, t0 = cpu_seconds(pid), engine.cpu(), time.monotonic()
    for k in range(1, rounds + 1):
        time.sleep(max(0.0, start + k * interval - time.monotonic()))
        c1, e1, t1 = cpu_seconds(pid), engine.cpu(), time.monotonic()
        out.append((c1 - c0, e1 - e0, t1 - t0))
        c0, e0, t0 = c1, e1, t1
    return out


def sampled_instances(d: Daemon) -> int:
    """Instances with a sample in the daemon's /metrics (each has a memory gauge)."""
    import httpx

    with httpx.Client(transport=httpx.HTTPTransport(uds=d.socket), base_url="http://m", timeout=60) as c:
        text = c.get("/metrics").raise_for_status().text
    return sum(1 for line in text.splitlines() if line.startswith("mariposa_instance_memory_bytes{"))


def stop_daemon(d: Daemon) -> None:
    """The project deleted (its containers and network), the daemon stopped, then whatever is
    left of its owner's removed (Daemon.cleanup): pass or fail, nothing of this run stays."""
    try:
        if d.proc is not None and d.proc.poll() is None and d.owner:
            d.cli("project", "delete", "bench", "--wait", check=False, timeout=900)
            d.kill(signal.SIGTERM)
    except subprocess.TimeoutExpired:
        pass
    finally:
        d.cleanup()


def print_daemon(n: int, rounds: int, interval: float, idle: list[tuple[float, float, float]],
                 busy: list[tuple[float, float, float]], peer: list[tuple[float, float, float, int]],
                 engine_idle: float, sampled: int, rss: float) -> None:
    def mean(rows: list[tuple[float, ...]], i: int) -> float:
        return statistics.fmean(r[i] for r in rows)

    print(f"\nThe daemon sampling its {n} idle instances: mean of {rounds} windows of {interval:g} s "
          f"(with metrics_interval {interval:g}, one round each):")
    print(f"  {'daemon':<44} {'daemon ms':>9} {'Engine ms':>10} {'total ms':>9} {'per inst':>9} {'% core':>7}")
    d_busy, e_busy = mean(busy, 0) * 1e3, mean(busy, 1) * 1e3
    d_idle, e_idle = mean(idle, 0) * 1e3, mean(idle, 1) * 1e3
    rows = [(f"metrics_interval {interval:g} (sampling)", d_busy, e_busy),
            (f"metrics_interval {IDLE_INTERVAL} (collector idle)", d_idle, e_idle),
            ("the collector's cost per round (difference)", d_busy - d_idle, e_busy - e_idle)]
    # the peer as in the table above, but its mean: the CLI, and the Engine net of its idle rate
    p_cli = mean(peer, 0) * 1e3
    p_eng = statistics.fmean(r[1] - engine_idle * r[2] for r in peer) * 1e3
    rows.append(("docker stats --no-stream (peer, per call)", p_cli, p_eng))
    for name, ours, eng in rows:
        total = ours + eng
        print(f"  {name:<44} {ours:>9.1f} {eng:>10.1f} {total:>9.1f} {total / n:>7.2f}ms "
              f"{total / 1e3 / interval * 100:>6.2f}%")
    print(f"  daemon: /proc/PID/stat of the mariposa daemon (all threads); Engine: dockerd + containerd + the "
          f"{n} shims over the same windows; {sampled}/{n} instances with a sample at the end; daemon RSS "
          f"{rss:.0f} MiB. Per-window daemon ms, sampling: {' '.join(f'{r[0] * 1e3:.0f}' for r in busy)}; "
          f"idle: {' '.join(f'{r[0] * 1e3:.0f}' for r in idle)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--daemon", action="store_true",
                    help="the containers are a real daemon's, and its own CPU with and without sampling is measured")
    args = ap.parse_args()
    configure_logs(level="info")  # as the daemon runs: no debug line per Engine call
    n = args.instances
    owner = f"mbench{uuid.uuid4().hex[:8]}"
    results: dict[str, list[tuple[float, float, float, int]]] = {}
    daemon: Daemon | None = None
    tmpdir = tempfile.TemporaryDirectory(prefix="mariposa-bench-metrics-")
    tmp = Path(tmpdir.name)
    try:
        ensure_image()
        t0 = time.monotonic()
        if args.daemon:
            daemon = start_daemon(tmp, n)
            assert daemon.owner is not None
            owner = daemon.owner
            ids = [c["ID"] for c in daemon.running("idle")]
        else:
            ids = start_containers(owner, n)
        whose = " (a daemon's)" if args.daemon else ""
        print(f"{n} idle containers up{whose} in {time.monotonic() - t0:.0f} s; "
              f"{args.rounds} rounds every {args.interval:g} s each ...", flush=True)
        engine = Engine(init_pids(ids))
        idle0, at0 = engine.cpu(), time.monotonic()
        time.sleep(min(args.interval, 5.0))
        idle = (engine.cpu() - idle0) / (time.monotonic() - at0)
        for source in ("cgroup", "api"):
            results[f"mariposa DockerDriver.stats, {'cgroup files' if source == 'cgroup' else 'Engine API'}"] = \
                trio.run(driver_rounds, owner, source, args.rounds, args.interval, engine, n)
        results["docker stats --no-stream (peer)"] = cli_rounds(ids, args.rounds, args.interval, engine)
        if daemon is not None:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            print(f"daemon: {args.rounds} windows with its collector idle, then {args.rounds} sampling every "
                  f"{args.interval:g} s ...", flush=True)
            quiet = daemon_windows(pid, engine, args.rounds, args.interval, time.monotonic())
            reloaded = set_interval(daemon, tmp, args.interval)
            busy = daemon_windows(pid, engine, args.rounds, args.interval, reloaded + args.interval / 2)
            sampled, rss = sampled_instances(daemon), rss_mib(pid)
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        else:
            remove_containers(owner)
        tmpdir.cleanup()

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
    if daemon is not None:
        print_daemon(n, args.rounds, args.interval, quiet, busy, results["docker stats --no-stream (peer)"], idle,
                     sampled, rss)


def engine_version() -> str:
    done = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    main()
