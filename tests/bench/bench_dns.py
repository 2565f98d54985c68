#!/usr/bin/env python3
"""Benchmark: the project DNS responder (mariposa/dns/) next to Docker's embedded DNS.

Run as root on a host with dockerd and LXC (tests/run.sh sets them up):
    .venv/bin/python tests/bench/bench_dns.py [--queries 500] [--rounds 5]

A project with ``web`` (Docker, scale 2) and ``db`` (LXC, scale 1) runs on a fresh daemon.
- **Lookup latency, from inside an instance**: a client in the network namespace of a ``web``
  container (``nsenter -n``, the host's Python) sends A queries one after another and times each:
  ``db`` through Docker's embedded DNS (127.0.0.11, which forwards to the responder: a Docker
  instance's path), ``db`` asked of the responder directly (an LXC instance's or a VM's path), and
  the peer: a ``web`` instance's own name, which Docker's embedded DNS answers itself.
- **Scale to answers**: ``service scale db 3 --wait`` then back to 1, each round; a client on the
  host asks the responder every 5 ms and the time is from the command's return to the first
  answer with the new count (negative: the answer changed before the CLI returned). The peer:
  ``docker run -d --network-alias`` of one more container on the same network, timed from its
  return to Docker's embedded DNS answering with the new count.

Measured on the 2-core host (load 1-3), 500 queries, 5 rounds: see the closing note of issue 14.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.message
import dns.query

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.harness import IMAGE, Daemon, docker, wait_until  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402

MANIFEST = f"""
services:
  web:
    image: {IMAGE}
    scale: 2
    command: sh -c 'mkdir -p /www && echo web > /www/index.html && exec httpd -f -p 80 -h /www'
  db:
    image: {IMAGE}
    compute_type: lx
    scale: 1
    command: sh -c 'mkdir -p /www && echo db > /www/index.html && exec httpd -f -p 8080 -h /www'
"""

# Run inside the container's network namespace: times N lookups of each (name, server).
CLIENT = r"""
import json, sys, time
import dns.message, dns.query
n, cases = int(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for label, name, server in cases:
    times = []
    for _ in range(n):
        q = dns.message.make_query(name, "A")
        t = time.perf_counter()
        r = dns.query.udp(q, server, timeout=2)
        times.append((time.perf_counter() - t) * 1000)
        assert r.answer, (label, r)
    out[label] = times
print(json.dumps(out))
"""


# Run inside the container's network namespace: polls Docker's DNS every 5 ms until ``peer`` has
# the wanted count of addresses, then prints when (CLOCK_MONOTONIC: the same in every namespace).
POLLER = r"""
import sys, time
import dns.message, dns.query
want = int(sys.argv[1])
print("ready", flush=True)
while True:
    try:
        r = dns.query.udp(dns.message.make_query("peer", "A"), "127.0.0.11", timeout=0.5)
        if sum(len(a) for a in r.answer) == want:
            break
    except Exception:
        pass
    time.sleep(0.005)
print(time.monotonic(), flush=True)
"""


def count(name: str, server: str) -> int:
    try:
        r = dns.query.udp(dns.message.make_query(name, "A"), server, timeout=0.5)
    except Exception:
        return -1
    return sum(len(rrset) for rrset in r.answer)


def in_netns(pid: str, *argv: str) -> str:
    return subprocess.run(["nsenter", "-t", pid, "-n", *argv], check=True, capture_output=True, text=True).stdout


def until_count(probe, want: int, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe() == want:
            return time.monotonic()
        time.sleep(0.005)
    raise AssertionError(f"never saw {want} addresses")


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ensure_image()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dns-"))
    daemon = Daemon(tmp).start()
    peers: list[str] = []
    try:
        (tmp / "mix.yaml").write_text(MANIFEST)
        daemon.cli("project", "add", "mix", str(tmp / "mix.yaml"), "--wait")
        project = daemon.json("project", "get", "mix")
        webs = [i for i in daemon.json("-j", "mix", "service", "instances", "web") if i["state"] == "running"]
        network = f"mariposa-mix-{project['id'][:8]}"
        gateway = json.loads(docker("network", "inspect", network))[0]["IPAM"]["Config"][0]["Gateway"]
        pid = docker("inspect", "-f", "{{.State.Pid}}", webs[0]["runtime_id"]).strip()
        wait_until(lambda: count("db", gateway) == 1, timeout=20, what="db in the responder's answers")

        cases = [("db via Docker's DNS -> responder", "db", "127.0.0.11"),
                 ("db via the responder (LXC/VM path)", "db", gateway),
                 ("peer: Docker's DNS, its own alias", webs[1]["name"], "127.0.0.11")]
        lat = json.loads(in_netns(pid, sys.executable, "-c", CLIENT, str(args.queries), json.dumps(cases)))

        ups, downs = [], []  # (from the command's start, from its return)
        for _ in range(args.rounds):
            for want, into in ((3, ups), (1, downs)):
                returned: list[float] = []
                cli = threading.Thread(target=lambda want=want, returned=returned: (
                    daemon.cli("-j", "mix", "service", "scale", "db", str(want), "--wait"),
                    returned.append(time.monotonic())))
                issued = time.monotonic()
                cli.start()
                seen = until_count(lambda want=want: count("db", gateway), want)
                cli.join()
                into.append((seen - issued, seen - returned[0]))

        peer_ups = []
        for i in range(args.rounds):
            name = f"bench-dns-peer-{i}"
            poller = subprocess.Popen(["nsenter", "-t", pid, "-n", sys.executable, "-c", POLLER, str(i + 1)],
                                      stdout=subprocess.PIPE, text=True)
            assert poller.stdout is not None and poller.stdout.readline().strip() == "ready"
            issued = time.monotonic()
            docker("run", "-d", "--name", name, "--network", network, "--network-alias", "peer", IMAGE, "sleep", "600")
            returned = time.monotonic()
            peers.append(name)
            seen = float(poller.stdout.readline())
            peer_ups.append((seen - issued, seen - returned))
            poller.wait()

        print(f"{'lookup (from inside a web container)':44} {'p50 ms':>8} {'p99 ms':>8}")
        for label, times in lat.items():
            print(f"{label:44} {statistics.median(times):8.3f} {pct(times, 0.99):8.3f}")
        print()
        print(f"{'a change in the answers, s after the command':40} {'start: median':>14} {'max':>7} "
              f"{'return: median':>15} {'max':>7}")
        for label, pairs in (("Mariposa: scale db 1 -> 3", ups), ("Mariposa: scale db 3 -> 1", downs),
                             ("peer: docker run --network-alias", peer_ups)):
            starts, returns = [p[0] for p in pairs], [p[1] for p in pairs]
            print(f"{label:40} {statistics.median(starts):14.3f} {max(starts):7.3f} "
                  f"{statistics.median(returns):+15.3f} {max(returns):+7.3f}")
    finally:
        for name in peers:
            docker("rm", "-f", name, check=False)
        daemon.cli("project", "delete", "mix", "--wait", check=False)
        daemon.cleanup()


if __name__ == "__main__":
    main()
