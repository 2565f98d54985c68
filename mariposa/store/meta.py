"""Project meta in the store: each function one transaction (``Store.call``), so a CAS check and
the write it guards, or an increment's read and write, can never interleave with another
caller's (the store has one writer). Every change records an event with the caller's author."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping

import sqlite_utils

from mariposa.errors import BadRequest, Conflict, NotFound
from mariposa.store import events
from mariposa.store.db import now
from mariposa.store.rows import ProjectRow

KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}")
MAX_VALUE = 64 * 1024  # bytes of one value: meta is configuration, not a blob store
MAX_KEYS = 10_000


def check_key(key: object) -> str:
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        shown = repr(key)[:80]
        raise BadRequest(f"meta key {shown} must be 1-128 letters, digits, '_' or '-', not starting with '-' "
                         "(it is used as {{ .meta.KEY }})")
    return key


def check_value(key: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"meta {key}: the value must be a string or null, not {type(value).__name__}")
    if len(value.encode()) > MAX_VALUE or "\0" in value:
        raise BadRequest(f"meta {key}: the value must be text of at most {MAX_VALUE // 1024} KiB")
    return value


def _cas() -> str:
    return uuid.uuid4().hex[:16]


def value_hash(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


def values(db: sqlite_utils.Database, project_id: str) -> dict[str, str | None]:
    """Every key's value, for interpolation."""
    rows = db.execute("SELECT key, value FROM project_meta WHERE project_id = ?", [project_id]).fetchall()
    return {k: v for k, v in rows}


def listing(db: sqlite_utils.Database, project_id: str) -> list[dict]:
    rows = db.query("SELECT key, value, cas FROM project_meta WHERE project_id = ? ORDER BY key", [project_id])
    return [dict(r) for r in rows]


def get(db: sqlite_utils.Database, project: ProjectRow, key: str) -> dict:
    row = _row(db, project.id, key)
    if row is None:
        raise NotFound(f"project '{project.name}' has no meta key '{key}'")
    return row


def _row(db: sqlite_utils.Database, project_id: str, key: str) -> dict | None:
    found = list(db.query("SELECT key, value, cas FROM project_meta WHERE project_id = ? AND key = ?",
                          [project_id, key]))
    return found[0] if found else None


def _check_cas(project: ProjectRow, key: str, row: dict | None, cas: str | None) -> None:
    if cas is None:
        return
    current = row["cas"] if row else None
    if current != cas:
        now_is = f"its CAS id is {current}" if current else "it is not set"
        raise Conflict(f"meta {key} of project '{project.name}' was changed: {now_is}, not {cas}",
                       details=[{"key": key, "cas": current}])


def _write(db: sqlite_utils.Database, project: ProjectRow, key: str, value: str | None, author: str | None,
           what: str) -> dict:
    cas = _cas()
    db.execute(
        "INSERT INTO project_meta (project_id, key, value, cas, updated, author) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (project_id, key) DO UPDATE SET value = excluded.value, cas = excluded.cas, "
        "updated = excluded.updated, author = excluded.author",
        [project.id, key, value, cas, now(), author])
    # the value is not in the event: meta may be sensitive, and `events` is readable more widely
    events.record(db, f"meta.{what}", f"meta {key} {what}", project_id=project.id, author=author)
    return {"key": key, "value": value, "cas": cas}


def set_value(db: sqlite_utils.Database, project: ProjectRow, key: str, value: str | None, cas: str | None,
              author: str | None) -> dict:
    row = _row(db, project.id, key)
    _check_cas(project, key, row, cas)
    if row is None:
        _refuse_too_many(db, project, 1)
    return _write(db, project, key, value, author, "set")


def remove(db: sqlite_utils.Database, project: ProjectRow, key: str, cas: str | None, author: str | None) -> dict:
    row = _row(db, project.id, key)
    if row is None:
        raise NotFound(f"project '{project.name}' has no meta key '{key}'")
    _check_cas(project, key, row, cas)
    db.execute("DELETE FROM project_meta WHERE project_id = ? AND key = ?", [project.id, key])
    events.record(db, "meta.rm", f"meta {key} removed", project_id=project.id, author=author)
    return {"removed": key}


def increment(db: sqlite_utils.Database, project: ProjectRow, key: str, by: int, author: str | None) -> dict:
    """Read and write in the caller's one transaction: concurrent increments never lose one."""
    row = _row(db, project.id, key)
    raw = row["value"] if row else None
    if raw is None or raw.strip() == "":
        current = 0
    else:
        try:
            current = int(raw.strip())
        except ValueError:
            raise BadRequest(f"meta {key} is {_shown(raw)}, not an integer: it cannot be incremented") from None
    if row is None:
        _refuse_too_many(db, project, 1)
    return _write(db, project, key, str(current + by), author, "increment" if by >= 0 else "decrement")


def import_values(db: sqlite_utils.Database, project: ProjectRow, data: Mapping[str, str | None], force: bool,
                  author: str | None) -> dict:
    """All or nothing: the keys already set are kept (each listed in ``kept``) unless ``force``.
    A forced key that already has the value is left as it is (listed in ``unchanged``): its CAS
    id stays valid, and nothing rolls out for it (the watched directory's meta file, re-read
    after an edit of another key, must not touch the keys it did not change)."""
    existing = values(db, project.id)
    kept = sorted(k for k in data if k in existing and not force)
    unchanged = sorted(k for k in data if force and k in existing and existing[k] == data[k])
    new = [k for k in data if k not in existing]
    _refuse_too_many(db, project, len(new))
    written = []
    for key, value in data.items():
        if key in kept or key in unchanged:
            continue
        _write(db, project, key, value, author, "import")
        written.append(key)
    return {"imported": written, "kept": kept, "unchanged": unchanged}


def _refuse_too_many(db: sqlite_utils.Database, project: ProjectRow, adding: int) -> None:
    have = db.execute("SELECT COUNT(*) FROM project_meta WHERE project_id = ?", [project.id]).fetchone()[0]
    if have + adding > MAX_KEYS:
        raise BadRequest(f"project '{project.name}' may have at most {MAX_KEYS:,} meta keys")


def _shown(value: str) -> str:
    return json.dumps(value[:40] + ("..." if len(value) > 40 else ""))
