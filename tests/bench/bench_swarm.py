#!/usr/bin/env python3
"""Benchmark: Mariposa's Swarm client (mariposa/swarm/) next to the docker CLI on the same Swarm:
scaling a service 1 -> 20 tasks, and a rolling update of 10 tasks two at a time.

Run as root on a host whose engine is a Swarm manager (``docker swarm init --advertise-addr
127.0.0.1``):
    .venv/bin/python tests/bench/bench_swarm.py [--rounds 3] [--scale 20] [--roll 10]
Prints one table; every figure is a median over the rounds.

How the figures are taken:
- Both sides run the same service: the test image's httpd under ``--init``, ``endpoint_mode
  dnsrr`` on an attachable overlay of the benchmark's (this kernel has no IPVS, so no VIP), the
  same stop grace (10 s) and the same update settings (parallelism 2, delay 0, monitor 1 s,
  start-first, failure action pause). Mariposa's side is ``mariposa.swarm.spec.swarm_service``
  sent through ``SwarmClient``.
- Scale: from 1 running task, timed until 20 tasks run (``GET /tasks``, polled every 50 ms).
  Mariposa: ``SwarmClient.scale_service`` (read the spec, write it back at its version) then the
  poll. The peer twice: ``docker service scale -d`` then the same poll (the Engine's own speed
  through the CLI), and plain ``docker service scale``, which is what a user waits for: it
  returns once converged *and* stable for 5 s (the CLI's own check).
- Rolling update: an environment change, timed until every task runs the new spec and the
  service's ``UpdateStatus`` says completed. Mariposa: ``update_service`` at the version read.
  The peer: ``docker service update --env-add ... --update-parallelism 2 --update-delay 0s
  --update-monitor 1s``: when the CLI returns, and when the service's UpdateStatus says completed
  (the CLI returns once every task runs the new spec, before the last batch's monitor time is out).
  Both also by the Engine's own clock: ``UpdateStatus.CompletedAt - StartedAt``.
- Everything is named ``mbench-*`` and removed at the end; the swarm itself is left alone.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from functools import partial
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mariposa.model import LABEL_OWNER, PortSpec, ServiceSpec  # noqa: E402
from mariposa.swarm import SwarmClient  # noqa: E402
from mariposa.swarm.spec import overlay_name, swarm_service  # noqa: E402
from tests.integration.harness import IMAGE, docker  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402

HTTPD = "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www"
PROJECT_ID = "be9c4000111122223333"
MONITOR = 1.0
POLL = 0.05


def spec(round_: int) -> ServiceSpec:
    return ServiceSpec(name="web", image=IMAGE, image_id=docker("image", "inspect", "-f", "{{.Id}}", IMAGE).strip(),
                       command=("sh", "-c", HTTPD), endpoint_mode="dnsrr", stop_timeout=10,
                       min_healthy_time=MONITOR, environment=(("ROUND", str(round_)),), ports=(PortSpec(80),))


async def converged(client: SwarmClient, service: str, count: int, env: str | None = None,
                    update: bool = False) -> None:
    while True:
        tasks = [t for t in await client.tasks(service=service) if t["Status"]["State"] == "running"]
        fresh = [t for t in tasks if env is None or f"ROUND={env}" in t["Spec"]["ContainerSpec"].get("Env", [])]
        if len(fresh) == count == len(tasks):
            if not update:
                return
            current = await client.inspect_service(service)
            if current and (current.get("UpdateStatus") or {}).get("State") == "completed":
                return
        await trio.sleep(POLL)


async def engine_update_seconds(client: SwarmClient, service: str) -> float:
    """The Engine's own account of the last update: UpdateStatus.CompletedAt - StartedAt."""
    from mariposa.drivers.docker import _parse_created

    status = ((await client.inspect_service(service)) or {}).get("UpdateStatus") or {}
    return _parse_created(status.get("CompletedAt")) - _parse_created(status.get("StartedAt"))


def cli_create(name: str, network: str, replicas: int) -> None:
    subprocess.run(["docker", "service", "create", "-q", "-d", "--name", name, "--no-resolve-image", "--init",
                    "--endpoint-mode", "dnsrr", "--network", network, "--replicas", str(replicas),
                    "--publish", "mode=host,target=80", "--stop-grace-period", "10s",
                    "--update-parallelism", "2", "--update-delay", "0s", "--update-monitor", f"{MONITOR:g}s",
                    "--update-order", "start-first", "--update-failure-action", "pause",
                    "--env", "ROUND=0", "--label", "mbench=1", IMAGE, "sh", "-c", HTTPD],
                   check=True, capture_output=True)


async def cli(*args: str) -> None:
    """One docker CLI command, waited for in a worker thread."""
    await trio.to_thread.run_sync(partial(subprocess.run, ["docker", *args], check=True, capture_output=True))


def remove(name: str) -> None:
    subprocess.run(["docker", "service", "rm", name], capture_output=True)


async def one_round(client: SwarmClient, owner: str, network: str, n: int, roll: int, index: int) -> dict[str, float]:
    out: dict[str, float] = {}
    # ---- Mariposa's client: scale, then roll
    name = f"mbench-m-{owner[-6:]}-{index}"
    body = swarm_service(owner, PROJECT_ID, "mbench", "v0", spec(0), 1, rolling=2, name=name).body
    service = await client.create_service(body)
    await converged(client, service, 1)
    t0 = time.perf_counter()
    await client.scale_service(service, n)
    await converged(client, service, n)
    out["scale: mariposa"] = time.perf_counter() - t0
    await client.scale_service(service, roll)
    await converged(client, service, roll)
    current = await client.inspect_service(service)
    assert current is not None
    rolled = swarm_service(owner, PROJECT_ID, "mbench", "v1", spec(1), roll, rolling=2, name=name).body
    t0 = time.perf_counter()
    await client.update_service(service, current["Version"]["Index"], rolled)
    await converged(client, service, roll, env="1", update=True)
    out["roll: mariposa"] = time.perf_counter() - t0
    out["roll (engine): mariposa"] = await engine_update_seconds(client, service)
    await client.remove_service(service)

    # ---- the docker CLI: scale -d + the same poll, plain scale, then update
    for detached in (True, False):
        peer = f"mbench-c-{owner[-6:]}-{index}-{'d' if detached else 'w'}"
        await trio.to_thread.run_sync(cli_create, peer, network, 1)
        await converged(client, peer, 1)
        t0 = time.perf_counter()
        await cli("service", "scale", *(["-d"] if detached else []), f"{peer}={n}")
        if detached:
            await converged(client, peer, n)
        out["scale: docker service scale" + (" -d + poll" if detached else "")] = time.perf_counter() - t0
        if not detached:
            await converged(client, peer, n)
            await cli("service", "scale", "-d", f"{peer}={roll}")
            await converged(client, peer, roll)
            t0 = time.perf_counter()
            await cli("service", "update", "--env-add", "ROUND=1", "--update-parallelism", "2", "--update-delay", "0s",
                      "--update-monitor", f"{MONITOR:g}s", peer)
            out["roll: docker service update"] = time.perf_counter() - t0
            await converged(client, peer, roll, env="1", update=True)
            out["roll: docker service update, until completed"] = time.perf_counter() - t0
            out["roll (engine): docker service update"] = await engine_update_seconds(client, peer)
        remove(peer)
    return out


async def main(rounds: int, n: int, roll: int) -> None:
    owner = f"mbench-{uuid.uuid4().hex[:8]}"
    network = overlay_name("mbench", PROJECT_ID)
    async with SwarmClient() as client:
        ok, why = await client.swarm_state()
        if not ok:
            raise SystemExit(f"bench_swarm needs a Swarm manager: {why}")
        net = await client.ensure_overlay(network, {LABEL_OWNER: owner})
        figures: dict[str, list[float]] = {}
        try:
            for index in range(rounds):
                for key, value in (await one_round(client, owner, network, n, roll, index)).items():
                    figures.setdefault(key, []).append(value)
                print(f"round {index + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in figures.items()),
                      file=sys.stderr)
        finally:
            for service in await client.services({LABEL_OWNER: owner}):
                await client.remove_service(service["ID"])
            for service in await client.services({"mbench": "1"}):
                await client.remove_service(service["ID"])
            with trio.move_on_after(60):
                while True:
                    try:
                        await client.remove_network(net)
                        break
                    except Exception:  # noqa: BLE001 - the tasks' endpoints are still going
                        await trio.sleep(0.5)
    print(f"\nSwarm (single node, this host), median of {rounds} rounds; httpd under --init, dnsrr, host-mode port")
    print(f"{'':44} {'seconds':>8}")
    for key in ("scale: mariposa", "scale: docker service scale -d + poll", "scale: docker service scale"):
        print(f"scale 1 -> {n:<3} {key.split(': ')[1]:<32} {statistics.median(figures[key]):8.2f}")
    for key in ("roll: mariposa", "roll: docker service update", "roll: docker service update, until completed",
                "roll (engine): mariposa", "roll (engine): docker service update"):
        what = ("engine's UpdateStatus, " if "engine" in key else "") + key.split(": ")[1]
        print(f"roll {roll} by 2, monitor {MONITOR:g} s  {what:<44} {statistics.median(figures[key]):8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--roll", type=int, default=10)
    args = parser.parse_args()
    ensure_image()
    from mariposa import logs

    logs.configure("console", "warning")
    trio.run(main, args.rounds, args.scale, args.roll)
