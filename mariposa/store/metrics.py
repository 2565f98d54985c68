"""The day of instance numbers at one-minute resolution (``metric_minutes``, migration 0014):
written once a minute by the collector (metrics/rollup.py), read by ``service stats --since``
beyond the hour kept in memory."""

from __future__ import annotations

from collections.abc import Sequence

import sqlite_utils

DAY = 86400.0
COLUMNS = ("minute", "instance_id", "project_id", "service", "samples", "cpu", "memory", "memory_max",
           "memory_limit", "net_rx", "net_tx", "block_read", "block_write")


def write_minutes(db: sqlite_utils.Database, rows: Sequence[tuple], now: float) -> int:
    """Insert finished minutes (tuples in ``COLUMNS`` order; a minute written again replaces
    itself) and delete those older than a day: one transaction. The rows deleted."""
    if rows:
        marks = ", ".join("?" * len(COLUMNS))
        db.conn.executemany(f"INSERT OR REPLACE INTO metric_minutes ({', '.join(COLUMNS)}) VALUES ({marks})", rows)
    return db.conn.execute("DELETE FROM metric_minutes WHERE minute < ?", [int(now - DAY)]).rowcount


def minutes(db: sqlite_utils.Database, project_id: str, service: str, since: float) -> list[dict]:
    """A service's rows from ``since`` on, oldest first."""
    return list(db.query(
        f"SELECT {', '.join(COLUMNS)} FROM metric_minutes WHERE project_id = ? AND service = ? AND minute >= ? "
        "ORDER BY minute, instance_id", [project_id, service, int(since)]))


def count(db: sqlite_utils.Database) -> int:
    return db.execute("SELECT count(*) FROM metric_minutes").fetchone()[0]


def tasks_by_state(db: sqlite_utils.Database) -> dict[str, int]:
    """How many tasks are in each state (for /metrics; the index tasks_by_state serves it)."""
    return {state: n for state, n in db.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall()}
