"""Mariposa's guest kernel: Debian's cloud kernel, extracted once into a directory of its own.

Why Debian's ``linux-image-cloud-amd64``: it comes from a registry this host already trusts (the
set-up script's apt), it is small (virtio, ext4, no hardware drivers) and it boots under both KVM
and TCG. Why extracted: QEMU's ``-M microvm`` boots an uncompressed ELF ``vmlinux`` directly (no
firmware, no real-mode setup), so the bzImage's compressed payload is taken out once here.

The payload is found from the bzImage's own boot header (``payload_offset``/``payload_length``,
boot protocol 2.08+), and only when that header is missing by scanning for a compression magic;
the cloud kernel's is LZ4 (legacy frame, decompressed with ``lz4cat``), with the uncompressed size
appended, which is checked. gzip and xz payloads are handled with the standard library.

Modules: virtio is modular in that kernel, so the modules ``/init`` loads (in ``MODULES`` order,
each after the modules its ``depends=`` names) are copied out uncompressed, with a ``modules/order``
file listing them in load order. Modules built into the kernel (``modules.builtin``; ext4 is, in
Debian 12's) are skipped, so the same list works on a kernel that builds them in or not.

Layout of the directory (``DEFAULT_DIR``)::

    vmlinux            the uncompressed kernel
    vmlinuz            the package's bzImage as it came (for bootloaders and ``-M q35``)
    modules/NAME.ko    the modules, uncompressed
    modules/order      their load order, one name a line
    modules/wanted     the ``MODULES`` they were extracted for (another list: extracted again)
    version            the kernel release (written last: its presence means complete)

Run ``python -m mariposa.vm.kernel fetch [DIR]`` (the set-up script does) to make it.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import attrs

from mariposa.drivers.base import RuntimeUnavailable

__all__ = ["DEFAULT_DIR", "Kernel", "MODULES", "PACKAGE", "fetch", "find"]

DEFAULT_DIR = "/var/lib/mariposa/kernel"
PACKAGE = "linux-image-cloud-amd64"

# The load order measured on this kernel (issue 15): virtio's core first, then both transports
# (microvm's MMIO and PCI for q35), then net and block; then ext4 and what it needs, where those
# are modules (crc32c_generic is ext4's soft dependency for metadata_csum, not in ``depends=``).
MODULES = (
    "virtio_ring", "virtio", "virtio_mmio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "failover", "net_failover", "virtio_net", "virtio_blk",
    "virtio_console",  # the QEMU guest agent's port, for guests that boot their own OS
    "crc16", "crc32c_generic", "mbcache", "jbd2", "ext4",
)

LZ4_LEGACY = bytes.fromhex("02214c18")
GZIP = bytes.fromhex("1f8b08")
XZ = bytes.fromhex("fd377a585a00")


@attrs.frozen
class Kernel:
    vmlinux: Path
    modules: Path
    version: str

    @property
    def module_order(self) -> list[str]:
        """The modules to load, in order (names without ``.ko``)."""
        return (self.modules / "order").read_text().split()


def _dir(dir: Path | str | None) -> Path:
    return Path(dir or os.environ.get("MARIPOSA_KERNEL_DIR") or DEFAULT_DIR)


def find(dir: Path | None = None) -> Kernel:
    """The extracted kernel in ``dir``; ``RuntimeUnavailable`` saying how to make it when absent."""
    path = _dir(dir)
    version = path / "version"
    vmlinux = path / "vmlinux"
    modules = path / "modules"
    if not (version.is_file() and vmlinux.is_file() and (modules / "order").is_file()):
        raise RuntimeUnavailable(f"qemu: no kernel in {path}: run python -m mariposa.vm.kernel fetch")
    return Kernel(vmlinux=vmlinux, modules=modules, version=version.read_text().strip())


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, **kwargs)
    except FileNotFoundError as e:
        raise RuntimeUnavailable(f"qemu kernel: {argv[0]} is not installed ({e})") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip() if isinstance(proc.stderr, bytes) else proc.stderr
        raise RuntimeUnavailable(f"qemu kernel: {' '.join(argv)} failed (exit {proc.returncode}): {err}")
    return proc


def _package() -> str:
    """The versioned package ``linux-image-cloud-amd64`` depends on, e.g.
    ``linux-image-6.1.0-56-cloud-amd64``; after one ``apt-get update`` if apt knows none yet."""
    for attempt in range(2):
        proc = subprocess.run(["apt-cache", "depends", PACKAGE], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            key, _, value = line.strip().partition(":")
            if key == "Depends" and value.strip().startswith("linux-image-"):
                return value.strip()
        if attempt == 0:
            _run(["apt-get", "update", "-qq"])
    raise RuntimeUnavailable(f"qemu kernel: apt knows no {PACKAGE} (apt-cache depends {PACKAGE}: "
                             f"{(proc.stderr or proc.stdout).strip()})")


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage."""
    payload, exact = _payload(bzimage)
    if payload.startswith(LZ4_LEGACY):
        if exact:
            # the kernel's LZ4 payload ends with the uncompressed size (4 bytes, little-endian),
            # which lz4cat would take as a broken frame: cut it off and check it instead
            size = struct.unpack("<I", payload[-4:])[0]
            out = _run(["lz4cat"], input=payload[:-4]).stdout
            if len(out) != size:
                raise RuntimeUnavailable(f"qemu kernel: LZ4 payload gave {len(out)} bytes, the header says {size}")
        else:
            # the stream runs on into the rest of the file: lz4cat complains about the trailing
            # bytes after writing the whole kernel, so only its output is judged (ELF, below)
            try:
                out = subprocess.run(["lz4cat"], input=payload, capture_output=True).stdout
            except FileNotFoundError:
                raise RuntimeUnavailable("qemu kernel: lz4cat is not installed (apt-get install lz4)") from None
    elif payload.startswith(GZIP):
        out = zlib.decompressobj(31).decompress(payload)  # one gzip member: what follows it is ignored
    elif payload.startswith(XZ):
        out = lzma.LZMADecompressor().decompress(payload)
    else:
        raise RuntimeUnavailable(f"qemu kernel: unknown bzImage compression (payload starts {payload[:6].hex()})")
    if not out.startswith(b"\x7fELF"):
        raise RuntimeUnavailable("qemu kernel: the bzImage's payload is not an ELF kernel")
    return out


def _payload(bzimage: bytes) -> tuple[bytes, bool]:
    """The compressed kernel, and whether it is exactly that (from the boot header) or runs on to
    the end of the file (found by its magic)."""
    if bzimage[0x202:0x206] == b"HdrS" and struct.unpack_from("<H", bzimage, 0x206)[0] >= 0x208:
        setup_sects = bzimage[0x1F1] or 4
        offset, length = struct.unpack_from("<II", bzimage, 0x248)
        start = (setup_sects + 1) * 512 + offset
        payload = bzimage[start:start + length]
        if payload.startswith((LZ4_LEGACY, GZIP, XZ)):
            return payload, True
    # no usable header (a very old kernel): the first compression magic
    for magic in (LZ4_LEGACY, GZIP, XZ):
        at = bzimage.find(magic)
        if at >= 0:
            return bzimage[at:], False
    raise RuntimeUnavailable("qemu kernel: no compressed payload found in the bzImage")


def _module_name(path: Path) -> str:
    name = path.name
    for suffix in (".xz", ".zst", ".gz"):
        name = name.removesuffix(suffix)
    return name.removesuffix(".ko").replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return _run(["zstd", "-dc"], input=data).stdout
    return data


def _modinfo(ko: bytes, key: str) -> list[str]:
    """The values of one ``.modinfo`` key (``depends``, ``softdep``): NUL-terminated
    ``key=value`` strings in the module's ELF, found without parsing the ELF."""
    values = []
    needle = b"\0" + key.encode() + b"="
    at = ko.find(needle)
    while at >= 0:
        end = ko.index(b"\0", at + len(needle))
        values.append(ko[at + len(needle):end].decode(errors="replace"))
        at = ko.find(needle, end)
    return values


def module_order(tree: Path, wanted: tuple[str, ...] = MODULES) -> list[tuple[str, bytes]]:
    """The modules of ``wanted`` that ``tree`` (``lib/modules/VERSION``) has as modules, with the
    modules they depend on, each after its dependencies: (name, uncompressed .ko)."""
    builtin = {_module_name(Path(line)) for line in (tree / "modules.builtin").read_text().split()} \
        if (tree / "modules.builtin").exists() else set()
    files = {_module_name(p): p for p in (tree / "kernel").rglob("*.ko*")}
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str, needed_by: str | None) -> None:
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        if name not in files:
            if needed_by is None:
                return  # an optional module this kernel has neither built in nor as a module
            raise RuntimeUnavailable(f"qemu kernel: module {name} (needed by {needed_by}) not in {tree}")
        seen.add(name)
        ko = _module_bytes(files[name])
        for deps in _modinfo(ko, "depends"):
            for dep in filter(None, deps.split(",")):
                visit(dep, name)
        order.append((name, ko))

    for name in wanted:
        visit(name, None)
    return order


def fetch(dest: Path) -> None:
    """Download the cloud kernel package and extract ``vmlinux`` and the modules into ``dest``.
    Does nothing when ``dest`` already holds a complete kernel."""
    dest = Path(dest)
    if all((dest / name).is_file() for name in ("version", "vmlinux", "vmlinuz", "modules/order")) \
            and (dest / "modules" / "wanted").is_file() \
            and (dest / "modules" / "wanted").read_text().split() == list(MODULES):
        return  # complete, for the modules this Mariposa wants (a new one: extracted again)
    dest.mkdir(parents=True, exist_ok=True)
    package = _package()
    with tempfile.TemporaryDirectory(prefix="mariposa-kernel-", dir=dest) as tmp:
        work = Path(tmp)
        # apt drops to user _apt for downloads, which cannot write a root-owned temp dir
        os.chmod(work, 0o777)
        try:
            _run(["apt-get", "download", "-q", package], cwd=work)
        except RuntimeUnavailable:
            # package lists older than the mirror name a version it no longer has
            _run(["apt-get", "update", "-qq"])
            package = _package()
            _run(["apt-get", "download", "-q", package], cwd=work)
        debs = sorted(work.glob("*.deb"))
        if not debs:
            raise RuntimeUnavailable(f"qemu kernel: apt-get download {package} left no .deb")
        root = work / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
        images = sorted((root / "boot").glob("vmlinuz-*"))
        if not images:
            raise RuntimeUnavailable(f"qemu kernel: {debs[0].name} holds no boot/vmlinuz-*")
        version = images[0].name.removeprefix("vmlinuz-")
        tree = next((d for d in (root / "lib" / "modules" / version, root / "usr" / "lib" / "modules" / version)
                     if d.is_dir()), None)
        if tree is None:
            raise RuntimeUnavailable(f"qemu kernel: {debs[0].name} holds no modules for {version}")

        (work / "vmlinux").write_bytes(extract_vmlinux(images[0].read_bytes()))
        shutil.copyfile(images[0], work / "vmlinuz")
        modules = work / "modules"
        modules.mkdir()
        order = module_order(tree)
        for name, ko in order:
            (modules / f"{name}.ko").write_bytes(ko)
        (modules / "order").write_text("".join(f"{name}\n" for name, _ in order))
        (modules / "wanted").write_text("".join(f"{name}\n" for name in MODULES))

        (dest / "version").unlink(missing_ok=True)
        os.replace(work / "vmlinux", dest / "vmlinux")
        os.replace(work / "vmlinuz", dest / "vmlinuz")
        if (dest / "modules").exists():
            shutil.rmtree(dest / "modules")
        os.replace(modules, dest / "modules")
        (work / "version").write_text(version + "\n")
        os.replace(work / "version", dest / "version")


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or argv[0] != "fetch":
        print("usage: python -m mariposa.vm.kernel fetch [DIR]", file=sys.stderr)
        return 2
    dest = _dir(argv[1] if len(argv) == 2 else None)
    try:
        fetch(dest)
        kernel = find(dest)
    except RuntimeUnavailable as e:
        print(e, file=sys.stderr)
        return 1
    print(f"kernel {kernel.version} in {dest} (modules: {' '.join(kernel.module_order)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
