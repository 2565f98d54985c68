"""Whether KVM boots a kernel on this host, found out once by booting one and kept.

Why a boot and not a look at ``/dev/kvm``: a host can have ``/dev/kvm`` and still not boot a stock
kernel under it, as a paravirtual nested KVM without VMX/SVM (``kvm_pvm``) does, where the guest
dies with "KVM internal error / emulation failure". The probe boots Mariposa's kernel under KVM
with no root disk: a kernel that gets as far as looking for its root filesystem (and panics,
which ``panic=-1`` and ``-no-reboot`` turn into QEMU's exit) ran fine. The answer is kept in
``PATH/accel.json``, keyed by the kernel and the QEMU binary, so a daemon start costs nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import trio

from mariposa.vm.kernel import Kernel

PROBE_TIMEOUT = 15.0
BOOTED = ("VFS: Unable to mount root", "Kernel panic - not syncing", "Run /init as init process",
          "No working init found")


def _key(found: Kernel) -> str:
    qemu = shutil.which("qemu-system-x86_64") or ""
    try:
        stamp = os.stat(qemu).st_mtime
    except OSError:
        stamp = 0.0
    return f"{found.version}|{qemu}|{stamp}"


def cached(found: Kernel, path: Path) -> tuple[bool, str] | None:
    try:
        data = json.loads((path / "accel.json").read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != _key(found):
        return None
    return bool(data.get("kvm")), str(data.get("why", ""))


async def probe(found: Kernel, path: Path) -> tuple[bool, str]:
    """(KVM works, why), from the cache or a probe boot."""
    known = await trio.to_thread.run_sync(cached, found, path)
    if known is not None:
        return known
    result = await _boot(found, path)
    text = json.dumps({"key": _key(found), "kvm": result[0], "why": result[1]})
    await trio.to_thread.run_sync(lambda: (path / "accel.json").write_text(text))
    return result


async def _boot(found: Kernel, path: Path) -> tuple[bool, str]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "no usable /dev/kvm"
    console = path / "accel-probe.log"
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-M", "microvm", "-cpu", "host", "-m", "128", "-nodefaults",
            "-display", "none", "-no-reboot", "-serial", f"file:{console}", "-kernel", str(found.vmlinux),
            "-append", "console=ttyS0 panic=-1 tsc_early_khz=2300000"]
    proc = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    errors = bytearray()
    try:
        with trio.move_on_after(PROBE_TIMEOUT):
            async with trio.open_nursery() as nursery:
                async def drain() -> None:
                    assert proc.stderr is not None
                    while chunk := await proc.stderr.receive_some(65536):
                        errors.extend(chunk[: max(0, 4096 - len(errors))])
                nursery.start_soon(drain)
                await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
    try:
        text = console.read_text(errors="replace")
    except OSError:
        text = ""
    if any(mark in text for mark in BOOTED):
        return True, "a kernel booted under KVM"
    said = errors.decode(errors="replace").strip().splitlines()
    if said:
        return False, f"KVM could not boot a kernel: {said[0]}"
    return False, f"KVM did not boot a kernel within {PROBE_TIMEOUT:g} s"
