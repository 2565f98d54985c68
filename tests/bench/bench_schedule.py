#!/usr/bin/env python3
"""Benchmark: scheduling precision on the real Engine, the delay from a firing's scheduled time to
its container started, p50/p99 over N firings (issue 16's goal: within 1 s), next to Debian's
``cron`` daemon running ``docker run --rm IMAGE true`` every minute.

Run on a host with dockerd (the cron row needs root and ``apt-get install -y cron``):
    .venv/bin/python tests/bench/bench_schedule.py [--firings 60] [--every 2] [--cron-minutes 3]

How the figures are taken, and why:
- One scheduled service, ``*/EVERY * * * * *`` (seconds first), a job that prints and exits at
  once, concurrency allow: every firing is a run, none skipped, so N firings are N samples.
- Two measures of "started" for Mariposa: the daemon's own stamp when Docker's create-and-start
  returned, and the Engine's ``start`` event (``docker events``, nanoseconds), the same measure
  as cron's row. The delay includes waking up, recording the firing and the Docker calls. The
  daemon sleeps until each firing: it does not poll.
- cron: /etc/cron.d/mariposa-bench-PID with ``* * * * * root docker run --rm --label ... IMAGE
  true``, ``cron -f`` as a child; the delay is from the minute's boundary to the container's
  ``start`` event. cron's granularity is a minute, so it gives one sample a minute
  (``--cron-minutes``); it runs at the same time as Mariposa's firings (both see the same load),
  and ``--cron-minutes 0`` leaves it out. The file and the process are removed at the end.

Measured on the 2-core build host, loaded by other engineers' test runs (2026-11-27; both rows
at the same time, defaults):
    mariposa (daemon stamp)     60 firings  p50 0.486 s  p99 0.590 s  max 0.614 s   60/60 within 1 s
    mariposa (Engine start)     60 firings  p50 0.383 s  p99 0.474 s  max 0.475 s   60/60 within 1 s
    cron + docker run            3 firings  p50 2.087 s  p99 2.091 s  max 2.091 s    0/3 within 1 s
    goal                                    1 s
A ``docker run --rm IMAGE true`` took 0.37-0.47 s from invocation to exit on the same host, so
most of cron's 2 s is cron's own: it runs a minute's jobs a while after the boundary, not at it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mariposa.model import LABEL_OWNER, LABEL_RUN  # noqa: E402
from tests.bench import cronpeer  # noqa: E402
from tests.integration.harness import IMAGE, Daemon  # noqa: E402

CRON_LABEL = "io.mariposa.bench-cron"


class StartEvents:
    """The Engine's container ``start`` events as they come: (time, labels), in a thread."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["docker", "events", "--filter", "type=container", "--filter", "event=start",
                                      "--format", "{{json .}}"], stdout=subprocess.PIPE, text=True)
        self.seen: list[tuple[float, dict]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.seen.append((event["timeNano"] / 1e9, event.get("Actor", {}).get("Attributes", {})))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def row(name: str, delays: list[float]) -> str:
    if not delays:
        return f"{name:26} no samples"
    delays = sorted(delays)
    p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
    return (f"{name:26} {len(delays):3} firings  p50 {statistics.median(delays):.3f} s  p99 {p99:.3f} s  "
            f"max {delays[-1]:.3f} s  {sum(d <= 1.0 for d in delays):3}/{len(delays)} within 1 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--firings", type=int, default=60)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--cron-minutes", type=int, default=3, help="minutes of cron's row; 0 leaves it out")
    args = parser.parse_args()
    why_not = cronpeer.available() if args.cron_minutes else "--cron-minutes 0"
    if why_not:
        print(f"cron row left out: {why_not}")
    tag = f"mariposa-bench-{os.getpid()}"
    docker = shutil.which("docker") or "docker"  # cron's PATH is /usr/bin:/bin
    events = StartEvents()
    cron_started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="mariposa-bench-schedule-") as tmp, contextlib.ExitStack() as stack:
            if not why_not:
                stack.enter_context(cronpeer.running(tag, [
                    f"* * * * * root {docker} run --rm --label {CRON_LABEL}={tag} {IMAGE} true"]))
            daemon = Daemon(Path(tmp)).start()
            try:
                manifest = Path(tmp) / "cron.yaml"
                manifest.write_text(f"services:\n  tick:\n    service_type: scheduled\n    image: {IMAGE}\n"
                                    f"    command: sh -c 'echo tick'\n    schedule: '*/{args.every} * * * * *'\n"
                                    f"    concurrency: allow\n    scale: 4\n    history: {{succeeded: 1000}}\n")
                daemon.cli("project", "add", "cron", str(manifest), "--wait")
                time.sleep(args.firings * args.every + 5)
                rows = daemon.json("-j", "cron", "service", "runs", "tick", "--limit", "10000")
                owner = daemon.owner
            finally:
                daemon.cleanup()
            if not why_not:  # the rest of cron's minutes, and its last container's start
                first = (int(cron_started) // 60 + 1) * 60
                time.sleep(max(0.0, first + (args.cron_minutes - 1) * 60 + 15 - time.time()))
    finally:
        events.close()
    started = sorted((r for r in rows if r["started"] is not None), key=lambda r: r["scheduled"])[: args.firings]
    by_run = {r["id"]: r for r in started}
    engine = [t - by_run[labels[LABEL_RUN]]["scheduled"] for t, labels in events.seen
              if labels.get(LABEL_OWNER) == owner and labels.get(LABEL_RUN) in by_run]
    cron = [t - (t // 60) * 60 for t, labels in events.seen if labels.get(CRON_LABEL) == tag][: args.cron_minutes]
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    print(f"every {args.every} s (mariposa), every minute (cron); scheduled time -> container started; "
          f"mariposa run states {states}")
    print(row("mariposa (daemon stamp)", [r["started"] - r["scheduled"] for r in started]))
    print(row("mariposa (Engine start)", engine))
    if not why_not:
        print(row("cron + docker run", cron))
    print(f"{'goal':26} {'':12} 1 s")


if __name__ == "__main__":
    main()
