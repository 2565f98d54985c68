#!/usr/bin/env python3
"""Benchmark: 20 LXC instances from nothing to all answering HTTP, through Mariposa (the daemon,
``project add`` of an ``lx`` service with scale 20), next to the LXC peer (a shell loop of
``lxc-copy`` + ``lxc-start``, each copy given its address in its config) and to 20 Docker instances
(``docker run -d``, 8 at a time) through the same measure.

Run as root on a host with dockerd and LXC (tests/run.sh sets them up):
    .venv/bin/python tests/bench/bench_lxc.py [--rounds 3] [--instances 20]
Prints one table of medians.

How the figures are taken:
- Every peer serves the same busybox ``httpd`` from the suite's image and is timed from the first
  command to the last instance answering ``GET /`` on its own address, polled from the host every
  10 ms. Mariposa's time includes the CLI's start, the version being made and the image's export
  (each round is a fresh daemon with an empty cache); the shell loop's export is made untimed.

Measured on the 2-core host (load 1-5), medians of 3: Mariposa 2.28 s, the lxc-copy + lxc-start
loop 0.81 s, 20 Docker instances 6.72 s.
- The shell loop is what a person would write: ``lxc-copy -s -B overlay`` of a stopped base
  container, a line of config for the copy's address, ``lxc-start``; one after another.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import IMAGE, Daemon, docker, wait_until  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402

HTTPD = "echo hi > /www/index.html && exec httpd -f -p 8080 -h /www"
MANIFEST = f"""
services:
  web:
    image: {IMAGE}
    compute_type: lx
    scale: {{n}}
    command: sh -c '{HTTPD}'
"""


def answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def all_answer(addresses: list[str], t0: float, limit: float = 120) -> float:
    pending = set(addresses)
    while pending:
        pending = {a for a in pending if not answers(a)}
        if pending:
            if time.perf_counter() - t0 > limit:
                raise AssertionError(f"{len(pending)} of {len(addresses)} never answered: {sorted(pending)[:3]}")
            time.sleep(0.01)
    return time.perf_counter() - t0


def bench_mariposa(n: int, tmp: Path) -> float:
    d = Daemon(tmp).start()
    try:
        manifest = tmp / "bench.yaml"
        manifest.write_text(MANIFEST.format(n=n))
        t0 = time.perf_counter()
        d.cli("project", "add", "bench", str(manifest), "--wait", timeout=600)
        insts = wait_until(lambda: [i for i in d.json("-j", "bench", "service", "instances", "web")
                                    if i["state"] == "running" and i["address"]], timeout=60, what="instances")
        took = all_answer([i["address"] for i in insts], t0)
        d.cli("project", "delete", "bench", "--wait", timeout=600)
        return took
    finally:
        d.cleanup()


def bench_shell(n: int, tmp: Path) -> float:
    """lxc-copy + lxc-start of a base container made from the exported image (made untimed)."""
    path = tmp / "lxc"
    path.mkdir()
    rootfs = path / "base" / "rootfs"
    rootfs.mkdir(parents=True)
    cid = docker("create", IMAGE, "true").strip()
    subprocess.run(f"docker export {cid} | tar -x -C {rootfs}", shell=True, check=True)
    docker("rm", cid)
    bridge = "mlxbench0"
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)  # a run interrupted before
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "10.199.0.1/24", "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    subprocess.run(["iptables", "-w", "-I", "DOCKER-USER", "-i", bridge, "-o", bridge, "-j", "ACCEPT"],
                   capture_output=True)
    (path / "base" / "config").write_text(
        f"lxc.uts.name = base\nlxc.rootfs.path = dir:{rootfs}\nlxc.autodev = 1\n"
        "lxc.mount.auto = proc:mixed sys:mixed\n"
        f"lxc.mount.entry = /usr/bin/tini-static sbin/tini none bind,ro,create=file 0 0\n"
        f"lxc.net.0.type = veth\nlxc.net.0.link = {bridge}\nlxc.net.0.flags = up\n"
        "lxc.init.cmd = /sbin/tini -- /httpd.sh\n")  # LXC splits init.cmd on blanks, quotes or not
    (rootfs / "httpd.sh").write_text(f"#!/bin/sh\n{HTTPD}\n")
    (rootfs / "httpd.sh").chmod(0o755)
    script = "\n".join(
        f"lxc-copy -P {path} -n base -N c{i} -s -B overlay && "
        f"echo 'lxc.net.0.ipv4.address = 10.199.0.{i + 10}/24' >> {path}/c{i}/config && "
        f"lxc-start -P {path} -n c{i}" for i in range(n))
    try:
        t0 = time.perf_counter()
        subprocess.run(["sh", "-ec", script], check=True, capture_output=True)
        return all_answer([f"10.199.0.{i + 10}" for i in range(n)], t0)
    finally:
        for i in range(n):
            subprocess.run(["lxc-stop", "-P", str(path), "-n", f"c{i}", "-k"], capture_output=True)
        subprocess.run(["iptables", "-w", "-D", "DOCKER-USER", "-i", bridge, "-o", bridge, "-j", "ACCEPT"],
                       capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def bench_docker(n: int, tmp: Path) -> float:
    net = f"mlxbench-{tmp.name[-8:]}"
    docker("network", "create", net)
    names = [f"{net}-{i}" for i in range(n)]
    try:
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: docker("run", "-d", "--init", "--name", name, "--network", net, IMAGE,
                                              "sh", "-c", HTTPD), names))
        info = json.loads(docker("inspect", *names))
        addresses = [c["NetworkSettings"]["Networks"][net]["IPAddress"] for c in info]
        return all_answer(addresses, t0)
    finally:
        docker("rm", "-f", *names, check=False)
        docker("network", "rm", net, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=20)
    args = parser.parse_args()
    ensure_image()
    peers = {"mariposa (lx, scale N)": bench_mariposa, "lxc-copy + lxc-start loop": bench_shell,
             "docker run -d, 8 at a time": bench_docker}
    results: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(args.rounds):
        for name, fn in peers.items():
            tmp = Path(tempfile.mkdtemp(prefix="bench-lxc-"))
            try:
                results[name].append(fn(args.instances, tmp))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.instances} instances from nothing to all answering HTTP (median of {args.rounds}):")
    for name, times in results.items():
        print(f"  {name:30} {statistics.median(times):6.2f} s   {[round(t, 2) for t in times]}")


if __name__ == "__main__":
    main()
