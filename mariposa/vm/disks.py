"""The disks a VM boots with, made with the host's own tools (``mkfs.ext4 -d``, ``qemu-img``):

- the **base disk**: a raw ext4 image of an image's rootfs, made once per image and never written
  (every instance boots an overlay of it);
- the **overlay**: a qcow2 per instance over the raw base, its root disk (``/dev/vda``);
- the **config disk**: what ``/init`` (``init.sh``) needs to run the command (``/dev/vdb``);
- **volume disks**: one ext4 disk per named volume, made once and kept (``/dev/vdc``...).

Why the config disk is ext4 and not FAT or an ISO: ``mkfs.ext4 -d`` is already needed for the
base disk (no second tool, no mtools or genisoimage), ext4 is built into the guest kernel while
FAT and ISO 9660 are modules, and it keeps modes (the environment file is 0600: it may hold
secrets) and names exactly (FAT folds case and refuses characters mdata keys may have). It is made
without a journal, so the guest mounts it read-only with nothing to replay.

Its files::

    command    the argv, one base64-encoded argument a line (absent: the image's /sbin/init)
    env        KEY=base64(VALUE) lines
    workdir    the working directory
    user       UID:GID
    mounts     DEVICE TARGET ro|rw lines (the volume disks, in the order given to qemu_argv)
    mdata/...  and any other file the driver passes in ``files``

Base64 keeps every argument and value whole (spaces, quotes, newlines) through a shell that reads
lines. Every call is synchronous (the driver runs them in a worker thread) and fails with
``DriverError`` carrying the tool's own message.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mariposa.drivers.base import DriverError, RuntimeUnavailable

__all__ = ["base_disk", "config_disk", "config_files", "files_disk", "import_image", "needed_mb", "overlay",
           "parse_config", "probe_image", "volume_disk"]

MB = 1024 * 1024
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DEVICE = re.compile(r"/dev/vd[a-z]+\Z")


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        package = "qemu-utils" if argv[0] == "qemu-img" else "e2fsprogs"
        raise RuntimeUnavailable(f"qemu: {argv[0]} is not installed (apt-get install {package})") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise DriverError(f"{what}: {argv[0]} failed (exit {proc.returncode}): {detail}")
    return proc


def _du(root: Path) -> int:
    """Bytes the tree takes on disk (allocated blocks, not following symlinks), plus a block per
    entry for its inode and directory entry."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            total += st.st_blocks * 512 + 4096
    return total


def _mkfs(out: Path, size_bytes: int, source: Path | None, what: str, *extra: str) -> Path:
    """An ext4 filesystem of ``size_bytes`` at ``out``, filled from ``source``; written to a temp
    file beside ``out`` and renamed, so ``out`` is either whole or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        os.ftruncate(fd, size_bytes)
        os.close(fd)
        argv = ["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", *extra]
        if source is not None:
            argv += ["-d", str(source)]
        _run(argv + [tmp], what)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return out


def needed_mb(rootfs: Path) -> int:
    """The size of a base disk that holds the tree ``rootfs`` with room to spare: 1.3 times what
    it uses plus 64 MB (the journal's and the inode tables' share), in MB."""
    return -(-(int(_du(Path(rootfs)) * 1.3) + 64 * MB) // MB)


def base_disk(rootfs: Path, out: Path, size_mb: int | None = None) -> Path:
    """A raw ext4 disk holding the tree ``rootfs``, of ``size_mb`` (default ``needed_mb``). The
    file is sparse: a 10 GB disk of a 5 MB tree takes the tree and ext4's metadata (its journal,
    64 MB), so a VM's package disk is its filesystem's size, not an empty device behind it."""
    rootfs = Path(rootfs)
    if not rootfs.is_dir():
        raise DriverError(f"base disk: the rootfs {rootfs} is not a directory")
    if size_mb is None:
        size = needed_mb(rootfs) * MB
    else:
        if size_mb < 1:
            raise DriverError(f"base disk: size {size_mb} MB is too small")
        size = size_mb * MB
    return _mkfs(Path(out), size, rootfs, f"base disk {out} from {rootfs}", "-L", "mariposa-root")


def overlay(base: Path, out: Path, virtual_size_mb: int | None = None) -> Path:
    """A qcow2 disk at ``out`` whose reads fall through to the raw ``base`` and whose writes stay in
    it; its virtual size is the base's unless ``virtual_size_mb`` is given (never smaller).
    The guest's filesystem keeps the base's size: a larger overlay only leaves room to grow it."""
    base = Path(base).resolve()
    out = Path(out)
    fmt, base_size = probe_image(base, standalone=True)
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(base)]
    size_arg: list[str] = []
    if virtual_size_mb is not None:
        if virtual_size_mb * MB < base_size:
            raise DriverError(f"overlay: {virtual_size_mb} MB is smaller than the base disk {base} "
                              f"({-(-base_size // MB)} MB)")
        size_arg = [f"{virtual_size_mb}M"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        _run(argv + [str(tmp)] + size_arg, f"overlay {out} over {base}")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8", "surrogateescape")).decode()


def config_files(*, command: list[str] | None, env: Mapping[str, str], workdir: str | None,
                 user: tuple[int, int] | None, mounts: list[tuple[str, str, bool]],
                 files: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
    """The config disk's files, by relative path (pure: checked here, written by ``config_disk``).
    ``ValueError`` names what is wrong."""
    out: dict[str, bytes] = {}
    if command is not None:
        if not command:
            raise ValueError("command: an empty argv")
        for arg in command:
            if "\0" in arg:
                raise ValueError(f"command: argument {arg!r} holds a NUL")
        out["command"] = "".join(_b64(arg) + "\n" for arg in command).encode()
    lines = []
    for key, value in env.items():
        if not _ENV_KEY.match(key):
            raise ValueError(f"environment: {key!r} is not a variable name")
        if "\0" in value:
            raise ValueError(f"environment: {key} holds a NUL")
        lines.append(f"{key}={_b64(value)}\n")
    out["env"] = "".join(lines).encode()
    if workdir is not None:
        if not workdir.startswith("/") or "\n" in workdir or "\0" in workdir:
            raise ValueError(f"workdir: {workdir!r} is not an absolute path")
        out["workdir"] = workdir.encode()
    if user is not None:
        uid, gid = user
        if not (isinstance(uid, int) and isinstance(gid, int) and uid >= 0 and gid >= 0):
            raise ValueError(f"user: {user!r} is not a pair of numeric ids")
        out["user"] = f"{uid}:{gid}\n".encode()
    mount_lines = []
    for device, target, read_only in mounts:
        if not _DEVICE.match(device):
            raise ValueError(f"mounts: {device!r} is not a virtio disk (/dev/vdX)")
        if not target.startswith("/") or target == "/" or any(c.isspace() for c in target) or "\0" in target:
            raise ValueError(f"mounts: target {target!r} must be an absolute path other than / without spaces")
        mount_lines.append(f"{device} {target} {'ro' if read_only else 'rw'}\n")
    if mount_lines:
        out["mounts"] = "".join(mount_lines).encode()
    for name, data in (files or {}).items():
        parts = name.split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"files: {name!r} is not a relative path")
        if parts[0] in ("command", "env", "workdir", "user", "mounts"):
            raise ValueError(f"files: {name!r} would replace the config's own file {parts[0]}")
        out[name] = bytes(data)
    return out


def parse_config(files: Mapping[str, bytes]) -> dict:
    """What ``config_files`` wrote, read back (the inverse, for tests and for the driver's
    inspection of an instance's config)."""
    command = None
    if "command" in files:
        command = [base64.b64decode(line).decode("utf-8", "surrogateescape")
                   for line in files["command"].decode().splitlines()]
    env = {}
    for line in files.get("env", b"").decode().splitlines():
        key, _, value = line.partition("=")
        env[key] = base64.b64decode(value).decode("utf-8", "surrogateescape")
    user = None
    if "user" in files:
        uid, gid = files["user"].decode().strip().split(":")
        user = (int(uid), int(gid))
    mounts = []
    for line in files.get("mounts", b"").decode().splitlines():
        device, target, mode = line.split(" ")
        mounts.append((device, target, mode == "ro"))
    return {"command": command, "env": env, "workdir": files["workdir"].decode() if "workdir" in files else None,
            "user": user, "mounts": mounts,
            "files": {k: v for k, v in files.items() if k not in ("command", "env", "workdir", "user", "mounts")}}


def config_disk(out: Path, *, command: list[str] | None, env: dict[str, str], workdir: str | None,
                user: tuple[int, int] | None, mounts: list[tuple[str, str, bool]],
                files: Mapping[str, bytes] | None = None) -> Path:
    """The config disk at ``out`` (see the module's docstring); ``DriverError`` for bad input."""
    try:
        content = config_files(command=command, env=env, workdir=workdir, user=user, mounts=mounts, files=files)
    except ValueError as e:
        raise DriverError(f"config disk: {e}") from None
    return files_disk(out, content, "mariposa-cfg", mode=0o644, modes={"env": 0o600})


def files_disk(out: Path, files: Mapping[str, bytes], label: str, mode: int = 0o444,
               modes: Mapping[str, int] | None = None) -> Path:
    """A small ext4 disk of ``files`` (relative name: bytes; ``mode``, or ``modes[name]``), made
    without a journal (the guest mounts it read-only, nothing to replay) and whole each time
    (a temporary file renamed over ``out``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{label}-", dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir(mode=0o755)
        for name, data in files.items():
            parts = name.split("/")
            if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise DriverError(f"{label} disk: {name!r} is not a relative path")
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod((modes or {}).get(name, mode))
        used = sum(len(d) + 4096 for d in files.values())
        size = max(4 * MB, -(-int(used * 1.2 + 2 * MB) // MB) * MB)
        return _mkfs(out, size, root, f"{label} disk {out}", "-O", "^has_journal", "-L", label)


def volume_disk(path: Path, size_mb: int = 1024) -> Path:
    """A named volume's ext4 disk, made the first time and kept from then on (its data is the
    volume's): an existing file is returned untouched."""
    path = Path(path)
    if path.exists():
        return path
    if size_mb < 4:
        raise DriverError(f"volume disk {path}: {size_mb} MB is too small (4 MB at least)")
    return _mkfs(path, size_mb * MB, None, f"volume disk {path}", "-L", "mariposa-vol")


def probe_image(path: Path, standalone: bool = False) -> tuple[str, int]:
    """A disk image's format ('qcow2' or 'raw') and virtual size in bytes; ``DriverError`` naming
    the path when it is missing or of any other format."""
    path = Path(path)
    if not path.is_file():
        raise DriverError(f"disk image {path} does not exist")
    # -U: a disk a running VM has open is locked; reading its header is safe all the same
    proc = _run(["qemu-img", "info", "-U", "--output=json", str(path)], f"disk image {path}")
    try:
        info = json.loads(proc.stdout)
        fmt, size = info["format"], int(info["virtual-size"])
    except (ValueError, KeyError, TypeError):
        raise DriverError(f"disk image {path}: qemu-img info gave no format and size") from None
    if fmt not in ("qcow2", "raw"):
        raise DriverError(f"disk image {path} is {fmt}, not qcow2 or raw: convert it first "
                          f"(qemu-img convert -O qcow2 {path} OUT.qcow2)")
    if standalone and info.get("backing-filename"):  # a user's image: its chain would reach outside
        raise DriverError(f"disk image {path} is an overlay of {info['backing-filename']}: flatten it first "
                          f"(qemu-img convert -O qcow2 {path} OUT.qcow2)")
    return fmt, size


def import_image(source: Path, cache: Path, pinned: str | None) -> Path:
    """A disk image copied once into ``cache`` under its content's sha256 (``cache/HEX.FORMAT``),
    which every instance's overlay is made over: the user's file may change or go later without
    touching VMs made from it. With ``pinned`` (``sha256:HEX``, the version's), a copy already
    there is used; a source whose content differs is refused. Hashing and copying are one pass;
    the copy is written beside its final name and renamed, so it is whole or absent."""
    source, cache = Path(source), Path(cache)
    if pinned:
        for found in cache.glob(f"{pinned.removeprefix('sha256:')}.*"):
            return found
    fmt, _ = probe_image(source, standalone=True)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".import-", dir=cache)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            while chunk := src.read(4 * MB):
                digest.update(chunk)
                out.write(chunk)
        found_id = f"sha256:{digest.hexdigest()}"
        if pinned and found_id != pinned:
            raise DriverError(f"disk image {source} changed since the version was made (pinned {pinned}, now "
                              f"{found_id}): update the project to pin it anew")
        final = cache / f"{digest.hexdigest()}.{fmt}"
        os.chmod(tmp, 0o444)  # a base: never written, whatever opens it
        os.replace(tmp, final)
        return final
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
