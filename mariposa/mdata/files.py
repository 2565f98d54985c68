"""Live mdata files: ``RUN_DIR/mdata/PROJECT/INSTANCE/KEY`` on the host, the directory
bind-mounted read-only at ``/run/mariposa/mdata`` in the instance.

A reader must never see half a change: a file half written, or a new value of one key next to the
old value of another. So the values live in a directory of their own, swapped in whole, the way
Kubernetes' AtomicWriter updates a ConfigMap volume::

    ..2026_11_26_20_10_00.123456/KEY   the values, written once, never changed
    ..data -> ..2026_11_26_20_10_00.123456
    KEY -> ..data/KEY                  what the instance opens

A change writes a new timestamped directory, points ``..data_tmp`` at it and renames that over
``..data`` (one atomic rename), adds links for new keys, drops links of gone keys, and removes the
old directory. The links are relative, so they resolve inside the container's mount. The mount is
of the instance's directory (not of a file), so the container sees each rename at once.

mdata is configuration, not a secret (a secret cannot be named in it; manifest/shapes.py): files
are 0444 and directories 0755, so any user in the instance reads them.

Everything here blocks: call it from a worker thread.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from mariposa import instance_dirs

TARGET = "/run/mariposa/mdata"
DATA = "..data"
_TMP_LINK = "..data_tmp"


def _read_values(data: Path) -> dict[str, str] | None:
    """The values the directory shows now (None if it has none yet)."""
    try:
        names = os.listdir(data)
    except (FileNotFoundError, NotADirectoryError):
        return None
    values = {}
    for name in names:
        try:
            values[name] = (data / name).read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            return None  # unreadable: write it again
    return values


def _write_file(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
    try:
        os.write(fd, value.encode("utf-8"))
    finally:
        os.close(fd)


class MdataFiles:
    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir) / "mdata"

    def directory(self, project: str, instance_id: str) -> Path:
        return self.root / project / instance_id

    def write(self, project: str, instance_id: str, values: Mapping[str, str]) -> tuple[str, bool]:
        """Make the instance's files show ``values``; (the directory to mount, whether anything
        changed). Idempotent: the same values again change nothing, so a caller may refresh
        every instance and signal only those it changed."""
        directory = self.directory(project, instance_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        if _read_values(directory / DATA) == dict(values):
            return str(directory), False
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
        fresh = directory / f"..{stamp}"
        fresh.mkdir(mode=0o755)
        for key, value in values.items():
            _write_file(fresh / key, value)
        os.chmod(fresh, 0o755)
        tmp_link = directory / _TMP_LINK
        tmp_link.unlink(missing_ok=True)
        os.symlink(fresh.name, tmp_link)
        os.replace(tmp_link, directory / DATA)  # the one moment readers switch to the new values
        for key in values:
            link = directory / key
            if not link.is_symlink():
                link.unlink(missing_ok=True)
                os.symlink(f"{DATA}/{key}", link)
        for entry in os.listdir(directory):
            path = directory / entry
            if entry in (DATA, fresh.name) or entry in values:
                continue
            if entry.startswith("..") and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)  # the values before (or a crash's leftovers)
            else:
                path.unlink(missing_ok=True)  # a key no longer set, or a stale temporary link
        return str(directory), True

    def values(self, project: str, instance_id: str) -> dict[str, str] | None:
        """What the instance reads now (None: no files yet)."""
        return _read_values(self.directory(project, instance_id) / DATA)

    def discard(self, project: str, instance_id: str) -> None:
        instance_dirs.discard(self.root, project, instance_id)

    def sweep(self, live: set[str]) -> int:
        return instance_dirs.sweep(self.root, live)
