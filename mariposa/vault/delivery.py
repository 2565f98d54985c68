"""Secret files for instances: ``RUN_DIR/secrets/PROJECT/INSTANCE/NAME`` on the host, bind-mounted
read-only at ``/run/secrets`` in the container.

Why a host directory on a tmpfs, bind-mounted, and not the alternatives:
- environment variables and labels show in ``docker inspect`` (and env in /proc/PID/environ);
- writing into a container tmpfs with ``put-archive`` before start lands in the image layer on
  disk (the tmpfs is mounted only at start), and after start the process may read before the file
  is there;
- a bind mount shows only its *path* in ``docker inspect``, the files exist before the process
  starts, and a change is one rename in the directory, which the container sees at once (the
  directory, not the file, is mounted): secrets change in place, without a restart.

The run directory must be a tmpfs (or ramfs), so no value ever reaches a disk: refused otherwise.
It lives outside the state directory (``/run/mariposa`` by default), so a copy of the state
directory never carries a value in the clear. Files are mode 0400 and the instance's directory
0500, owned by the service's ``user`` (UID[:GID], or root), so only that user reads them.

Everything here blocks: call it from a worker thread.
"""

from __future__ import annotations

import os
from pathlib import Path

from mariposa import instance_dirs
from mariposa.errors import MariposaError

MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
TARGET = "/run/secrets"


class DeliveryError(MariposaError):
    kind = "secret-delivery"


def filesystem_of(path: Path) -> str | None:
    """The type of the filesystem ``path`` is on, from /proc/self/mountinfo (the longest mount
    point that contains it)."""
    best, kind = "", None
    target = str(path.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        mount = parts[4].replace("\\040", " ")
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, kind = mount, rest.split()[0]
    return kind


def owner_of(user: str | None) -> tuple[int, int]:
    """The (uid, gid) the files belong to: the service's ``user`` as UID[:GID], root by default."""
    if user is None or user in ("root", "0", "root:root", "0:0"):
        return 0, 0
    name, _, group = user.partition(":")
    if not name.isdigit() or (group and not group.isdigit()):
        raise DeliveryError(f"user {user!r}: a service with secrets gives its user as UID or UID:GID")
    return int(name), int(group) if group else 0


def _write(directory: Path, name: str, value: bytes, uid: int, gid: int) -> None:
    """One file, whole, 0400 and owned from its first byte, renamed into place."""
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o400)
    try:
        os.fchmod(fd, 0o400)
        os.fchown(fd, uid, gid)
        os.write(fd, value)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, directory / name)


class SecretFiles:
    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir) / "secrets"

    def _checked_root(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        kind = filesystem_of(self.root)
        if kind not in MEMORY_FILESYSTEMS:
            raise DeliveryError(f"secret files go to {self.root}, which is on {kind or 'an unknown filesystem'}, "
                                "not a tmpfs: set run_dir (--run-dir) to a directory on a tmpfs, such as /run/mariposa")
        return self.root

    def directory(self, project: str, instance_id: str) -> Path:
        return self.root / project / instance_id

    def deliver(self, project: str, instance_id: str, files: dict[str, bytes], user: str | None) -> str:
        """Write an instance's secret files before it is created; the directory to mount."""
        uid, gid = owner_of(user)
        base = self._checked_root() / project
        base.mkdir(exist_ok=True, mode=0o700)
        directory = base / instance_id
        directory.mkdir(exist_ok=True, mode=0o700)
        for name, value in files.items():
            _write(directory, name, value, uid, gid)
        os.chown(directory, uid, gid)
        os.chmod(directory, 0o500)
        return str(directory)

    def refresh(self, project: str, name: str, value: bytes) -> int:
        """Rewrite ``name`` in place in every instance directory of ``project`` that has it; how many."""
        base = self.root / project
        count = 0
        try:
            entries = list(base.iterdir())
        except FileNotFoundError:
            return 0
        for directory in entries:
            current = directory / name
            try:
                st = current.stat()
            except FileNotFoundError:
                continue
            _write(directory, name, value, st.st_uid, st.st_gid)
            count += 1
        return count

    def discard(self, project: str, instance_id: str) -> None:
        """An instance is gone: its files go with it (idempotent)."""
        instance_dirs.discard(self.root, project, instance_id)

    def sweep(self, live: set[str]) -> int:
        """Remove the directories of instances that no longer exist (after a crash); how many."""
        return instance_dirs.sweep(self.root, live)
