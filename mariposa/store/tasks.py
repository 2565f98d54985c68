"""The persistent task queue: rows move queued -> active -> completed | failed | terminated."""

from __future__ import annotations

import json

import sqlite_utils

from mariposa.store.db import new_id, now
from mariposa.store.rows import TaskRow, resolve, row_to


def enqueue(
    db: sqlite_utils.Database,
    *,
    project_id: str,
    project_name: str,
    service: str | None,
    kind: str,
    params: dict | None = None,
    author: str | None = None,
) -> TaskRow:
    """Queue a task. Older queued tasks for the same target are superseded at once (the newer
    goal includes theirs); an active one is cancelled by the executor when it sees this one."""
    task_id = new_id()
    stamp = now()
    same_target = "service IS ?" if service is None else "service = ?"
    db.execute(
        f"UPDATE tasks SET state = 'terminated', ended = ?, message = ? "
        f"WHERE project_id = ? AND {same_target} AND state = 'queued'",
        [stamp, f"superseded by task {task_id[:12]}", project_id, service],
    )
    db.table("tasks").insert(
        {
            "id": task_id,
            "project_id": project_id,
            "project_name": project_name,
            "service": service,
            "kind": kind,
            "state": "queued",
            "params": json.dumps(params or {}),
            "created": stamp,
            "progress": "{}",
            "author": author,
        }
    )
    return get(db, task_id)


def get(db: sqlite_utils.Database, ref: str, project_id: str | None = None) -> TaskRow:
    where, args = ("project_id = ?", [project_id]) if project_id else ("1=1", [])
    row = resolve(db, "tasks", ref, what="task", where=where, where_args=args, by_name=False)
    return row_to(TaskRow, {**row, "org": _org_of(db, row["project_id"])})


def _org_of(db: sqlite_utils.Database, project_id: str) -> str | None:
    found = db.execute("SELECT org FROM projects WHERE id = ?", [project_id]).fetchone()
    return found[0] if found else None


def listing(
    db: sqlite_utils.Database, project_id: str | None = None, states: tuple[str, ...] | None = None, limit: int = 200
) -> list[TaskRow]:
    clauses, args = [], []
    if project_id:
        clauses.append("project_id = ?")
        args.append(project_id)
    if states:
        clauses.append(f"state IN ({','.join('?' * len(states))})")
        args.extend(states)
    where = " AND ".join(f"t.{c}" for c in clauses) or "1=1"
    rows = db.query(f"SELECT t.*, p.org AS org FROM tasks t LEFT JOIN projects p ON p.id = t.project_id "
                    f"WHERE {where} ORDER BY t.created DESC, t.rowid DESC LIMIT ?", args + [limit])
    return [row_to(TaskRow, r) for r in rows]


def queued(db: sqlite_utils.Database) -> list[TaskRow]:
    return [row_to(TaskRow, r) for r in db.query("SELECT * FROM tasks WHERE state = 'queued' ORDER BY created, rowid")]


def open_for(db: sqlite_utils.Database, project_id: str, service: str | None) -> list[TaskRow]:
    """Open tasks that touch this service: its own and the project-wide ones."""
    rows = db.query(
        "SELECT * FROM tasks WHERE project_id = ? AND state IN ('queued', 'active') "
        "AND (service IS NULL OR service = ?) ORDER BY created",
        [project_id, service],
    )
    return [row_to(TaskRow, r) for r in rows]


def mark_active(db: sqlite_utils.Database, task_id: str) -> None:
    db.execute("UPDATE tasks SET state = 'active', started = COALESCE(started, ?) WHERE id = ?", [now(), task_id])


def finish(db: sqlite_utils.Database, task_id: str, state: str, message: str | None) -> TaskRow:
    db.execute(
        "UPDATE tasks SET state = ?, ended = ?, message = ? WHERE id = ? AND state IN ('queued', 'active')",
        [state, now(), message, task_id],
    )
    return get(db, task_id)


def update_params(db: sqlite_utils.Database, task_id: str, params: dict) -> None:
    db.execute("UPDATE tasks SET params = ? WHERE id = ?", [json.dumps(params), task_id])


def set_progress(db: sqlite_utils.Database, task_id: str, progress: dict) -> None:
    db.execute("UPDATE tasks SET progress = ? WHERE id = ?", [json.dumps(progress), task_id])


def resume_interrupted(db: sqlite_utils.Database) -> list[TaskRow]:
    """After a crash, tasks that were running go back to the queue: every task is
    level-triggered (it re-plans from goal and actual state), so running it again is safe."""
    rows = [row_to(TaskRow, r) for r in db.query("SELECT * FROM tasks WHERE state = 'active'")]
    db.execute("UPDATE tasks SET state = 'queued', message = 'resumed after a daemon restart' WHERE state = 'active'")
    return rows


def failure_streaks(db: sqlite_utils.Database) -> dict[tuple[str, str | None], tuple[int, float]]:
    """For each target whose latest finished task failed: how many failed since its last
    completed one, and when the last one ended. The reconciler backs off on these instead of
    churning a broken service. Counted per target over its whole history (an index serves it):
    a window over everyone's latest tasks lost the streaks of a few broken services among many,
    and their back-off with them."""
    rows = db.query(
        """
        WITH last_ok AS (
            SELECT project_id, service, MAX(ended) AS ok FROM tasks
            WHERE state = 'completed' GROUP BY project_id, service
        )
        SELECT t.project_id, t.service, COUNT(*) AS failed, MAX(t.ended) AS last
        FROM tasks t LEFT JOIN last_ok o ON o.project_id = t.project_id AND o.service IS t.service
        WHERE t.state = 'failed' AND (o.ok IS NULL OR t.ended > o.ok)
        GROUP BY t.project_id, t.service
        """
    )
    return {(r["project_id"], r["service"]): (r["failed"], r["last"]) for r in rows}
