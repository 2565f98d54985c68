"""The audit trail's rows: every decision of ``authorize``, written in batches (access/audit.py)
and kept for ``AUDIT_DAYS`` or the newest ``AUDIT_ROWS``, whichever is fewer."""

from __future__ import annotations

import sqlite_utils

AUDIT_DAYS = 30
AUDIT_ROWS = 200_000
COLUMNS = ("time", "user", "uid", "address", "via", "action", "capability", "target", "allowed", "why")


def append(db: sqlite_utils.Database, rows: list[tuple]) -> None:
    """In the store call's own transaction (``Store.call_sync``): a ``with db.conn`` here committed
    it early, the call's COMMIT then failed, and the batch, written, was kept to be written again."""
    db.conn.executemany(f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)


def prune(db: sqlite_utils.Database, now: float) -> int:
    cur = db.conn.execute("DELETE FROM audit WHERE time < ? OR seq <= (SELECT MAX(seq) FROM audit) - ?",
                          (now - AUDIT_DAYS * 86400, AUDIT_ROWS))
    return cur.rowcount


def listing(db: sqlite_utils.Database, *, user: str | None = None, denied: bool = False, action: str | None = None,
            since: float | None = None, limit: int = 200) -> list[dict]:
    """The newest first."""
    where: list[str] = []
    args: list[object] = []
    if user is not None:
        where.append("user = ?")
        args.append(user)
    if denied:
        where.append("allowed = 0")
    if action is not None:
        where.append("action = ?")
        args.append(action)
    if since is not None:
        where.append("time >= ?")
        args.append(since)
    sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC LIMIT ?"
    rows = [dict(r) for r in db.query(sql, [*args, limit])]
    for r in rows:
        r["allowed"] = bool(r["allowed"])
    return rows
