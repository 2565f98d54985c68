"""What the watched manifest directory made of each file: applied, invalid (with the problems),
refused, or removed (a project's meta file, ``NAME.meta.yaml``, may also be waiting for its
project); and the project's link to its file (orphaned when the file goes)."""

from __future__ import annotations

import json

from mariposa.store import events as event_store
from mariposa.store.db import now

AUTHOR = "file"  # how the watched directory signs the audit trail
_IS_META = "(path LIKE '%.meta.yaml' OR path LIKE '%.meta.yml')"


def known(db, directory: str) -> dict[str, str]:
    rows = db.query("SELECT path, state FROM manifest_files WHERE path LIKE ?", [directory.rstrip("/") + "/%"])
    return {r["path"]: r["state"] for r in rows}


def already_seen(db, path: str, digest: str) -> bool:
    row = list(db.query("SELECT hash, state FROM manifest_files WHERE path = ?", [path]))
    return bool(row) and row[0]["hash"] == digest and row[0]["state"] != "removed"


def orphan(db, project_id: str, path: str) -> None:
    db.execute("UPDATE projects SET source_state = 'orphaned' WHERE id = ?", [project_id])
    event_store.record(db, "project.orphaned", f"{path} was removed; the project keeps running, orphaned from its file",
                       project_id=project_id, author=AUTHOR)


def adopt_again(db, project_id: str) -> None:
    db.execute("UPDATE projects SET source_state = NULL WHERE id = ?", [project_id])


def record(db, path: str, project: str, digest: str, state: str, error: str | None, details) -> None:
    db.execute(
        "INSERT INTO manifest_files (path, project, hash, state, error, details, seen) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(path) DO UPDATE SET project = excluded.project, hash = excluded.hash, state = excluded.state, "
        "error = excluded.error, details = excluded.details, seen = excluded.seen",
        [path, project, digest, state, error, json.dumps(details) if details else None, now()],
    )
    if state in ("invalid", "refused"):
        row = list(db.query("SELECT id FROM projects WHERE name = ?", [project]))
        event_store.record(db, "manifest.invalid", error or "invalid", project_id=row[0]["id"] if row else None,
                           author=AUTHOR)


def file_status(db, project: str) -> dict | None:
    """What the watched directory last made of the file for ``project`` (for `project get`)."""
    return _status(db, project, f"NOT {_IS_META}")


def meta_file_status(db, project: str) -> dict | None:
    """What the watched directory last made of ``project``'s meta file (for `project get`)."""
    return _status(db, project, _IS_META)


def _status(db, project: str, which: str) -> dict | None:
    rows = list(db.query(f"SELECT * FROM manifest_files WHERE project = ? AND {which} ORDER BY seen DESC LIMIT 1",
                         [project]))
    if not rows:
        return None
    row = dict(rows[0])
    row["details"] = json.loads(row["details"]) if row["details"] else []
    return row
