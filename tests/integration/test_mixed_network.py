"""Issue 14, one project network across runtimes: Docker containers and LXC containers of one
project share one bridge (mariposa/bridges.py) with one address plan, and find each other by
service name through the daemon's DNS responder (mariposa/dns/)."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import threading
import time

import pytest

from tests.integration.harness import IMAGE, Daemon, docker, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.lxc]

MANIFEST = f"""
services:
  web:
    image: {IMAGE}
    scale: 2
    command: sh -c 'mkdir -p /www && echo web-$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www'
  db:
    image: {IMAGE}
    compute_type: lx
    scale: 1
    command: sh -c 'mkdir -p /www && echo db-$HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www'
"""
ADDRESS = re.compile(r"Address(?: \d+)?:\s+(10\.\d+\.\d+\.\d+)")


def running(daemon: Daemon, service: str) -> list[dict]:
    return [i for i in daemon.json("-j", "mix", "service", "instances", service) if i["state"] == "running"]


def in_lxc(daemon: Daemon, name: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["lxc-attach", "-P", str(daemon.state_dir / "lxc"), "-n", name, "--", *argv],
                          capture_output=True, text=True, timeout=30)


def lookups(container: str, name: str, seen: list[tuple[float, int]], stop: threading.Event) -> None:
    """A loop of lookups inside the container, every 50 ms: (when, how many addresses) each."""
    proc = subprocess.Popen(["docker", "exec", container, "sh", "-c",
                             f"while :; do nslookup {name} 2>&1; echo END; sleep 0.05; done"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    found: set[str] = set()
    try:
        for line in proc.stdout:
            if line.strip() == "END":
                seen.append((time.monotonic(), len(found)))
                found = set()
                if stop.is_set():
                    break
            else:
                found.update(m.group(1) for m in ADDRESS.finditer(line))
    finally:
        proc.kill()
        proc.wait()


def test_docker_and_lxc_instances_share_one_bridge_and_find_each_other_by_name(daemon: Daemon, tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text(MANIFEST)
    daemon.cli("project", "add", "mix", str(path), "--wait")
    project_id = daemon.json("project", "get", "mix")["id"]
    bridge = f"mlx{project_id[:12]}"
    webs, dbs = running(daemon, "web"), running(daemon, "db")
    assert len(webs) == 2 and len(dbs) == 1

    # one bridge, one subnet: Docker's addresses from its lower half, LXC's from the upper half
    subnet = ipaddress.ip_network(subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", bridge], check=True,
                                                 capture_output=True, text=True).stdout.split()[3], strict=False)
    lower, upper = subnet.subnets(prefixlen_diff=1)
    assert all(ipaddress.ip_address(w["address"]) in lower for w in webs)
    assert all(ipaddress.ip_address(d["address"]) in upper for d in dbs)
    network = docker("network", "inspect", "-f", '{{index .Options "com.docker.network.bridge.name"}}',
                     f"mariposa-mix-{project_id[:8]}").strip()
    assert network == bridge

    # web (Docker) fetches db (LXC) by name, and db fetches web by name
    for web in webs:
        answer = wait_until(lambda web=web: docker("exec", web["runtime_id"], "wget", "-qO-",
                                                   "http://db:8080/", check=False).strip() or None,
                            timeout=20, what=f"{web['name']} to reach db by name")
        assert answer == f"db-{dbs[0]['name']}"
    got = wait_until(lambda: in_lxc(daemon, dbs[0]["runtime_id"], "wget", "-qO-", "http://web/").stdout
                     .strip() or None, timeout=20, what="db to reach web by name")
    assert got in {f"web-{w['runtime_id'][:12]}" for w in webs} | {f"web-{w['name']}" for w in webs}
    # SERVICE.PROJECT and an instance's own name, from either side
    assert in_lxc(daemon, dbs[0]["runtime_id"], "wget", "-qO-", "http://web.mix/").returncode == 0
    named = docker("exec", webs[0]["runtime_id"], "nslookup", dbs[0]["name"], check=False)
    assert dbs[0]["address"] in ADDRESS.findall(named)

    # scale db to 3: a loop of lookups inside web sees the 3 addresses soon after the scale is done
    seen: list[tuple[float, int]] = []
    stop = threading.Event()
    loop = threading.Thread(target=lookups, args=(webs[0]["runtime_id"], "db", seen, stop), daemon=True)
    loop.start()
    wait_until(lambda: seen, timeout=10, what="the first lookup")
    daemon.cli("-j", "mix", "service", "scale", "db", "3", "--wait")
    done = time.monotonic()
    wait_until(lambda: any(n == 3 for _, n in seen), timeout=10, what="3 addresses for db in web's lookups")
    stop.set()
    first = next(t for t, n in seen if n == 3)
    print(f"3 addresses in web's lookups {first - done:+.3f} s after the scale finished")
    assert first - done < 2.0, f"3 addresses {first - done:.2f} s after the scale finished (design: under 1 s)"
    assert {d["address"] for d in running(daemon, "db")} <= set(ADDRESS.findall(
        docker("exec", webs[0]["runtime_id"], "nslookup", "db", check=False)))

    # delete: no bridge, no iptables rule, no zone (nothing answers on the gateway any more)
    gateway = str(next(subnet.hosts()))
    daemon.cli("project", "delete", "mix", "--wait")
    assert bridge not in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert bridge not in subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    assert not list((daemon.state_dir / "networks").glob("*.json"))
    wait_until(lambda: f"{gateway}:53" not in subprocess.run(["ss", "-uln"], capture_output=True, text=True).stdout,
               timeout=5, what="the responder to close the project's socket")
