"""Issue 15's VMs that boot a disk image of their own (qcow2 or raw), through the real daemon on
TCG: with the ``kernel``/``initrd``/``cmdline`` given, or through the image's own bootloader under
``machine: q35`` firmware. The guests know nothing of Mariposa: they take their address, route,
resolver and hostname by DHCP (mariposa/vm/dhcp.py), and are pinned, copied and refused as the
issue says."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mariposa.drivers.qemu import _pid_of
from tests.integration import vm_disks
from tests.integration.harness import Daemon, wait_until
from tests.integration.test_qemu import get

pytestmark = [pytest.mark.qemu]


@pytest.fixture(scope="session")
def guest_disks(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("guest-disks")
    found = vm_disks.kernel_boot_disk(out)
    found["firmware"] = vm_disks.firmware_boot_disk(out)
    return found


def running(daemon: Daemon, project: str, service: str) -> list[dict]:
    return [i for i in daemon.json("-j", project, "service", "instances", service) if i["state"] == "running"]


def add(daemon: Daemon, tmp_path: Path, project: str, text: str, check: bool = True) -> subprocess.CompletedProcess:
    path = tmp_path / f"{project}.yaml"
    path.write_text(text)
    return daemon.cli("project", "add", project, str(path), "--wait", timeout=600, check=check)


def serving(daemon: Daemon, project: str, service: str, count: int = 1) -> list[tuple[dict, str]]:
    """Each running instance of ``service`` and its page, once ``count`` of them answer."""
    def answers():
        insts = running(daemon, project, service)
        pages = [(i, get(f"http://{i['address']}/")) for i in insts if i.get("address")]
        return pages if len(pages) == count and all(p for _, p in pages) else None
    return wait_until(answers, timeout=120, what=f"{count} {service} guests serving")


def test_a_qcow2_disk_booted_with_its_kernel_takes_its_lease_and_serves(daemon: Daemon, tmp_path, guest_disks):
    image = tmp_path / "guest.qcow2"  # a copy the test may change later
    image.write_bytes(guest_disks["qcow2"].read_bytes())
    add(daemon, tmp_path, "own", f"""
services:
  guest:
    image: {image}
    compute_type: vm
    kernel: {guest_disks["kernel"]}
    initrd: {guest_disks["initrd"]}
    cmdline: console=ttyS0 quiet guestroot=vda
    disk: 256m
    restart: always
    stop:
      timeout: 2
    healthchecks:
      - type: command          # run by the QEMU guest agent in the image (no init of ours there)
        command: ["grep", "-q", "own root", "/etc/guest"]
        poll: 2
""")
    ((inst, page),) = serving(daemon, "own", "guest")
    # the address Mariposa allocated, handed out by DHCP to a guest that knows nothing of Mariposa,
    # with the hostname, the route and the project's DNS responder; it runs from the disk image
    assert page.strip() == f"hello from {inst['runtime_id']} on disk"
    logs = daemon.cli("-j", "own", "service", "logs", "guest").stdout
    lease = next(line for line in logs.splitlines() if "guest: lease" in line).split("guest: lease ")[1].split()
    gateway = str(next(ipaddress.ip_interface(lease[0]).network.hosts()))  # the project bridge's own address
    assert lease == [f"{inst['address']}/{lease[0].split('/')[1]}", "router", gateway, "dns", gateway,
                     "hostname", inst["runtime_id"]], logs
    wait_until(lambda: [i for i in running(daemon, "own", "guest") if i.get("health") == "healthy"], timeout=60,
               what="the command check passing through the guest agent")
    # the overlay is over Mariposa's copy, named by its sha256, never over the user's file
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    home = daemon.state_dir / "qemu" / inst["runtime_id"]
    backing = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(home / "root.qcow2")],
                             capture_output=True, text=True, check=True).stdout
    assert f"disks/{digest}.qcow2" in backing and str(image) not in backing, backing
    assert '"virtual-size": 268435456' in backing  # the service's disk
    # the user's file changes: the pinned copy still boots the next instance
    image.write_bytes(b"not a disk any more" + bytes(4096))
    daemon.cli("-j", "own", "service", "scale", "guest", "2", "--wait", timeout=300)
    pages = serving(daemon, "own", "guest", count=2)
    assert len({i["address"] for i, _ in pages}) == 2
    # kill -9 of a guest's qemu: restarted (restart: always), with the same address by DHCP again
    pid = _pid_of(home)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: (p := _pid_of(home)) is not None and p != pid, timeout=120, what="the guest restarted")
    again = serving(daemon, "own", "guest", count=2)
    assert inst["address"] in {i["address"] for i, _ in again}
    # the version pinned the sha256: with the copy gone and the file changed, a new VM is refused
    cached = daemon.state_dir / "qemu" / "disks" / f"{digest}.qcow2"
    cached.unlink()
    r = daemon.cli("-j", "own", "service", "scale", "guest", "3", "--wait", timeout=300, check=False)
    assert r.returncode != 0 and "changed since the version was made" in r.stdout + r.stderr, r
    assert len(running(daemon, "own", "guest")) == 2
    started = time.monotonic()
    daemon.cli("project", "delete", "own", "--wait", timeout=300)
    assert time.monotonic() - started < 60  # busybox ignores the power button: quit after stop_timeout
    assert not list((daemon.state_dir / "qemu").glob("*/qemu.pid"))


def test_a_raw_disk_boots_through_its_own_bootloader_on_q35(daemon: Daemon, tmp_path, guest_disks):
    add(daemon, tmp_path, "fw", f"""
services:
  pc:
    image: {guest_disks["firmware"]}
    compute_type: kvm
    machine: q35
    package: small
    healthchecks:
      - type: http
        port: 80
        path: /
        poll: 2
      - type: command
        command: ["true"]
        poll: 2
""")
    ((inst, page),) = serving(daemon, "fw", "pc")
    assert page.strip() == f"hello from {inst['runtime_id']} on initrd"  # syslinux loaded the kernel and initrd
    home = daemon.state_dir / "qemu" / inst["runtime_id"]
    with open(f"/proc/{_pid_of(home)}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert b"q35" in argv and b"-kernel" not in argv  # the firmware booted it
    # a command check has no init of ours and no guest agent to run it: a clear "unsupported"
    def checked() -> str | None:
        out = daemon.cli("-j", "fw", "service", "health", "pc").stdout
        return out if "unsupported" in out else None
    health = wait_until(checked, timeout=60, what="the checks' results")
    assert "boots its own OS" in health, health
    daemon.cli("project", "delete", "fw", "--wait", timeout=300)


def test_a_disk_image_that_cannot_boot_is_refused_and_nothing_changes(daemon: Daemon, tmp_path, guest_disks):
    missing = tmp_path / "absent.qcow2"
    vmdk = tmp_path / "other.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "64M"], check=True)
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        f.truncate(300 << 20)
    for image, extra, words in (
        (missing, "", f"disk image {missing} does not exist"),
        (vmdk, "", "is vmdk, not qcow2 or raw"),
        (big, "    disk: 128m\n", "larger than the service's disk"),
        (guest_disks["qcow2"], f"    kernel: {tmp_path}/no-kernel\n", f"kernel {tmp_path}/no-kernel does not exist"),
    ):
        r = add(daemon, tmp_path, "bad", f"services:\n  g:\n    image: {image}\n    compute_type: vm\n"
                + (f"    kernel: {guest_disks['kernel']}\n" if "kernel" not in extra else "") + extra, check=False)
        assert r.returncode != 0 and words in r.stdout + r.stderr, (words, r.stdout, r.stderr)
        assert "bad" not in daemon.cli("project", "list").stdout  # nothing was made
