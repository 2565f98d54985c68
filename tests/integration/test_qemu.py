"""Issue 15 through the real daemon: a ``vm`` service runs as QEMU virtual machines (drivers/qemu.py,
TCG on this host) from the busybox test image, on the project's bridge beside Docker and LXC
instances, found by name, supervised like any other service, and adopted after a daemon SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from mariposa.drivers.qemu import _pid_of
from tests.integration.harness import IMAGE, Daemon, docker, sampling, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.lxc, pytest.mark.qemu]

HTTPD = "mkdir -p /www && echo {name}-$(hostname) > /www/index.html && exec httpd -f -p {port} -h /www"
MIXED = f"""
services:
  web:
    image: {IMAGE}
    scale: 1
    command: sh -c '{HTTPD.format(name="web", port=80)}'
  db:
    image: {IMAGE}
    compute_type: lx
    command: sh -c '{HTTPD.format(name="db", port=8080)}'
  batch:
    image: {IMAGE}
    compute_type: vm
    scale: {{scale}}
    restart: always
    command: sh -c '{HTTPD.format(name="batch", port=8080)}'
"""


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.read().decode()
    except OSError:
        return None


def vms(daemon: Daemon, project: str = "mix", service: str = "batch") -> list[dict]:
    return [i for i in daemon.json("-j", project, "service", "instances", service) if i["state"] == "running"]


def qemu_pids(daemon: Daemon) -> dict[str, int]:
    root = daemon.state_dir / "qemu"
    if not root.is_dir():
        return {}
    return {d.name: pid for d in root.iterdir() if (pid := _pid_of(d)) is not None}


def uptime(pid: int) -> float:
    """Seconds since the process started (from /proc: clock ticks since boot)."""
    with open(f"/proc/{pid}/stat") as f:
        started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - started


def test_a_vm_service_beside_docker_and_lxc_finds_them_by_name_and_survives_the_daemon(daemon: Daemon, tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text(MIXED.format(scale=1))
    daemon.cli("project", "add", "mix", str(path), "--wait", timeout=600)
    (vm,) = vms(daemon)
    (web,) = [i for i in daemon.json("-j", "mix", "service", "instances", "web") if i["state"] == "running"]
    assert vm["compute_type"] == "kvm"
    answer = wait_until(lambda: get(f"http://{vm['address']}:8080/"), timeout=60, what="the VM's httpd")
    assert answer.startswith("batch-")
    # web (Docker) fetches the VM's httpd by name; the VM fetches web and db by name
    assert wait_until(lambda: docker("exec", web["runtime_id"], "wget", "-qO-", "http://batch:8080/",
                                     check=False).strip() or None, timeout=30, what="web -> batch") == answer.strip()
    code, out = exec_in(daemon, vm, "wget -qO- http://web/")
    assert code == 0 and out.startswith("web-"), out
    code, out = exec_in(daemon, vm, "wget -qO- http://db:8080/")
    assert code == 0 and out.startswith("db-"), out

    # scale 2: two VMs on distinct addresses
    daemon.cli("-j", "mix", "service", "scale", "batch", "2", "--wait", timeout=600)
    two = vms(daemon)
    assert len(two) == 2 and len({v["address"] for v in two}) == 2

    # a daemon SIGKILL leaves the VMs running (their uptime goes on); the next daemon adopts them
    before = qemu_pids(daemon)
    assert len(before) == 2
    ages = {name: uptime(pid) for name, pid in before.items()}
    daemon.kill()
    time.sleep(2)
    assert qemu_pids(daemon) == before
    daemon.start()
    time.sleep(4)  # two resyncs (--resync 2): time to make a wrong extra one, were it to
    assert qemu_pids(daemon) == before
    assert all(uptime(pid) > ages[name] + 4 for name, pid in before.items())
    assert sorted(v["id"] for v in vms(daemon)) == sorted(v["id"] for v in two)

    # restart: always: a kill -9 of the qemu process brings it back
    victim = two[0]
    os.kill(before[victim["runtime_id"]], signal.SIGKILL)
    wait_until(lambda: (pid := qemu_pids(daemon).get(victim["runtime_id"])) and pid != before[victim["runtime_id"]],
               timeout=120, what="the killed VM restarted")

    # project delete: no qemu process, tap, overlay or sidecar left
    taps = [json.loads((daemon.state_dir / "qemu" / v["runtime_id"] / "mariposa.json").read_text())["tap"]
            for v in two]
    daemon.cli("project", "delete", "mix", "--wait", timeout=300)
    assert qemu_pids(daemon) == {}
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert not any(tap in links for tap in taps)
    root = daemon.state_dir / "qemu"
    assert not [d for d in root.iterdir() if (d / "mariposa.json").exists() or (d / "root.qcow2").exists()]


def exec_in(daemon: Daemon, inst: dict, script: str, check: bool = True) -> tuple[int, str]:
    """A command in the VM through the daemon's exec path (the driver's control channel)."""
    import trio

    from mariposa.drivers.qemu import QemuDriver
    from mariposa.model import Instance

    async def run() -> tuple[int, bytes]:
        driver = QemuDriver(daemon.owner or "x", daemon.state_dir / "qemu", run_dir=daemon.run_dir / "qemu")
        found = Instance(id=inst["id"], runtime_id=inst["runtime_id"], name=inst["name"], project_id="",
                         service="", spec_hash="", version_id="", state="running", created=0.0, compute_type="kvm")
        try:
            return await driver.exec(found, ["sh", "-c", script], timeout=60)
        finally:
            await driver.aclose()

    code, out = trio.run(run)
    if check:
        assert code == 0 or out, (code, out)
    return code, out.decode(errors="replace")


def counts(daemon: Daemon, service: str) -> list[int]:
    """The counts a service printed, in the logs of its instances now."""
    out = daemon.cli("-j", "vmsup", "service", "logs", service, "--no-log-prefix").stdout
    return [int(line.split("=")[1]) for line in out.splitlines() if line.startswith("count=")]


COUNT = "echo run >> /data/runs; echo count=$(wc -l < /data/runs)"


def test_a_vm_whose_command_exits_is_restarted_and_an_unhealthy_one_replaced(daemon: Daemon, tmp_path):
    path = tmp_path / "vm.yaml"
    manifest = f"""
services:
  job:
    image: {IMAGE}
    compute_type: vm
    restart: always
    command: sh -c '{COUNT}; sleep 1; exit 3'
    volumes: ["runs:/data"]
  store:
    image: {IMAGE}
    compute_type: vm
    environment: {{{{ROUND: "{{round}}"}}}}
    command: sh -c '{COUNT}; exec sleep 3600'
    volumes: ["counter:/data"]
"""
    api_manifest = f"""
services:
  api:
    image: {IMAGE}
    compute_type: vm
    command: sh -c '{HTTPD.format(name="api", port=8080)}'
    healthchecks:
      - type: http
        port: 8080
        path: /
        poll: 2
        timeout: 5
        retries: 3
"""
    path.write_text(manifest.format(round=1))
    daemon.cli("project", "add", "vmsup", str(path), "--wait", timeout=600)
    # the job's command exits 3: the VM ends, the restart policy boots it again, and the named
    # volume (a disk of its own) keeps the count across boots
    wait_until(lambda: max(counts(daemon, "job"), default=0) >= 2, timeout=300, what="the job VM booted twice")
    (job,) = daemon.json("-j", "vmsup", "service", "instances", "job")
    assert job["restarts"] >= 1
    # and across a reprovision: a new version makes a new VM of the store, on the same volume
    (old,) = vms(daemon, "vmsup", "store")
    assert counts(daemon, "store") == [1]
    path.write_text(manifest.format(round=2))
    daemon.cli("project", "update", "vmsup", str(path), "--wait", timeout=600)
    (new,) = vms(daemon, "vmsup", "store")
    assert new["id"] != old["id"]
    assert wait_until(lambda: counts(daemon, "store"), timeout=60, what="the new VM's count") == [2]

    daemon.cli("project", "delete", "vmsup", "--wait", timeout=300)

    # an unhealthy VM is replaced
    (tmp_path / "api.yaml").write_text(api_manifest)
    daemon.cli("project", "add", "vmapi", str(tmp_path / "api.yaml"), "--wait", timeout=600)
    wait_until(lambda: [i for i in vms(daemon, "vmapi", "api") if i.get("health") == "healthy"], timeout=120,
               what="api healthy")
    (api,) = vms(daemon, "vmapi", "api")
    exec_in(daemon, api, "rm /www/index.html")  # httpd answers 404: the check fails
    wait_until(lambda: [i for i in vms(daemon, "vmapi", "api") if i["id"] != api["id"]
                        and i.get("health") == "healthy"], timeout=300, what="the unhealthy VM replaced")
    daemon.cli("project", "delete", "vmapi", "--wait", timeout=300)


def test_a_rolling_update_of_a_vm_service_keeps_scale_ready(daemon: Daemon, tmp_path):
    path = tmp_path / "roll.yaml"
    manifest = f"""
services:
  api:
    image: {IMAGE}
    compute_type: vm
    scale: 2
    environment: {{{{V: "{{v}}"}}}}
    command: sh -c '{HTTPD.format(name="api", port=8080)}'
    healthchecks:
      - type: http
        port: 8080
        path: /
        poll: 2
        timeout: 5
        retries: 3
        grace: 30
"""
    # grace: a TCG guest on a loaded host (the fresh-machine run: load 20) was seen slow to answer
    # its first checks; what is tested is that the rollout keeps 2 ready, not how fast a VM boots
    path.write_text(manifest.format(v="1"))
    daemon.cli("project", "add", "roll", str(path), "--wait", timeout=600)

    def ready() -> int:
        return len([i for i in daemon.json("-j", "roll", "service", "instances", "api")
                    if i["state"] == "running" and i.get("health") == "healthy"])

    wait_until(lambda: ready() == 2, timeout=120, what="2 healthy")
    path.write_text(manifest.format(v="2"))
    with sampling(ready) as seen:
        daemon.cli("project", "update", "roll", str(path), "--wait", timeout=900)
    assert seen and min(seen) >= 2, seen
    daemon.cli("project", "delete", "roll", "--wait", timeout=300)


RELOADER = ('trap "echo reloaded \\$(cat /run/mariposa/mdata/color)" HUP; httpd -p 8080 -h /run/mariposa/mdata; '
            'while true; do sleep 0.2; done')


def test_a_vms_mdata_is_live_and_its_secrets_where_a_containers_are(daemon: Daemon, tmp_path):
    """The config disk is fixed at create; the live mdata reaches the running VM over the control
    channel (MDATA), swapped in whole at /run/mariposa/mdata, then mdata_signal; after a restart
    the VM reads today's values, not its create's; secrets are at /run/secrets."""
    manifest = tmp_path / "conf.yaml"
    manifest.write_text(f"""
services:
  conf:
    image: {IMAGE}
    compute_type: vm
    restart: always
    mdata:
      color: "{{{{ .meta.color }}}}"
    mdata_signal: SIGHUP
    secrets: [token]
    command: sh -c '{RELOADER}'
""")
    meta = tmp_path / "meta.yaml"
    meta.write_text("color: blue\n")
    daemon.cli("-j", "conf", "secret", "set", "token", input="s3cret-value")
    daemon.cli("project", "add", "conf", str(manifest), "--meta", str(meta), "--wait", timeout=600)
    (vm,) = vms(daemon, "conf", "conf")
    assert wait_until(lambda: get(f"http://{vm['address']}:8080/color"), timeout=60, what="mdata served") == "blue"
    code, out = exec_in(daemon, vm, "cat /run/secrets/token; ls -la /run/mariposa/mdata/")
    assert code == 0 and out.startswith("s3cret-value"), out
    t0 = time.monotonic()
    daemon.cli("-j", "conf", "meta", "set", "color", "green")
    wait_until(lambda: get(f"http://{vm['address']}:8080/color") == "green", timeout=30, what="green in the VM")
    print(f"mdata change seen in the VM after {time.monotonic() - t0:.2f} s (CLI start included)")
    wait_until(lambda: "reloaded green" in daemon.cli("-j", "conf", "service", "logs", "conf").stdout, timeout=30,
               what="SIGHUP after the files changed")
    assert [i["id"] for i in vms(daemon, "conf", "conf")] == [vm["id"]]  # the same VM: nothing replaced
    code, out = exec_in(daemon, vm, "echo x > /run/mariposa/mdata/color", check=False)
    assert code != 0, out  # read-only, even for root in the VM
    # a restart boots with the config disk of the create (blue): today's value follows at once
    daemon.cli("-j", "conf", "meta", "set", "color", "red")
    wait_until(lambda: get(f"http://{vm['address']}:8080/color") == "red", timeout=30, what="red in the VM")
    home = daemon.state_dir / "qemu" / vm["runtime_id"]
    pid = _pid_of(home)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: (p := _pid_of(home)) is not None and p != pid, timeout=120, what="the VM restarted")
    # read at once after the restart: the mdata disk was made at this boot (no stale value first)
    assert wait_until(lambda: get(f"http://{vm['address']}:8080/color"), timeout=60, what="served again") == "red"
    daemon.cli("project", "delete", "conf", "--wait", timeout=300)


def test_a_vms_root_filesystem_is_its_disks_size(daemon: Daemon, tmp_path):
    """The package's (or ``disk``'s) size is the guest's root filesystem, not an empty device
    behind a filesystem the size of the image; an image that needs more is refused."""
    manifest = tmp_path / "sized.yaml"
    manifest.write_text(f"""
services:
  roomy:
    image: {IMAGE}
    compute_type: vm
    disk: 700m
    command: sh -c 'while true; do sleep 1; done'
""")
    daemon.cli("project", "add", "sized", str(manifest), "--wait", timeout=600)
    (vm,) = vms(daemon, "sized", "roomy")
    code, out = exec_in(daemon, vm, "df -m / | tail -1")
    total_mb = int(out.split()[1])
    assert 600 <= total_mb <= 700, out  # ext4's own share aside, the 700 MB asked for
    code, out = exec_in(daemon, vm, "dd if=/dev/zero of=/fill bs=1M count=300 2>&1 && sync && echo ok")
    assert out.strip().endswith("ok"), out  # room the image's own size (a few MB) would not have
    manifest.write_text(manifest.read_text().replace("disk: 700m", "disk: 64m"))
    r = daemon.cli("project", "update", "sized", str(manifest), "--wait", timeout=300, check=False)
    assert r.returncode != 0 and "needs a disk of" in r.stdout + r.stderr, r
    assert [i["id"] for i in vms(daemon, "sized", "roomy")] == [vm["id"]]  # the old VM kept serving
    daemon.cli("project", "delete", "sized", "--wait", timeout=300)


def test_a_paused_vm_answers_nothing_is_listed_paused_and_left_alone(daemon: Daemon, tmp_path):
    """QMP stop/cont through the driver: the VM keeps its memory and answers nothing; the daemon
    counts it neither up nor down (plan.py: a replacement serves, the paused one is untouched);
    thawed, it answers again and the surplus is scaled away."""
    import trio

    from mariposa.drivers.qemu import QemuDriver
    from mariposa.model import Instance

    manifest = tmp_path / "frozen.yaml"
    manifest.write_text(f"""
services:
  box:
    image: {IMAGE}
    compute_type: vm
    command: sh -c '{HTTPD.format(name="box", port=8080)}'
""")
    daemon.cli("project", "add", "frozen", str(manifest), "--wait", timeout=600)
    (vm,) = vms(daemon, "frozen", "box")
    wait_until(lambda: get(f"http://{vm['address']}:8080/"), timeout=60, what="the VM's httpd")
    found = Instance(id=vm["id"], runtime_id=vm["runtime_id"], name=vm["name"], project_id="", service="",
                     spec_hash="", version_id="", state="running", created=0.0, compute_type="kvm")

    async def call(*steps: str) -> list:
        driver = QemuDriver(daemon.owner or "x", daemon.state_dir / "qemu", run_dir=daemon.run_dir / "qemu")
        try:
            return [await getattr(driver, step)(found) for step in steps]
        finally:
            await driver.aclose()

    assert trio.run(call, "pause", "status") == [None, "paused"]
    assert get(f"http://{vm['address']}:8080/") is None
    wait_until(lambda: [i for i in daemon.json("-j", "frozen", "service", "instances", "box")
                        if i["id"] == vm["id"] and i["state"] == "paused"], timeout=30, what="listed paused")
    # unreachable, as a host gone offline: a replacement serves, the frozen VM is left alone
    wait_until(lambda: [i for i in vms(daemon, "frozen", "box") if i["id"] != vm["id"]], timeout=120,
               what="a replacement running")
    assert vm["id"] in {i["id"] for i in daemon.json("-j", "frozen", "service", "instances", "box")}
    assert trio.run(call, "unpause", "status") == [None, "running"]
    # back, the service is over its scale: the surplus goes, one VM serves
    wait_until(lambda: len(daemon.json("-j", "frozen", "service", "instances", "box")) == 1, timeout=120,
               what="back to scale 1")
    daemon.cli("project", "delete", "frozen", "--wait", timeout=300)


async def test_a_vms_stats_are_its_process_its_taps_turned_round_and_its_disks(registries, tmp_path):
    """The driver's reading of a VM (no daemon): the QEMU process's CPU and memory, limited by the
    VM's configured memory and vCPUs; what the host sends to the guest's address is what the guest
    received; its disks' bytes from QMP (the guest read its root disk to boot); paused, none."""
    import socket

    import trio

    from tests.contract.conftest import _qemu_kit

    async with _qemu_kit(IMAGE, registries, tmp_path) as kit:
        inst = await kit.driver.create(kit.request("vm", "exec sleep 3600", memory=256 << 20))
        first = await kit.driver.stats(inst)
        assert first is not None
        assert (first.memory_limit, first.cpu_limit) == (256 << 20, 1.0)
        assert first.cpu_ns > 0 and first.memory > 0 and first.block_read > 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(10):
                s.sendto(b"x" * 1000, (inst.address, 9))
        await trio.sleep(0.5)
        second = await kit.driver.stats(inst)
        assert second is not None
        assert second.net_rx - first.net_rx >= 10_000  # the tap sent them: the guest received them
        assert second.net_tx >= first.net_tx and second.block_read >= first.block_read
        await kit.driver.pause(inst)  # type: ignore[attr-defined]
        assert await kit.driver.stats(inst) is None
        await kit.driver.unpause(inst)  # type: ignore[attr-defined]
        assert await kit.driver.stats(inst) is not None
        await kit.driver.stop(inst, timeout=1)
        assert await kit.driver.stats(inst) is None
