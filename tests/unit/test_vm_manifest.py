"""Issue 15's manifest options: ``compute_type: kvm | vm | hvm`` with ``accel`` and ``boot_timeout``,
and what a virtual machine refuses, each error naming the option and its line and column."""

from __future__ import annotations

import os

import pytest

from mariposa.manifest import parse_manifest
from mariposa.manifest.errors import ManifestError


def test_a_vm_service_with_its_own_accelerator_and_boot_timeout():
    spec = parse_manifest("services:\n  batch:\n    image: busybox\n    compute_type: vm\n    accel: tcg\n"
                          "    boot_timeout: 90\n")
    batch = spec.service("batch")
    assert batch is not None
    assert (batch.compute_type, batch.accel, batch.boot_timeout) == ("kvm", "tcg", 90)
    plain = parse_manifest("services:\n  b:\n    image: busybox\n    compute_type: hvm\n").service("b")
    assert plain is not None and plain.accel is None and plain.boot_timeout is None


@pytest.mark.parametrize("body, where, words", [
    ("    compute_type: kvm\n    entrypoint: [sh]\n", "5:5", "'entrypoint' is a Docker option"),
    ("    compute_type: kvm\n    volumes: ['/srv:/srv']\n", "5:14", "bind mount (/srv) cannot reach into a virtual"),
    ("    compute_type: kvm\n    accel: hvf\n", "5:12", "unknown accel 'hvf'"),
    ("    compute_type: kvm\n    boot_timeout: 0\n", "5:19", "must be more than 0"),
    ("    accel: kvm\n", "4:5", "'accel' is for virtual machines"),
    ("    compute_type: lx\n    boot_timeout: 5\n", "5:5", "'boot_timeout' is for virtual machines"),
])
def test_what_a_vm_refuses_is_named_with_its_line_and_column(body, where, words):
    refused("    image: busybox\n" + body, where, words)


def refused(service: str, where: str, words: str) -> None:
    """Service ``b`` of that text is refused, the error at line:column ``where`` saying ``words``."""
    with pytest.raises(ManifestError) as info:
        parse_manifest("services:\n  b:\n" + service, "vm.yaml")
    assert f"vm.yaml:{where}:" in str(info.value) and words in str(info.value), str(info.value)


def test_a_vm_with_more_cpus_than_the_host_is_refused():
    from mariposa.packages import Package

    big = {"huge": Package("huge", 1 << 30, float((os.cpu_count() or 1) + 1))}
    with pytest.raises(ManifestError, match="CPUs: this host has"):
        parse_manifest("services:\n  b:\n    image: busybox\n    compute_type: kvm\n    package: huge\n",
                       packages=big)


def test_a_disk_image_vm_with_its_kernel_or_its_bootloader_and_a_package_disk():
    spec = parse_manifest("services:\n  os:\n    image: /srv/vm/debian.qcow2\n    compute_type: kvm\n"
                          "    kernel: /srv/vm/vmlinuz\n    initrd: /srv/vm/initrd.img\n"
                          "    cmdline: console=ttyS0 root=/dev/vda\n    disk: 2g\n")
    os_ = spec.service("os")
    assert os_ is not None
    assert (os_.kernel, os_.initrd, os_.cmdline, os_.disk, os_.machine) == (
        "/srv/vm/vmlinuz", "/srv/vm/initrd.img", "console=ttyS0 root=/dev/vda", 2 << 30, None)
    fw = parse_manifest("services:\n  fw:\n    image: /srv/vm/disk.raw\n    compute_type: vm\n    machine: q35\n"
                        "    package: small\n").service("fw")
    assert fw is not None and fw.machine == "q35" and fw.disk == 10 << 30  # the package's disk
    mine = parse_manifest("services:\n  m:\n    image: busybox\n    compute_type: vm\n    package: small\n"
                          "    disk: 1g\n").service("m")
    assert mine is not None and mine.disk == 1 << 30  # an explicit disk wins over the package's
    box = parse_manifest("services:\n  c:\n    image: busybox\n    package: small\n").service("c")
    assert box is not None and box.disk is None  # a container has no disk of its own to size


@pytest.mark.parametrize("body, where, words", [
    ("    image: busybox\n    compute_type: kvm\n    kernel: /boot/vmlinuz\n", "5:5",
     "'kernel' is for a VM that boots a disk image of its own"),
    ("    image: /srv/d.qcow2\n    compute_type: kvm\n    initrd: /boot/initrd\n", "5:5", "'initrd' needs 'kernel'"),
    ("    image: /srv/d.qcow2\n    compute_type: kvm\n    machine: microvm\n", "5:14",
     "machine 'microvm' has no firmware"),
    ("    image: /srv/d.raw\n    compute_type: kvm\n    command: [sh]\n", "5:5",
     "'command' cannot apply to a disk image that boots its own OS"),
    ("    image: /srv/d.raw\n    compute_type: kvm\n    kernel: vmlinuz\n", "5:13", "kernel must be an absolute path"),
    ("    image: busybox\n    compute_type: kvm\n    machine: pc\n", "5:14", "unknown machine 'pc'"),
    ("    image: busybox\n    compute_type: kvm\n    disk: 1m\n", "5:11", "disk must be at least 64m"),
    ("    image: busybox\n    disk: 1g\n", "4:5", "'disk' is for virtual machines"),
])
def test_how_a_vm_boots_must_add_up(body, where, words):
    refused(body, where, words)
