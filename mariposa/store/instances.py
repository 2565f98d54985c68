"""Per-instance memory: restart accounting, retirement and health. Rows are keyed by Mariposa's
instance id; an instance the runtime reports without a row simply has the defaults."""

from __future__ import annotations

import sqlite_utils

from mariposa.converge.supervise import RESTART
from mariposa.store.db import now


def for_project(db: sqlite_utils.Database, project_id: str | None = None) -> dict[str, dict]:
    if project_id is None:
        rows = db.query("SELECT * FROM instances")
    else:
        rows = db.query("SELECT * FROM instances WHERE project_id = ?", [project_id])
    return {r["id"]: r for r in rows}


def get(db: sqlite_utils.Database, instance_id: str) -> dict | None:
    rows = list(db.query("SELECT * FROM instances WHERE id = ?", [instance_id]))
    return rows[0] if rows else None


def _ensure(db: sqlite_utils.Database, instance_id: str, project_id: str, service: str) -> None:
    db.execute(
        "INSERT OR IGNORE INTO instances (id, project_id, service) VALUES (?, ?, ?)", [instance_id, project_id, service]
    )


def note_start(db: sqlite_utils.Database, instance_id: str, project_id: str, service: str, restart: bool) -> None:
    _ensure(db, instance_id, project_id, service)
    db.execute(
        "UPDATE instances SET last_start_at = ?, restarts = restarts + ? WHERE id = ?",
        [now(), 1 if restart else 0, instance_id],
    )


def exit_noted(record: dict | None) -> bool:
    """Whether the instance's latest exit is already recorded (it has not started since)."""
    if not record:
        return False
    return record["last_exit_at"] is not None and (record["last_start_at"] or 0) <= record["last_exit_at"]


def note_exit(
    db: sqlite_utils.Database, instance_id: str, project_id: str, service: str, exit_code: int | None
) -> bool:
    """Record an exit once (the first time it is seen); True when it was new."""
    _ensure(db, instance_id, project_id, service)
    row = get(db, instance_id)
    assert row is not None  # _ensure() has just made it
    if exit_noted(row):
        return False
    stamp = now()
    ran = stamp - row["last_start_at"] if row["last_start_at"] else 0.0
    # an instance that ran long enough (RESTART.reset_after) starts its restart back-off afresh
    step = 0 if RESTART.resets(row["backoff_step"], ran) else row["backoff_step"] + 1
    db.execute(
        "UPDATE instances SET last_exit_at = ?, last_exit_code = ?, backoff_step = ? WHERE id = ?",
        [stamp, exit_code, step, instance_id],
    )
    return True


def mark_removing(db: sqlite_utils.Database, instance_id: str, project_id: str, service: str) -> None:
    _ensure(db, instance_id, project_id, service)
    db.execute("UPDATE instances SET removing = 1 WHERE id = ?", [instance_id])


def retire(db: sqlite_utils.Database, instance_id: str, project_id: str, service: str, reason: str) -> None:
    _ensure(db, instance_id, project_id, service)
    db.execute("UPDATE instances SET retired = 1, retired_reason = ? WHERE id = ?", [reason, instance_id])


def set_health(
    db: sqlite_utils.Database, instance_id: str, project_id: str, service: str, health: str | None, detail: str
) -> None:
    _ensure(db, instance_id, project_id, service)
    db.execute(
        "UPDATE instances SET health = ?, health_since = ?, health_detail = ? WHERE id = ?",
        [health, now(), detail, instance_id],
    )


def forget(db: sqlite_utils.Database, instance_ids: list[str]) -> None:
    for instance_id in instance_ids:
        db.execute("DELETE FROM instances WHERE id = ?", [instance_id])


def forget_project(db: sqlite_utils.Database, project_id: str) -> None:
    db.execute("DELETE FROM instances WHERE project_id = ?", [project_id])
