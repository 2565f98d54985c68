"""The options of virtual machines (``compute_type: kvm | vm | hvm``, drivers/qemu.py), and what
a VM cannot have: a Docker-only option, a host directory or tmpfs mount (a VM gets disks, so a
named volume), more CPUs than the host has."""

from __future__ import annotations

import os

from mariposa.manifest.report import DOCKER_ONLY, _At
from mariposa.manifest.shapes import _Shapes

ACCELERATORS = ("auto", "kvm", "tcg")


class _VmChecks(_Shapes):
    def accel(self, at: _At) -> None:
        value = self.choice(at, ACCELERATORS, "accel")
        if value is not None:
            self.fields["accel"] = value

    def boot_timeout(self, at: _At) -> None:
        value = self.seconds(at, positive=True)
        if value is not None:
            self.fields["boot_timeout"] = value

    def vm_cross_checks(self, compute: str) -> None:
        written = self.seen["compute_type"].value if "compute_type" in self.seen else "docker"
        if compute != "kvm":
            for key in ("accel", "boot_timeout"):
                if key in self.seen:
                    self.problem(self.seen[key], f"{key!r} is for virtual machines (compute_type kvm, vm or hvm), "
                                                 f"not compute_type {written!r}", on_key=True)
            return
        for key in DOCKER_ONLY:
            if key in self.seen:
                self.problem(self.seen[key], f"{key!r} is a Docker option, not supported with compute_type "
                                             f"{written!r} (a virtual machine)", on_key=True)
        for mount in self.fields.get("volumes", ()):
            if mount.type != "volume":
                self.problem(self.seen["volumes"], f"a {mount.type} mount ({mount.target}) cannot reach into a virtual "
                                                   "machine: use a named volume, which becomes a disk of its own")
        cpus = self.fields.get("cpus")
        if cpus is not None and cpus > (os.cpu_count() or 1):
            at = self.seen.get("cpus") or self.seen.get("package") or self.at
            self.problem(at, f"a virtual machine with {cpus:g} CPUs: this host has {os.cpu_count()}")
