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


def listing(
    db: sqlite_utils.Database, project_id: str | None = None, service: str | None = None, since: int = 0,
    limit: int = 500,
) -> list[dict]:
    clauses: list[str] = ["id > ?"]
    args: list[object] = [since]
    if project_id:
        clauses.append("project_id = ?")
        args.append(project_id)
    if service:
        clauses.append("service = ?")
        args.append(service)
    rows = db.query(f"SELECT * FROM events WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?", args + [limit])
    return list(reversed(list(rows)))


def last_id(db: sqlite_utils.Database) -> int:
    return db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
