#!/usr/bin/env python3
"""Benchmark: a meta change until every one of 100 instances reads it in its live mdata file
(p50/p99/max), next to a Docker redeploy of the same 100 (``docker-compose up -d`` after an env
change) as the peer.

Run as root on a host with dockerd and docker-compose (tests/run.sh sets both up):
    .venv/bin/python tests/bench/bench_mdata.py [--count 100] [--interval 0.02]
Prints one table: figures over the instances, from the moment T0 the change was asked for.

How the figures are taken, and why:
- Both peers run the same containers: the busybox test image, ``init``, a project network, and
  busybox ``httpd`` serving one file, ``/color``. A GET of it to the instance's address reads the
  file from inside the container, so what is measured is what the instance sees, not what the
  host wrote.
- Mariposa: one service of ``--count`` instances, ``mdata: {color: "{{ .meta.color }}"}``, httpd
  serving /run/mariposa/mdata (the bind-mounted directory), meta ``color=v1``. Once all run and
  answer v1, one poller per instance asks for /color every ``--interval`` s, then at T0 the
  change is asked for; each instance's figure is when its poller first read the new value. Two
  changes, one after the other: ``mariposa -j P meta set color v2`` as a process (what a user
  does, Python start-up included; the CLI's own time is printed too), then v3 as a PUT to
  /v1/projects/P/meta/color on the control socket (the daemon's part alone). The pollers use a
  bare HTTP/1.0 GET on trio sockets, not httpx: with 100 of them on 2 cores the client's own CPU
  would be taken from the daemon it measures. Still, 100 pollers (and a busybox process forked
  for each GET) saturate 2 cores: each instance is read only every ~100-200 ms, not every
  interval (the GETs a second achieved are printed), and a figure is late by up to that much.
- So each change is also timed on the host, exactly and for free: when the daemon swapped each
  instance's files, from the name of the directory ``..data`` points at (mdata/files.py stamps
  it with the wall clock, to the ns). The container sees the swap when it happens (its mount is
  that directory); the polled figure shows it does. A third change, v4 by the CLI with no
  pollers at all, is timed on the host alone: the daemon's figure without the load of measuring
  it (every instance must then answer v4).
- Afterwards the same container ids must run with the same State.StartedAt and RestartCount:
  the change restarted nothing.
- Peer: a docker-compose project (a unique name, removed with ``down`` afterwards) whose service
  has ``scale: N``, ``environment: {COLOR: v1}`` and a command that writes $COLOR to the file
  httpd serves. At T0 the compose file is rewritten with v2 and ``docker-compose up -d`` runs:
  compose replaces every container. The new containers' addresses are not known before they
  exist, so each one's figure is its State.StartedAt (the Engine's clock, the host's) minus T0;
  httpd listens a few ms later still, so these are lower bounds, in the peer's favour. After the
  command every new container must answer v2. The command's own time is printed too.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import attrs
import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import IMAGE, Daemon, docker, wait_until  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402

MANIFEST = """
services:
  web:
    image: IMAGE
    command: httpd -f -p 80 -h /run/mariposa/mdata
    scale: N
    mdata:
      color: "{{ .meta.color }}"
""".replace("IMAGE", IMAGE)
COMPOSE = f"""
version: "2.4"
services:
  web:
    image: {IMAGE}
    init: true
    scale: {{n}}
    environment:
      COLOR: {{color}}
    command: ["sh", "-c", "mkdir -p /www && printf %s \\"$$COLOR\\" > /www/color && exec httpd -f -p 80 -h /www"]
"""
UP_TIMEOUT = 1800  # a loaded 2-core machine may take many minutes to start 100 of anything


# --- reading /color from inside each instance -------------------------------------------------

async def get_color(ip: str, timeout: float = 5.0) -> str | None:
    """The body of GET /color from ip:80 (None: no answer, or not a 200)."""
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(ip, 80)
        except OSError:
            return None
        async with stream:
            try:
                await stream.send_all(b"GET /color HTTP/1.0\r\nHost: bench\r\n\r\n")
                data = b""
                while chunk := await stream.receive_some(4096):
                    data += chunk
            except (OSError, trio.BrokenResourceError):
                return None
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or head.split(b" ", 2)[1:2] != [b"200"]:
            return None
        return body.decode("utf-8", "replace")
    return None


def colors(ips: list[str]) -> list[str | None]:
    async def all_of() -> list[str | None]:
        out: list[str | None] = [None] * len(ips)

        async def one(i: int) -> None:
            out[i] = await get_color(ips[i])

        limit = trio.CapacityLimiter(20)

        async def limited(i: int) -> None:
            async with limit:
                await one(i)

        async with trio.open_nursery() as nursery:
            for i in range(len(ips)):
                nursery.start_soon(limited, i)
        return out

    return trio.run(all_of)


def wait_answering(ips: list[str], color: str, what: str, timeout: float = 600) -> None:
    last: list[str | None] = []

    def all_answer() -> bool:
        last[:] = colors(ips)
        return all(c == color for c in last)

    try:
        wait_until(all_answer, timeout=timeout, interval=1.0, what=f"{len(ips)} {what} instances answering {color}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last answers: {sorted(set(map(str, last)))}") from None


def swapped_at(directory: Path) -> float | None:
    """When the daemon swapped an instance's values in, from the name of the directory ``..data``
    points at (mdata/files.py stamps it with the wall clock, to the ns, just before it writes)."""
    try:
        name = os.readlink(directory / "..data")
    except OSError:
        return None
    head, _, frac = name.removeprefix("..").partition(".")
    return datetime.strptime(head, "%Y_%m_%d_%H_%M_%S").replace(tzinfo=UTC).timestamp() + float("0." + frac)


@attrs.define
class Change:
    """One meta change, timed from T0 for each instance: when its poller first read the new value
    (``read``, empty when not polled) and when the daemon swapped its files (``swapped``)."""

    read: list[float]
    swapped: list[float]
    took: float  # the trigger's own time: the CLI process, or the API call
    gets_per_s: float  # the pollers' GETs a second, all instances together


async def _change(ips: list[str], want: str, interval: float, trigger, mdata_dir: Path, poll: bool) -> Change:
    seen: dict[str, float] = {}
    polls = 0
    t0 = t0_wall = 0.0

    async def poller(ip: str, started: trio.Event) -> None:
        nonlocal polls
        await trio.sleep(random.random() * interval)  # spread the pollers over one interval
        started.set()
        while True:
            got = await get_color(ip)
            if t0:
                polls += 1
                if got == want:
                    seen[ip] = time.perf_counter() - t0
                    return
            await trio.sleep(interval)

    def all_swapped() -> list[float] | None:
        stamps = [swapped_at(d) for d in mdata_dir.iterdir()]
        if len(stamps) == len(ips) and all(s is not None and s >= t0_wall for s in stamps):
            return [s - t0_wall for s in stamps if s is not None]
        return None

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            if poll:
                events = [trio.Event() for _ in ips]
                for ip, ev in zip(ips, events, strict=True):
                    nursery.start_soon(poller, ip, ev)
                for ev in events:
                    await ev.wait()
                await trio.sleep(interval * 2)  # every poller in its loop
            t0_wall, t0 = time.time(), time.perf_counter()
            await trigger()
            took = time.perf_counter() - t0
        while (swapped := all_swapped()) is None:  # unpolled: the host's files only
            await trio.sleep(0.05)
    elapsed = max(seen.values(), default=0.0)
    return Change([seen[ip] for ip in ips] if poll else [], swapped, took, polls / elapsed if elapsed else 0.0)


def change(ips: list[str], want: str, interval: float, trigger, mdata_dir: Path, poll: bool = True) -> Change:
    result = trio.run(_change, ips, want, interval, trigger, mdata_dir, poll)
    if not poll:  # still: every instance reads it
        wait_answering(ips, want, "mariposa", timeout=60)
    return result


# --- containers ---------------------------------------------------------------------------------

def inspect(ids: list[str]) -> list[dict]:
    fmt = ('{"id": "{{.Id}}", "started": "{{.State.StartedAt}}", "restarts": {{.RestartCount}}, '
           '"running": {{.State.Running}}, '
           '"ip": "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"}')
    out = docker("inspect", "--format", fmt, *ids)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    for row in rows:
        row["ip"] = row["ip"].split()[0] if row["ip"].strip() else ""
    return rows


def started_at(text: str) -> float:
    """The Engine's State.StartedAt as a Unix time (fromisoformat keeps 6 of its 9 digits)."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


def quantiles(values: list[float]) -> tuple[float, float, float]:
    s = sorted(values)
    return statistics.median(s), s[math.ceil(0.99 * len(s)) - 1], s[-1]


# --- the peers -------------------------------------------------------------------------------

def bench_mariposa(n: int, interval: float, tmp: Path) -> dict:
    d = Daemon(tmp).start()
    try:
        manifest = tmp / "bench.yaml"
        manifest.write_text(MANIFEST.replace("scale: N", f"scale: {n}"))
        meta = tmp / "meta.yaml"
        meta.write_text("color: v1\n")
        t = time.perf_counter()
        d.cli("project", "add", "bench", str(manifest), "--meta", str(meta), "--wait", timeout=UP_TIMEOUT)
        wait_until(lambda: len(d.running("web")) == n, timeout=UP_TIMEOUT, interval=1.0, what=f"{n} running")
        before = inspect([c["ID"] for c in d.running("web")])
        ips = [row["ip"] for row in before]
        wait_answering(ips, "v1", "mariposa")
        print(f"mariposa: {n} instances up and answering v1 in {time.perf_counter() - t:.1f} s", flush=True)

        env = {**os.environ, "MARIPOSA_SOCKET": d.socket}
        mariposa = str(Path(sys.executable).with_name("mariposa"))
        mdata_dir = d.run_dir / "mdata" / "bench"

        def by_cli(value: str):
            async def trigger() -> None:
                await trio.run_process([mariposa, "-j", "bench", "meta", "set", "color", value], env=env,
                                       capture_stdout=True, capture_stderr=True)
            return trigger

        async def by_api() -> None:
            import httpx

            transport = httpx.AsyncHTTPTransport(uds=d.socket)
            async with httpx.AsyncClient(transport=transport, base_url="http://m", timeout=60) as c:
                (await c.put("/v1/projects/bench/meta/color", json={"value": "v3"})).raise_for_status()

        changes = {}
        for name, want, trigger, poll in (("cli", "v2", by_cli("v2"), True), ("api", "v3", by_api, True),
                                          ("quiet", "v4", by_cli("v4"), False)):
            changes[name] = change(ips, want, interval, trigger, mdata_dir, poll)
            print(f"mariposa: {name} change swapped in all {n} after {max(changes[name].swapped):.3f} s", flush=True)

        after = {row["id"]: row for row in inspect([row["id"] for row in before])}
        now_running = {c["ID"] for c in d.running("web")}
        same = [row for row in before if row["id"] in now_running and after[row["id"]]["started"] == row["started"]
                and after[row["id"]]["restarts"] == row["restarts"]]
        return {**changes, "kept": len(same), "running": len(now_running)}
    finally:
        d.cleanup()


def bench_compose(n: int, tmp: Path) -> dict:
    compose = shutil.which("docker-compose")
    if not compose:
        raise SystemExit("docker-compose not installed: apt-get install docker-compose")
    path = tmp / "docker-compose.yml"
    project = f"mbenchmdata{os.getpid()}"
    base = [compose, "-p", project, "-f", str(path)]

    def ids() -> list[str]:
        return docker("ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}").split()

    try:
        path.write_text(COMPOSE.format(n=n, color="v1"))
        t = time.perf_counter()
        subprocess.run([*base, "up", "-d"], check=True, capture_output=True, timeout=UP_TIMEOUT)
        wait_until(lambda: len(ids()) == n, timeout=UP_TIMEOUT, interval=1.0, what=f"{n} compose containers")
        old = inspect(ids())
        wait_answering([row["ip"] for row in old], "v1", "compose")
        print(f"compose: {n} containers up and answering v1 in {time.perf_counter() - t:.1f} s", flush=True)

        path.write_text(COMPOSE.format(n=n, color="v2"))
        t0_wall, t0 = time.time(), time.perf_counter()
        subprocess.run([*base, "up", "-d"], check=True, capture_output=True, timeout=UP_TIMEOUT)
        took = time.perf_counter() - t0
        wait_until(lambda: len(ids()) == n, timeout=600, interval=1.0, what=f"{n} new compose containers")
        new = inspect(ids())
        assert not {row["id"] for row in old} & {row["id"] for row in new}, "compose kept a container"
        answers = colors([row["ip"] for row in new])
        assert all(a == "v2" for a in answers), f"compose: not all answer v2: {answers}"
        seen = [started_at(row["started"]) - t0_wall for row in new]
        print(f"compose: redeploy took {took:.3f} s", flush=True)
        return {"seen": seen, "took": took, "replaced": len(new)}
    finally:
        down = subprocess.run([*base, "down", "-t", "1"], capture_output=True, text=True, timeout=UP_TIMEOUT)
        network = f"{project}_default"
        for _ in range(20):  # the Engine may hold an endpoint a moment after its container went
            if not docker("network", "ls", "-q", "--filter", f"name=^{network}$").strip():
                break
            docker("network", "rm", network, check=False)
            time.sleep(1)
        else:
            # Seen on dockerd 20.10 after `down` of 100 containers on a loaded host: the network
            # keeps a count of endpoints no container holds ("has active endpoints") until dockerd
            # restarts (moby/moby#42119). Said out loud: it holds one of the Engine's address pools.
            print(f"compose: network {network} could not be removed ({down.stderr.strip()[-300:]}); "
                  f"remove it with `docker network rm {network}` (after a dockerd restart if need be)",
                  file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100, help="instances (and compose containers)")
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between one poller's GETs")
    args = ap.parse_args()
    ensure_image()
    n = args.count
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="mariposa-bench-mdata-") as t:
        m = bench_mariposa(n, args.interval, Path(t))
    loads.append(os.getloadavg()[0])
    with tempfile.TemporaryDirectory(prefix="mariposa-bench-mdata-") as t:
        c = bench_compose(n, Path(t))
    loads.append(os.getloadavg()[0])

    version = docker("version", "--format", "{{.Server.Version}}").strip()
    print(f"\nA change until {n} instances serve it, seconds from T0 (busybox httpd reading the file inside "
          f"each; dockerd {version}, {os.cpu_count()} cores, 1-min load {min(loads):.1f}-{max(loads):.1f}):")
    print(f"  {'peer':<62} {'p50':>7} {'p99':>7} {'max':>7} {'command':>8}")
    cli, api, quiet = m["cli"], m["api"], m["quiet"]
    rows = [
        ("mariposa -j P meta set color v2 (CLI): read in the instance", cli.read, cli.took),
        ("  the same change: files swapped (host)", cli.swapped, cli.took),
        ("PUT /v1/projects/P/meta/color (API): read in the instance", api.read, api.took),
        ("  the same change: files swapped (host)", api.swapped, api.took),
        ("meta set color v4 (CLI), no pollers: files swapped (host)", quiet.swapped, quiet.took),
        ("docker-compose up -d after COLOR changed (new StartedAt)", c["seen"], c["took"]),
    ]
    for name, seen, took in rows:
        p50, p99, top = quantiles(seen)
        print(f"  {name:<62} {p50:>6.3f}s {p99:>6.3f}s {top:>6.3f}s {took:>7.3f}s")
    print(f"  mariposa: {m['kept']} of {n} instances the same containers, same StartedAt and RestartCount "
          f"({m['running']} running): {n - m['kept']} restarts")
    print(f"  compose: {c['replaced']} of {n} containers replaced")
    print(f"  pollers: asked every {args.interval * 1000:.0f} ms each, achieved {cli.gets_per_s:.0f} GETs/s (CLI "
          f"change) and {api.gets_per_s:.0f} GETs/s (API change) over all {n}: each instance read every "
          f"~{n / cli.gets_per_s * 1000:.0f} / ~{n / api.gets_per_s * 1000:.0f} ms")
    print(f"  mariposa (CLI, read) / compose: p50 {quantiles(cli.read)[0] / quantiles(c['seen'])[0]:.3f}, "
          f"max {max(cli.read) / max(c['seen']):.3f}")
    assert m["kept"] == n, f"mariposa restarted or replaced {n - m['kept']} instances"


if __name__ == "__main__":
    main()
