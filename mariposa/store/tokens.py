"""The ``tokens`` table: API tokens of the remote listener, as the sha256 of their secret part.

Plain functions of ``db`` like the rest of the store, each run in one transaction by
``Store.call``. The token itself (``mrp_<id>_<secret>``) is never stored nor returned here: only
its id (the public part) and the hash of its secret.
"""

from __future__ import annotations

import sqlite_utils

COLUMNS = ("id", "user", "name", "hash", "created", "expires", "revoked", "last_used", "author")


def insert(db: sqlite_utils.Database, row: dict) -> None:
    db.execute(f"INSERT INTO tokens ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
               [row.get(c) for c in COLUMNS])


def all_rows(db: sqlite_utils.Database) -> list[dict]:
    """Every token's row, hashes included: for the daemon's in-memory book (access/tokens.py) only."""
    return [dict(r) for r in db.query(f"SELECT {', '.join(COLUMNS)} FROM tokens ORDER BY created")]


def revoke(db: sqlite_utils.Database, token_id: str, when: float) -> bool:
    """Whether a token that was not revoked is revoked now."""
    cur = db.execute("UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", [when, token_id])
    return cur.rowcount > 0


def touch(db: sqlite_utils.Database, used: dict[str, float]) -> None:
    """Record when tokens were last used (batched by the book, never once a request)."""
    db.conn.executemany("UPDATE tokens SET last_used = MAX(COALESCE(last_used, 0), ?) WHERE id = ?",
                        [(when, token_id) for token_id, when in used.items()])


def user_exists(db: sqlite_utils.Database, user: str) -> bool:
    return db.execute("SELECT 1 FROM users WHERE name = ?", [user]).fetchone() is not None
