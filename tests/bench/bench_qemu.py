#!/usr/bin/env python3
"""Benchmark: QEMU virtual machines (drivers/qemu.py) from nothing to answering HTTP.

Run as root on a host with QEMU and Mariposa's kernel (tests/run.sh sets them up):
    .venv/bin/python tests/bench/bench_qemu.py [--boots 10] [--vms 5]

Prints:
- **Boot to HTTP**, median and p95 of ``--boots`` VMs made one after another by the driver
  (``create`` to busybox ``httpd`` answering on the VM's address, polled every 20 ms): with
  ``-M microvm`` and ``-M q35`` booting Mariposa's kernel, and ``-M q35`` booting a disk image of
  its own through SeaBIOS and syslinux (tests/integration/vm_disks.py; its address by DHCP,
  mariposa/vm/dhcp.py), under the accelerator the probe chose; KVM rows where the probe says KVM
  boots a kernel (TCG here: the line says why there is none).
- **RSS per VM**, and how much of it is file-backed (the kernel, shared between VMs).
- **5 VMs at once**: the driver making them side by side, next to the peer: the same five
  ``qemu-system-x86_64`` commands (taken from /proc of the driver's VMs, disks and taps kept)
  started by a shell loop, both timed to the last VM answering HTTP.

Measured on the 2-core host, TCG (its KVM cannot boot a kernel: "failed to set MSR 0x10a"), a
fresh-machine run beside it (load 4-22): boot to HTTP, 10 VMs each, -M microvm median 4.34 s
(p95 7.20 s), -M q35 with Mariposa's kernel 4.36 s (6.32 s), -M q35 booting a disk image
through SeaBIOS and syslinux with its address by DHCP 5.94 s (8.22 s); RSS 218 MB per 128 MB VM,
58 MB of it file-backed; 5 VMs at once: Mariposa 12.3 s, the shell loop of the same qemu
commands 11.2 s. Earlier, at load 3-5: microvm median 4.05 s, p95 5.33 s; 5 VMs 15.5 s vs 16.9 s.
Under TCG the firmware costs little next to the guest kernel's own boot; under KVM (no row here)
microvm's saving is the larger share.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mariposa.drivers.qemu import QemuDriver, _pid_of  # noqa: E402
from mariposa.model import CreateRequest, ServiceSpec  # noqa: E402
from mariposa.vm import accel as accelerators  # noqa: E402
from mariposa.vm import kernel  # noqa: E402
from mariposa.vm.dhcp import DhcpServer  # noqa: E402
from tests.integration import vm_disks  # noqa: E402
from tests.integration.harness import IMAGE  # noqa: E402
from tests.integration.images import ensure_image  # noqa: E402

HTTPD = "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 8080 -h /www"
PROJECT = "b" * 32


def answers(address: str) -> bool:
    url = f"http://{address}/" if ":" in address else f"http://{address}:8080/"
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


async def until_answering(addresses: list[str], timeout: float = 300) -> None:
    with trio.fail_after(timeout):
        waiting = set(addresses)
        while waiting:
            for a in list(waiting):
                if await trio.to_thread.run_sync(answers, a):
                    waiting.discard(a)
            await trio.sleep(0.02)


def request(owner: str, machine: str = "microvm", accel: str | None = None, image: str = IMAGE,
            image_id: str | None = None) -> CreateRequest:
    spec = ServiceSpec(name="web", image=IMAGE, command=("sh", "-c", HTTPD), compute_type="kvm", machine=machine,
                       accel=accel)
    if image != IMAGE:  # a disk image that boots its own OS (tests/integration/vm_disks.py): httpd on 80
        spec = ServiceSpec(name="web", image=image, compute_type="kvm", machine=machine, accel=accel,
                           image_id=image_id)
    return CreateRequest(instance_id=uuid.uuid4().hex, owner=owner, project_id=PROJECT, project_name="bench",
                         version_id="v1", created=time.time(), spec=spec)


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, RssFile) in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else "0"
    return int(fields.get("VmRSS", 0)), int(fields.get("RssFile", 0))


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(round(len(values) * p)) - 1)]


async def measure(driver: QemuDriver, tmp: Path, owner: str, accel: str, firmware: Path, boots: int, count: int,
                  made: list) -> None:
    await driver.create(request(owner))  # the base disk and initramfs made once, untimed
    for inst in await driver.inventory():
        await driver.remove(inst)
    rows = [("microvm", accel, IMAGE), ("q35", accel, IMAGE), ("q35", accel, str(firmware))]
    if accel == "tcg":
        works, why = await accelerators.probe(kernel.find(), tmp / "qemu")
        if works:
            rows += [("microvm", "kvm", IMAGE), ("q35", "kvm", IMAGE)]
        else:
            print(f"KVM rows: not measured: the probe says KVM cannot boot a kernel here ({why})")
    for machine, row_accel, image in rows:
        times = []
        for _ in range(boots):
            t0 = time.monotonic()
            pin = await driver.resolve_image(image) if image != IMAGE else None  # as a version pins it
            inst = await driver.create(request(owner, machine, row_accel, image, pin))
            assert inst.address is not None
            # a disk image's own OS serves on port 80 once its DHCP lease is applied
            await until_answering([inst.address + (":80" if image != IMAGE else "")])
            times.append(time.monotonic() - t0)
            await driver.remove(inst)
        what = "Mariposa's kernel" if image == IMAGE else "a disk image through SeaBIOS and syslinux"
        print(f"boot to HTTP (-M {machine}, {row_accel}, {what}), {boots} VMs one after another: "
              f"median {statistics.median(times):.2f} s, p95 {pct(times, 0.95):.2f} s")

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        async def one() -> None:
            made.append(await driver.create(request(owner)))
        for _ in range(count):
            nursery.start_soon(one)
    await until_answering([i.address for i in made])
    ours = time.monotonic() - t0
    sizes = [rss(p) for i in made if (p := _pid_of(tmp / "qemu" / i.runtime_id))]
    print(f"RSS per VM (-m 128): {statistics.median(s[0] for s in sizes) / 1024:.0f} MB, of which "
          f"{statistics.median(s[1] for s in sizes) / 1024:.0f} MB file-backed (shared)")

    # the peer: the same commands, from a shell loop, on the disks and taps the driver made
    commands = []
    for inst in made:
        pid = _pid_of(tmp / "qemu" / inst.runtime_id)
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        commands.append([a.decode() for a in argv])
    for inst in made:
        await driver.stop(inst, timeout=0)  # disks and taps stay; the sockets go, as the driver does
        side = driver._sidecar(inst.runtime_id) or {}
        for stale in ("ctl.sock", "qmp.sock"):
            (driver._sockets(side) / stale).unlink(missing_ok=True)
    script = "\n".join(" ".join(_quote(a) for a in argv) for argv in commands)
    t0 = time.monotonic()
    await trio.run_process(["sh", "-c", script])
    await until_answering([i.address for i in made])
    peer = time.monotonic() - t0
    print(f"{count} VMs at once to HTTP: Mariposa {ours:.2f} s, shell loop of qemu-system-x86_64 {peer:.2f} s")


async def main(boots: int, count: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-qemu-"))
    owner = f"bench-{uuid.uuid4().hex[:8]}"
    driver = QemuDriver(owner, tmp / "qemu", run_dir=Path(tempfile.mkdtemp(prefix="bq-", dir="/dev/shm")))
    await driver.ping()
    accel = await driver.accelerator()
    firmware = vm_disks.firmware_boot_disk(tmp / "disks")
    made: list = []
    try:
        async with trio.open_nursery() as nursery:  # the daemon's DHCP server, for the disk image's guests
            await nursery.start(DhcpServer(driver.leases).run)
            await measure(driver, tmp, owner, accel, firmware, boots, count, made)
            nursery.cancel_scope.cancel()
    finally:
        for inst in await driver.inventory():
            await driver.remove(inst)
        await driver.remove_network(PROJECT, "bench")
        await driver.aclose()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--boots", type=int, default=10)
    parser.add_argument("--vms", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    ensure_image()
    trio.run(main, args.boots, args.vms)
