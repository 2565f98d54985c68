"""Issue 14 through the real daemon: an `lx` service runs as LXC system containers (drivers/lxc.py)
from the exported busybox test image, answers on its own address, and is supervised like a Docker
service (restart: always brings back a killed init)."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest

from tests.integration.harness import IMAGE, Daemon, docker, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.lxc]

MANIFEST = f"""
services:
  db:
    image: {IMAGE}
    compute_type: lx
    scale: {{scale}}
    restart: always
    command: sh -c 'echo db-$HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www'
"""


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return None


def lxc_running(daemon: Daemon) -> list[str]:
    return subprocess.run(["lxc-ls", "-P", str(daemon.state_dir / "lxc"), "--running"], capture_output=True,
                          text=True, check=True).stdout.split()


def instances(daemon: Daemon) -> list[dict]:
    return daemon.json("-j", "lx", "service", "instances", "db")


def test_an_lx_service_runs_scaled_on_lxc_reachable_by_address_and_restarted_when_killed(daemon: Daemon, tmp_path):
    path = tmp_path / "lx.yaml"
    path.write_text(MANIFEST.format(scale=2))
    t0 = time.monotonic()
    daemon.cli("project", "add", "lx", str(path), "--wait")
    took = time.monotonic() - t0
    running = [i for i in instances(daemon) if i["state"] == "running"]
    assert len(running) == 2 and {i["compute_type"] for i in running} == {"infrastructure"}
    assert len({i["address"] for i in running}) == 2  # one address each, on the project's bridge
    for inst in running:
        answer = wait_until(lambda inst=inst: get(f"http://{inst['address']}:8080/"), timeout=20,
                            what=f"httpd of {inst['name']}")
        assert answer.strip() == f"db-{inst['name']}"
    # LXC's own view: the containers are under the daemon's LXC path, nowhere in Docker
    assert sorted(lxc_running(daemon)) == sorted(i["name"] for i in running) and daemon.containers() == []

    # the containers outlive a daemon SIGKILL, and the next daemon adopts them: no new ones
    daemon.kill()
    assert sorted(lxc_running(daemon)) == sorted(i["name"] for i in running)
    daemon.start()
    time.sleep(3)  # a resync or two (--resync 2): time to make a wrong extra one, were it to
    assert sorted(i["id"] for i in instances(daemon) if i["state"] == "running") == sorted(i["id"] for i in running)
    assert sorted(lxc_running(daemon)) == sorted(i["name"] for i in running)

    victim = running[0]
    subprocess.run(["lxc-stop", "-P", str(daemon.state_dir / "lxc"), "-n", victim["runtime_id"], "-k"], check=True)

    def back() -> dict | None:
        now = {i["id"]: i for i in instances(daemon)}
        found = now.get(victim["id"])
        return found if found and found["state"] == "running" and found["restarts"] >= 1 else None

    again = wait_until(back, timeout=30, what="the killed instance restarted in place")
    assert wait_until(lambda: get(f"http://{again['address']}:8080/"), timeout=20, what="httpd again")

    daemon.cli("project", "delete", "lx", "--wait")
    assert wait_until(lambda: not any((daemon.state_dir / "lxc").glob("lx-*")), timeout=30, what="no containers")
    print(f"project add of 2 LXC instances (incl. the image export): {took:.2f} s")


HEALTHY = f"""services:
  db:
    image: {IMAGE}
    compute_type: lx
    scale: 3
    min_healthy_time: 1
    environment:
      COLOR: {{color}}
    command: sh -c 'echo $COLOR > /www/index.html && echo ok > /www/health.txt && exec httpd -f -p 8080 -h /www'
    healthchecks:
      - type: http
        port: 8080
        path: /health.txt
        poll: 0.3
        retries: 2
        timeout: 2
"""


def serving(daemon: Daemon) -> list[dict]:
    return [i for i in daemon.api("/v1/projects/lx/services/db/instances") if i["state"] == "running"
            and not i["retired"]]


def test_lx_rolling_update_keeps_scale_answering_and_an_unhealthy_instance_is_replaced(daemon: Daemon, tmp_path):
    import threading

    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    v1.write_text(HEALTHY.format(color="blue"))
    v2.write_text(HEALTHY.format(color="green"))
    daemon.cli("project", "add", "lx", str(v1), "--wait")
    wait_until(lambda: len(serving(daemon)) == 3, timeout=30, what="3 instances")
    low: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            try:
                addrs = [i["address"] for i in serving(daemon)]
            except Exception:  # noqa: BLE001 - a sample the API could not give is no sample
                continue
            low.append(sum(1 for a in addrs if get(f"http://{a}:8080/")))
            stop.wait(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        daemon.cli("project", "update", "lx", str(v2), "--rolling", "1", "--wait")
    finally:
        stop.set()
        prober.join()
    assert len(low) >= 5 and min(low) >= 3, low  # scale ready instances throughout
    final = serving(daemon)
    assert len(final) == 3 and {get(f"http://{i['address']}:8080/").strip() for i in final} == {"green"}

    # an instance whose check fails is replaced by a new one
    sick = final[0]
    subprocess.run(["lxc-attach", "-P", str(daemon.state_dir / "lxc"), "-n", sick["runtime_id"], "--",
                    "rm", "/www/health.txt"], check=True)

    def replaced() -> bool:
        now = serving(daemon)
        return len(now) == 3 and sick["id"] not in {i["id"] for i in now}

    wait_until(replaced, timeout=60, what="the unhealthy instance replaced")
    assert sorted(lxc_running(daemon)) == sorted(i["name"] for i in serving(daemon))


def test_lx_logs_through_the_cli_and_a_missing_template_is_refused_when_the_version_is_made(daemon: Daemon,
                                                                                              tmp_path):
    path = tmp_path / "talk.yaml"
    path.write_text(f"""services:
  talk:
    image: {IMAGE}
    compute_type: smartmachine
    command: sh -c 'echo hello-from-lxc; echo to-stderr >&2; exec sleep 3600'
""")
    daemon.cli("project", "add", "lx", str(path), "--wait")
    lines = wait_until(lambda: (out := daemon.cli("-j", "lx", "service", "logs", "talk", "--no-log-prefix").stdout)
                       and len(out.splitlines()) >= 2 and out.splitlines(), timeout=20, what="two lines logged")
    assert sorted(lines) == ["hello-from-lxc", "to-stderr"]

    # no command: the image's /sbin/init runs, as in a system container, and its console is the log
    rootfs = tmp_path / "rootfs"  # the test image's files, and an init of its own that talks
    rootfs.mkdir()
    container = docker("create", IMAGE, "true").strip()
    try:
        subprocess.run(f"docker export {container} | tar -x -C {rootfs}", shell=True, check=True)
    finally:
        docker("rm", container)
    # as a system init does, it writes to the console (its own stdout is /dev/null under lxc-start)
    (rootfs / "sbin" / "init").write_text("#!/bin/sh\nexec >/dev/console 2>&1\necho init-says-hello\n"
                                          "exec sleep 3600\n")
    (rootfs / "sbin" / "init").chmod(0o755)
    system = tmp_path / "system.yaml"
    system.write_text(f"services:\n  box:\n    image: {rootfs}\n    compute_type: infrastructure\n")
    daemon.cli("project", "add", "sys", str(system), "--wait")
    console = wait_until(lambda: "init-says-hello" in (out := daemon.cli(
        "-j", "sys", "service", "logs", "box", "--no-log-prefix").stdout) and out, timeout=20, what="init's console")
    assert "\r" not in console

    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  db:\n    image: template:no-such-one\n    compute_type: lx\n    command: sh\n")
    refused = daemon.cli("project", "add", "nope", str(bad), check=False)
    assert refused.returncode != 0 and "no-such-one" in refused.stderr, refused.stderr
    assert daemon.json("project", "list") and not any(p["name"] == "nope" for p in daemon.json("project", "list"))


def lxc_dirs(daemon: Daemon) -> list[str]:
    """Instance directories under the LXC path (each holds its overlay upper dir), made, half made
    or half removed (renamed into .removing, not yet deleted)."""
    root = daemon.state_dir / "lxc"
    layout = ("images", "networks", "volumes", ".removing")
    made = [d.name for d in root.iterdir() if d.is_dir() and d.name not in layout]
    gone = [f".removing/{d.name}" for d in (root / ".removing").iterdir()] if (root / ".removing").exists() else []
    return sorted(made + gone)


def test_sigkill_during_an_lx_scale_then_restart_ends_at_exactly_six_with_every_overlay_dir_accounted_for(
        daemon: Daemon, tmp_path):
    path = tmp_path / "lx.yaml"
    path.write_text(MANIFEST.format(scale=1))
    daemon.cli("project", "add", "lx", str(path), "--wait")
    daemon.cli("-j", "lx", "service", "scale", "db", "6")
    wait_until(lambda: len(lxc_dirs(daemon)) >= 2, timeout=30, interval=0.005, what="the scale to begin")
    daemon.kill()  # mid-scale: the restart must end at exactly 6 whatever was under way
    daemon.start()
    wait_until(lambda: len([i for i in instances(daemon) if i["state"] == "running"]) == 6, timeout=60,
               what="6 running instances")
    time.sleep(3)  # a resync later: still exactly 6, nothing orphaned or duplicated
    running = sorted(i["name"] for i in instances(daemon) if i["state"] == "running")
    assert len(running) == 6 and sorted(lxc_running(daemon)) == running
    assert lxc_dirs(daemon) == running  # no overlay dir of an instance nobody knows
    bridge = f"mlx{daemon.json('project', 'get', 'lx')['id'][:12]}"
    assert bridge in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    daemon.cli("project", "delete", "lx", "--wait")
    # project delete: no containers, no overlay dirs, no bridge, no iptables rule
    assert lxc_dirs(daemon) == [] and not list((daemon.state_dir / "networks").glob("*.json"))
    assert bridge not in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert bridge not in subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
