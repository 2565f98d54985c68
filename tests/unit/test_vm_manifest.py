"""Issue 15's manifest options: ``compute_type: kvm | vm | hvm`` with ``accel`` and ``boot_timeout``,
and what a virtual machine refuses, each error naming the option and its line and column."""

from __future__ import annotations

import os

import pytest

from mariposa.manifest.errors import ManifestError
from mariposa.manifest import parse_manifest


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
    with pytest.raises(ManifestError) as info:
        parse_manifest("services:\n  b:\n    image: busybox\n" + body, "vm.yaml")
    assert f"vm.yaml:{where}:" in str(info.value) and words in str(info.value), str(info.value)


def test_a_vm_with_more_cpus_than_the_host_is_refused():
    from mariposa.packages import Package

    big = {"huge": Package("huge", 1 << 30, float((os.cpu_count() or 1) + 1))}
    with pytest.raises(ManifestError, match="CPUs: this host has"):
        parse_manifest("services:\n  b:\n    image: busybox\n    compute_type: kvm\n    package: huge\n",
                       packages=big)
