#!/usr/bin/env python3
"""Benchmark: the daemon's CPU with 1,000 scheduled services firing every minute (issue 16), on
the fake driver and a fake clock, next to Debian's ``cron`` evaluating 1,000 crontab lines.

    .venv/bin/python tests/bench/bench_schedule_cpu.py [--services 1000] [--minutes 3] [--cron-minutes 2]

How the figures are taken, and why:
- The whole daemon (``run_daemon``: store, reconciler, scheduler, API) runs in this process on
  the fake driver, under trio's ``MockClock`` (autojump): simulated time moves on once the
  daemon has been idle for half a second of real time, so N simulated minutes take only the CPU
  the work needs (the wall time includes those half seconds). Every service is
  ``schedule: "* * * * *"`` with a job that ends at once; each minute is 1,000 firings, each a
  run recorded, an instance made, finished, its output kept, and history pruned.
- Measured over ``--minutes`` simulated minutes after the first firing (the project's creation
  and parse are left out): the process's CPU seconds (all threads: the store's work runs in
  worker threads) and the wall time, per simulated minute and per firing. On a real clock that
  CPU would be spread over each minute; a figure under 60 s a minute keeps up.
- The peer: /etc/cron.d/mariposa-bench-PID with 1,000 ``* * * * * root true`` lines and ``cron
  -f`` as a child, for ``--cron-minutes`` real minutes; its own CPU and, with its reaped
  children (the per-job forks and their ``/bin/sh -c true``), the whole cost. cron records
  nothing of a run; the figures are of different work, side by side for scale. ``--cron-minutes
  0`` leaves it out.

Measured on the 2-core build host, loaded by other engineers' test runs (2026-11-27, defaults):
    1000 services '* * * * *' on the fake driver, 3 simulated minutes (3000 firings; runs {'succeeded': 3000})
    mariposa daemon          CPU   25.22 s per minute   25.22 ms per firing  wall  51.11 s per simulated
                             minute; 4 scheduler passes a minute
    cron, own                CPU    0.29 s per minute    0.29 ms per firing  (2 real minutes of 1000 'true' lines)
    cron, with its children  CPU    8.77 s per minute    8.77 ms per firing
Before commit 942fe43 (``ProjectSpec.service`` was a scan, and the health monitor's sync asks it
for every service on each instance change): 51.22 ms per firing, 51.22 s per minute. 300
services: 12.7 ms per firing. So a run costs the daemon about 3 times what cron's fork and ``sh
-c true`` cost, and 1,000 every-minute services take under half a core: the work is per run (a
few store transactions, an instance made and removed, its output read, events and logs), not
the scheduler's passes (4 a minute, however many services). It grew faster than the
number of services: the health monitor's sync (on each instance change) looked at every service
to find none has checks (cProfile, 300 services: 278k goal_from calls). Now it asks each project's
version once (GoalReader.has_checks, kept per version): 17.74 ms per firing, 17.74 s per minute
(2 simulated minutes, 1,000 services), from 25.22. What is left on the loop's thread is mostly
croniter's expansion of each schedule and the run's own store calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import trio
from trio.testing import MockClock

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mariposa.clock import TrioClock  # noqa: E402
from tests.bench import cronpeer  # noqa: E402
from tests.unit.test_runs_fake import START, JobDriver, Setup  # noqa: E402


def manifest(services: int) -> str:
    return "services:\n" + "".join(
        f"  s{n:04}:\n    service_type: scheduled\n    image: busybox\n    command: 'true'\n"
        f"    schedule: '* * * * *'\n" for n in range(services))


async def minute_done(s: Setup, when: float, services: int) -> None:
    """Simulated time up to just past the firing at ``when``, then held still (real time passes)
    until every service's run of it has ended: a minute's work is measured whole, never cut by
    a jump of the clock while the store works in a thread."""
    await s.until(when + 1)
    with s.frozen():
        while True:
            done = await s.ctx.store.call(lambda db: db.execute(
                "SELECT COUNT(*) FROM runs WHERE scheduled = ? AND state NOT IN ('queued', 'running')",
                [when]).fetchone()[0])
            if done >= services:
                return
            await trio.to_thread.run_sync(time.sleep, 0.1)


async def ours(services: int, minutes: int, mock: MockClock) -> dict:
    with tempfile.TemporaryDirectory(prefix="mariposa-bench-schedule-cpu-") as tmp:
        async with trio.open_nursery() as nursery:
            s = await Setup(Path(tmp), nursery, TrioClock(epoch=START), mock, JobDriver).start()
            with s.frozen():
                r = await s.client.post("/v1/projects", json={"name": "p", "manifest": manifest(services)},
                                        timeout=None)
            assert r.status_code == 200, r.text
            await minute_done(s, START + 60, services)  # the first minute's firings (the warm-up)
            c0, w0, p0 = time.process_time(), time.perf_counter(), s.ctx.scheduler.passes
            for minute in range(2, minutes + 2):
                await minute_done(s, START + 60 * minute, services)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            passes = s.ctx.scheduler.passes - p0

            def counts(db):
                rows = db.execute("SELECT state, COUNT(*) FROM runs WHERE scheduled > ? AND scheduled <= ? "
                                  "GROUP BY state", [START + 60, START + 60 * (minutes + 1)]).fetchall()
                return dict(rows)

            states = await s.ctx.store.call(counts)
            assert s.scope is not None
            s.scope.cancel()
            await s.client.aclose()
    return {"cpu": cpu, "wall": wall, "states": states, "passes": passes}


def peer(lines: int, minutes: int) -> dict:
    tag = f"mariposa-bench-{os.getpid()}"
    with cronpeer.running(tag, ["* * * * * root true"] * lines) as cron:
        # from half a minute in to half a minute in, N minutes later: each window holds N firings
        time.sleep(max(0.0, (time.time() // 60 + 1) * 60 + 30 - time.time()))
        own0, all0 = cron.cpu()
        time.sleep(minutes * 60)
        own1, all1 = cron.cpu()
    return {"own": own1 - own0, "all": all1 - all0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=3, help="simulated minutes measured")
    parser.add_argument("--cron-minutes", type=int, default=2, help="real minutes of cron's row; 0 leaves it out")
    args = parser.parse_args()
    # simulated time jumps after half a second of real idleness: the store's work runs in worker
    # threads, and a shorter threshold jumps in the middle of it (minutes would pass unworked)
    mock = MockClock(autojump_threshold=0.5)
    got = trio.run(ours, args.services, args.minutes, mock, clock=mock)
    firings = args.services * args.minutes
    done = sum(got["states"].values())
    print(f"{args.services} services '* * * * *' on the fake driver, {args.minutes} simulated minutes "
          f"({firings} firings; runs {got['states']})")
    print(f"{'mariposa daemon':24} CPU {got['cpu'] / args.minutes:7.2f} s per minute  "
          f"{got['cpu'] / max(done, 1) * 1000:6.2f} ms per firing  wall {got['wall'] / args.minutes:6.2f} s "
          f"per simulated minute; {got['passes'] / args.minutes:.0f} scheduler passes a minute")
    why_not = cronpeer.available() if args.cron_minutes else "--cron-minutes 0"
    if why_not:
        print(f"cron row left out: {why_not}")
        return
    c = peer(args.services, args.cron_minutes)
    n = args.services * args.cron_minutes
    print(f"{'cron, own':24} CPU {c['own'] / args.cron_minutes:7.2f} s per minute  "
          f"{c['own'] / n * 1000:6.2f} ms per firing  ({args.cron_minutes} real minutes of {args.services} "
          "'true' lines)")
    print(f"{'cron, with its children':24} CPU {c['all'] / args.cron_minutes:7.2f} s per minute  "
          f"{c['all'] / n * 1000:6.2f} ms per firing")


if __name__ == "__main__":
    main()
