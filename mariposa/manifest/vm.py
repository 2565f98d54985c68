"""The options of virtual machines (``compute_type: kvm | vm | hvm``, drivers/qemu.py), and what
a VM cannot have: a Docker-only option, a host directory or tmpfs mount (a VM gets disks, so a
named volume), more CPUs than the host has.

A VM's ``image`` is either what a container's is (Mariposa boots it with its own kernel and
init) or a disk image path (``/srv/vm/debian.qcow2``: a ``.qcow2``, ``.raw`` or ``.img`` file),
which boots its own OS: through its bootloader under ``machine: q35`` firmware, or through the
``kernel``/``initrd``/``cmdline`` given. What only Mariposa's init can do (run ``command`` as
``user`` in ``working_dir``) is refused for those, since nothing in the guest would do it.
"""

from __future__ import annotations

import os

from mariposa.manifest.report import DOCKER_ONLY, _At
from mariposa.manifest.shapes import _Shapes

ACCELERATORS = ("auto", "kvm", "tcg")
MACHINES = ("microvm", "q35")
DISK_SUFFIXES = (".qcow2", ".qcow", ".raw", ".img", ".vmdk", ".vdi", ".vhd", ".vhdx")
VM_OPTIONS = ("accel", "boot_timeout", "machine", "disk", "kernel", "initrd", "cmdline")
# What Mariposa's init does in the guest: a disk image that boots its own OS has no such init.
INIT_ONLY = ("command", "user", "working_dir")


def is_disk_image(image: str) -> bool:
    """A path to a disk image (by its name: the driver checks its format when a version is made)."""
    return image.startswith("/") and image.lower().endswith(DISK_SUFFIXES)


class _VmChecks(_Shapes):
    def accel(self, at: _At) -> None:
        value = self.choice(at, ACCELERATORS, "accel")
        if value is not None:
            self.fields["accel"] = value

    def boot_timeout(self, at: _At) -> None:
        value = self.seconds(at, positive=True)
        if value is not None:
            self.fields["boot_timeout"] = value

    def machine(self, at: _At) -> None:
        value = self.choice(at, MACHINES, "machine")
        if value is not None:
            self.fields["machine"] = value

    def disk(self, at: _At) -> None:
        value = self.size(at, "10g")
        if value is not None:
            if value < 64 * 1024 * 1024:
                self.problem(at, f"disk must be at least 64m, got {value} bytes")
                return
            self.fields["disk"] = value

    def kernel(self, at: _At) -> None:
        self._host_file(at, "kernel")

    def initrd(self, at: _At) -> None:
        self._host_file(at, "initrd")

    def cmdline(self, at: _At) -> None:
        value = self.string(at)
        if value is not None:
            if "\n" in value or "\0" in value:
                self.problem(at, "cmdline must be one line")
                return
            self.fields["cmdline"] = value

    def _host_file(self, at: _At, key: str) -> None:
        value = self.string(at)
        if value is None:
            return
        if not value.startswith("/"):
            self.problem(at, f"{key} must be an absolute path on this host, got {value!r}")
            return
        self.fields[key] = value

    def vm_cross_checks(self, compute: str) -> None:
        written = self.seen["compute_type"].value if "compute_type" in self.seen else "docker"
        if compute != "kvm":
            for key in VM_OPTIONS:
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
        self._boot_checks()
        cpus = self.fields.get("cpus")
        if cpus is not None and cpus > (os.cpu_count() or 1):
            at = self.seen.get("cpus") or self.seen.get("package") or self.at
            self.problem(at, f"a virtual machine with {cpus:g} CPUs: this host has {os.cpu_count()}")

    def _boot_checks(self) -> None:
        """How the VM boots must add up: kernel options for disk images only, a firmware boot
        on q35, and no option that only Mariposa's init would honour."""
        image = self.fields.get("image")
        own_os = isinstance(image, str) and is_disk_image(image)
        if not own_os:
            for key in ("kernel", "initrd", "cmdline"):
                if key in self.seen:
                    self.problem(self.seen[key], f"{key!r} is for a VM that boots a disk image of its own "
                                                 "(image: /path/disk.qcow2 or .raw); this image boots with "
                                                 "Mariposa's kernel", on_key=True)
            return
        for key in ("initrd", "cmdline"):
            if key in self.seen and "kernel" not in self.seen:
                self.problem(self.seen[key], f"{key!r} needs 'kernel' (without it the disk image boots "
                                             "through its own bootloader)", on_key=True)
        if "kernel" not in self.seen and self.fields.get("machine") == "microvm":
            self.problem(self.seen["machine"], "machine 'microvm' has no firmware to run the disk image's "
                                               "bootloader: use machine q35, or give 'kernel'")
        for key in INIT_ONLY:
            if key in self.seen:
                self.problem(self.seen[key], f"{key!r} cannot apply to a disk image that boots its own OS "
                                             f"({image}): nothing in it runs Mariposa's init", on_key=True)
