"""The store's own faults, in-process: a full disk (SQLite's max_page_count is the same
SQLITE_FULL a full file system gives) and a lock another connection holds. Both leave as named
errors, change nothing, and leave the store usable the moment the cause goes."""

from __future__ import annotations

import sqlite3

import pytest
import trio

from mariposa.errors import StoreBusy, StoreFull
from mariposa.store import db as store_db
from mariposa.store.db import Store


def _put(db, key: str, value: str) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", [key, value])


def _get(db, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


async def test_a_full_store_refuses_as_store_full_and_works_once_there_is_room(tmp_path):
    store = await trio.to_thread.run_sync(Store, tmp_path / "m.db")
    await store.call(_put, "kept", "yes")
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreFull) as info:
        await store.call(_put, "big", "x" * 200_000)
    assert (info.value.status, info.value.exit_code, info.value.kind) == (507, 8, "store-full")
    assert "disk is full" in info.value.message
    assert not store.db.conn.in_transaction  # rolled back, by SQLite or by us: nothing half-done
    assert await store.call(_get, "kept") == "yes" and await store.call(_get, "big") is None
    store.db.execute(f"PRAGMA max_page_count = {pages * 1000}")
    await store.call(_put, "big", "x" * 200_000)
    assert len(await store.call(_get, "big") or "") == 200_000
    store.close()


async def test_a_lock_held_elsewhere_is_store_busy_after_each_calls_own_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT", 1.0)
    store = await trio.to_thread.run_sync(Store, tmp_path / "m.db")
    other = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    refused: list[float] = []

    async def write(n: int) -> None:
        with pytest.raises(StoreBusy) as info:
            await store.call(_put, f"k{n}", "v")
        assert (info.value.status, info.value.exit_code) == (503, 8)
        refused.append(trio.current_time() - began)

    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(write, n)
    # each waited its own second, not also the seconds of the calls ahead of it in line (4 s)
    assert len(refused) == 4 and 1.0 <= min(refused) and max(refused) < 2.5
    other.execute("ROLLBACK")
    await store.call(_put, "after", "v")
    assert await store.call(_get, "after") == "v"
    other.close()
    store.close()
