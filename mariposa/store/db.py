"""The one SQLite database behind the daemon.

All access goes through :meth:`Store.call`, which runs a plain function on a worker thread, one
at a time (a ``CapacityLimiter(1)``: the one writer), inside one transaction. A function never
awaits, so no transaction ever spans an ``await`` and the trio loop never blocks on disk.

SQLite's errors that are conditions, not bugs, leave :meth:`Store.call` as ``StoreUnavailable``
(``mariposa/errors.py``): a full disk (``StoreFull``), another process holding the database's
lock longer than ``BUSY_TIMEOUT`` (``StoreBusy``), an I/O error. The transaction is rolled back
whatever failed, COMMIT included, unless SQLite did it already (it does on SQLITE_FULL, and a
second ROLLBACK would raise in place of the real error).

The store has the daemon's clock. A function that stamps a time calls :func:`now`, which reads
the clock of the store whose call is running (a context variable set around the call), so the
functions keep their plain ``fn(db, *args)`` shape and a test's fake clock reaches them too.

The store counts the calls that changed rows (``generation``): a copy read in memory at one
generation (``store/index.py``) is known to be current while the count stays the same, and
answers without a worker thread, whose round trip costs more than the query.
"""

from __future__ import annotations

import contextvars
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
import trio

from mariposa.clock import Clock, WallClock
from mariposa.errors import StoreBusy, StoreFull, StoreUnavailable
from mariposa.store.migrate import apply_migrations

T = TypeVar("T")

# How long a call waits for a lock another process holds (a `sqlite3` shell in a write
# transaction); past it the call is a StoreBusy the caller can retry. The daemon is the only
# writer otherwise. Every call waits in one line (the one writer), so SQLite itself waits only
# BUSY_SLICE at a time and the call waits out the rest between tries, outside the line: each
# call waits its own BUSY_TIMEOUT, not also that of every call ahead of it.
BUSY_TIMEOUT = 5.0
BUSY_SLICE = 0.05

_clock: contextvars.ContextVar[Clock] = contextvars.ContextVar("mariposa_store_clock", default=WallClock())


def open_database(path: Path | str, clock: Clock | None = None) -> sqlite_utils.Database:
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    db = sqlite_utils.Database(conn)
    apply_migrations(db, now=(clock or WallClock()).now)
    return db


class Store:
    def __init__(self, path: Path | str, clock: Clock | None = None):
        self.path = Path(path)
        self.clock = clock or WallClock()
        self.db = open_database(self.path, self.clock)
        self.db.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_SLICE * 1000)}")
        self._limiter = trio.CapacityLimiter(1)
        # Calls that changed a row, bumped in the call before it returns: a change is counted
        # before anyone hears it was made. This daemon is the store's only writer.
        self.generation = 0
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
        """Run ``fn(db, *args)`` in one transaction (rolled back if it, or the commit, fails)."""
        conn = self.db.conn
        token = _clock.set(self.clock)
        changes = conn.total_changes
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self.db, *args)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled it back already (SQLITE_FULL does)
                    conn.execute("ROLLBACK")
                raise
            return result
        except sqlite3.OperationalError as exc:
            named = store_error(exc, self.path)
            if named is exc:
                raise  # a bug (bad SQL and the like): as it is, for translate() to log
            raise named from exc
        finally:
            if conn.total_changes != changes:  # rolled-back changes count too: a spare re-read, never a stale one
                self.generation += 1
            _clock.reset(token)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``call_sync`` on the worker thread; while another process holds the lock, again
        every BUSY_SLICE until BUSY_TIMEOUT has passed (the refused tries changed nothing)."""
        deadline = trio.current_time() + BUSY_TIMEOUT
        while True:
            try:
                return await trio.to_thread.run_sync(self.call_sync, fn, *args, limiter=self._limiter)
            except StoreBusy:
                if trio.current_time() >= deadline:
                    raise
            await trio.sleep(BUSY_SLICE)

    def close(self) -> None:
        self.db.conn.close()


_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL = 5, 6, 10, 13


def store_error(exc: sqlite3.OperationalError, path: Path) -> Exception:
    """The ``StoreUnavailable`` for SQLite's conditions; any other error as it is (a bug)."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code of an extended one
    if code == _SQLITE_FULL:
        return StoreFull(f"the store's disk is full ({path.parent}): nothing was changed; "
                         "free some space there and try again")
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StoreBusy(f"the store ({path}) is locked by another process for more than {BUSY_TIMEOUT:g} s: "
                         "nothing was changed; try again once it lets go")
    if code == _SQLITE_IOERR:
        return StoreUnavailable(f"the store ({path}) could not be read or written ({exc}): nothing was changed")
    return exc


def now() -> float:
    """The time by the clock of the store call in progress (the wall clock outside one)."""
    return _clock.get().now()


def new_id() -> str:
    return uuid.uuid4().hex
