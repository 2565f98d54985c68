"""The one SQLite database behind the daemon.

All access goes through :meth:`Store.call`, which runs a plain function on a worker thread, one
at a time (a ``CapacityLimiter(1)``: the one writer), inside one transaction. A function never
awaits, so no transaction ever spans an ``await`` and the trio loop never blocks on disk.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
import trio

from mariposa.store.migrate import apply_migrations

T = TypeVar("T")


def open_database(path: Path | str) -> sqlite_utils.Database:
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    db = sqlite_utils.Database(conn)
    apply_migrations(db)
    return db


class Store:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.db = open_database(self.path)
        self._limiter = trio.CapacityLimiter(1)
        self.owner = self._ensure_owner()

    def _ensure_owner(self) -> str:
        """A random identity for this state dir: it labels every instance we create, so two
        daemons on one host (tests, or users running several) never adopt each other's work."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'owner'").fetchone()
        if row:
            return row[0]
        owner = uuid.uuid4().hex[:16]
        self.db.execute("INSERT INTO meta (key, value) VALUES ('owner', ?)", [owner])
        return owner

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(db, *args)`` in one transaction (rolled back if it raises)."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.db, *args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(self.call_sync, fn, *args, limiter=self._limiter)

    def close(self) -> None:
        self.db.conn.close()


def now() -> float:
    return time.time()


def new_id() -> str:
    return uuid.uuid4().hex
