"""The per-instance directories the daemon keeps on the host for instances to mount (secret files,
live mdata): ``ROOT/PROJECT/INSTANCE``. Both kinds go with their instance, and the ones a crash
left behind are swept at start; this is that shared bookkeeping. Blocking: call from a thread."""

from __future__ import annotations

import shutil
from pathlib import Path


def discard(root: Path, project: str, instance_id: str) -> None:
    """An instance is gone: its directory goes, and its project's with the last (idempotent)."""
    shutil.rmtree(root / project / instance_id, ignore_errors=True)
    try:
        (root / project).rmdir()
    except OSError:
        pass  # other instances' directories are there (or it is gone already)


def sweep(root: Path, live: set[str]) -> int:
    """Remove the directories of instances not in ``live`` (gone while the daemon was down); how many."""
    gone = 0
    if not root.is_dir():
        return 0
    for base in root.iterdir():
        for directory in base.iterdir():
            if directory.name not in live:
                shutil.rmtree(directory, ignore_errors=True)
                gone += 1
        try:
            base.rmdir()
        except OSError:
            pass
    return gone
