"""The event log: an audit trail of every change and every notable thing the daemon did."""

from __future__ import annotations

import sqlite_utils

from mariposa.store.db import now


def record(
    db: sqlite_utils.Database,
    type: str,
    message: str,
    *,
    project_id: str | None = None,
    service: str | None = None,
    instance: str | None = None,
    task_id: str | None = None,
    author: str | None = None,
) -> None:
    db.table("events").insert(
        {
            "time": now(),
            "project_id": project_id,
            "service": service,
            "instance": instance,
            "task_id": task_id,
            "type": type,
            "message": message,
            "author": author,
        }
    )


def _after(project_id: str | None, service: str | None, after: int) -> tuple[str, list[object]]:
    clauses: list[str] = ["id > ?"]
    args: list[object] = [after]
    if project_id:
        clauses.append("project_id = ?")
        args.append(project_id)
    if service:
        clauses.append("service = ?")
        args.append(service)
    return " AND ".join(clauses), args


def listing(
    db: sqlite_utils.Database, project_id: str | None = None, service: str | None = None, since: int = 0,
    limit: int = 500,
) -> list[dict]:
    """The newest ``limit`` events after id ``since``, oldest first."""
    where, args = _after(project_id, service, since)
    rows = db.query(f"SELECT * FROM events WHERE {where} ORDER BY id DESC LIMIT ?", args + [limit])
    return list(reversed(list(rows)))


def last_id(db: sqlite_utils.Database) -> int:
    return db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]


def listing_and_cursor(
    db: sqlite_utils.Database, project_id: str | None = None, service: str | None = None, since: int = 0,
) -> tuple[list[dict], int]:
    """``listing``, and the id a follower goes on from, read in one transaction: read apart, an
    event written between the two reads was skipped for ever."""
    return listing(db, project_id, service, since), last_id(db)


def page_after(
    db: sqlite_utils.Database, project_id: str | None, service: str | None, after: int, limit: int = 500,
) -> tuple[list[dict], int]:
    """The next events after id ``after``, oldest first, and the id to go on from: the last one
    returned when the page is full (more are waiting), else the newest id of the whole log."""
    where, args = _after(project_id, service, after)
    rows = list(db.query(f"SELECT * FROM events WHERE {where} ORDER BY id LIMIT ?", args + [limit]))
    cursor = rows[-1]["id"] if len(rows) == limit else max(after, last_id(db))
    return rows, cursor
