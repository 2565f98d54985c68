"""The initramfs every Mariposa VM boots: the host's static busybox, the kernel's virtio modules and
``init.sh`` as ``/init``, as a gzip'd newc cpio.

Why written here in Python rather than with ``cpio``: the archive must hold ``/dev/console`` (the
kernel opens it for ``/init``'s output before anything is mounted), and making a device node on
the host needs root and leaves one behind; in the archive it is a header. The writer is also
deterministic (every time, owner and inode fixed), so the same inputs give the same bytes.

Cached by content: the file is named after a hash of everything in it (kernel version, modules,
init.sh, busybox), so a changed input makes a new file and an unchanged one is reused as is.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from mariposa.drivers.base import RuntimeUnavailable
from mariposa.vm.kernel import Kernel

__all__ = ["BUSYBOX", "build", "init_script", "newc"]

BUSYBOX = Path("/bin/busybox")
# bumped whenever the archive's layout changes, so old cached files are not reused
FORMAT = b"mariposa-initramfs-1"

DIRS = ("bin", "dev", "etc", "modules", "newroot", "proc", "run", "sbin", "sys", "tmp", "usr", "usr/bin",
        "usr/sbin")


def init_script() -> bytes:
    return resources.files("mariposa.vm").joinpath("init.sh").read_bytes()


def newc(entries: Iterable[tuple[str, int, bytes, int]]) -> bytes:
    """A newc ("070701") cpio archive of (name, mode, data, rdev) entries, owned by root, dated
    0, with inode numbers in order; a symlink's data is its target."""
    out = bytearray()

    def entry(ino: int, name: str, mode: int, data: bytes, rdev: int) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0,
                  os.major(rdev), os.minor(rdev), len(encoded), 0)
        out.extend(b"070701" + b"".join(b"%08x" % f for f in fields) + encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    ino = 0
    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        entry(ino, name, mode, data, rdev)
    entry(ino + 1, "TRAILER!!!", 0, b"", 0)
    return bytes(out)


def _busybox() -> tuple[bytes, list[str]]:
    """busybox's bytes and its applets' paths (``usr/bin/wget``...); refused unless static (the
    initramfs has no libc)."""
    if not BUSYBOX.is_file():
        raise RuntimeUnavailable(f"qemu: no {BUSYBOX}: apt-get install busybox-static")
    data = BUSYBOX.read_bytes()
    if b"/lib64/ld-linux" in data[:4096] or b"ld-linux-x86-64.so" in data[:8192]:
        raise RuntimeUnavailable(f"qemu: {BUSYBOX} is dynamically linked: apt-get install busybox-static")
    proc = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeUnavailable(f"qemu: {BUSYBOX} --list-full failed: {proc.stderr.strip()}")
    return data, sorted(line.strip().lstrip("/") for line in proc.stdout.splitlines() if line.strip())


def build(kernel: Kernel, out: Path, init: bytes | None = None) -> Path:
    """The initramfs for ``kernel`` in directory ``out`` (made if missing), built unless a file
    with the same content hash is there already; returns its path. ``init``: another ``/init``
    than Mariposa's (the tests' guests that boot an OS of their own use it)."""
    busybox, applets = _busybox()
    init = init_script() if init is None else init
    modules = [(name, (kernel.modules / f"{name}.ko").read_bytes()) for name in kernel.module_order]
    digest = hashlib.sha256(FORMAT)
    for part in (kernel.version.encode(), init, busybox, *(b for m in modules for b in (m[0].encode(), m[1]))):
        digest.update(hashlib.sha256(part).digest())
    out = Path(out)
    path = out / f"initramfs-{digest.hexdigest()[:16]}.cpio.gz"
    if path.is_file():
        return path

    entries: list[tuple[str, int, bytes, int]] = [(d, stat.S_IFDIR | 0o755, b"", 0) for d in DIRS]
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", os.makedev(5, 1)))
    entries.append(("dev/null", stat.S_IFCHR | 0o666, b"", os.makedev(1, 3)))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, busybox, 0))
    for applet in applets:
        if applet in ("bin/busybox", "init", "linuxrc") or "/" not in applet or applet.split("/")[0] not in DIRS:
            continue
        # relative, so the same links work through the bind mount at /.mariposa/bin in the image
        target = os.path.relpath("bin/busybox", os.path.dirname(applet)).encode()
        entries.append((applet, stat.S_IFLNK | 0o777, target, 0))
    entries.append(("init", stat.S_IFREG | 0o755, init, 0))
    for name, ko in modules:
        entries.append((f"modules/{name}.ko", stat.S_IFREG | 0o644, ko, 0))
    entries.append(("modules/order", stat.S_IFREG | 0o644, "".join(f"{n}\n" for n, _ in modules).encode(), 0))

    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".initramfs-", dir=out)
    try:
        with os.fdopen(fd, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
            gz.write(newc(entries))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
