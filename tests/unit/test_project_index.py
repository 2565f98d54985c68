"""The projects table in memory (store/index.py): the store's answers, every acknowledged change
seen, and no worker thread while nothing changed."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mariposa.errors import MariposaError
from mariposa.store import files as file_store
from mariposa.store import goal as goal_store
from mariposa.store.db import Store
from mariposa.store.index import ProjectIndex

IDS = ("abcd1111" + "0" * 24, "abcd2222" + "0" * 24, "ef01" + "9" * 28)


def insert(db, pid: str, name: str) -> None:
    db.execute("INSERT INTO projects (id, name, created, desired) VALUES (?, ?, 0, 'running')", [pid, name])


def remove(db, pid: str) -> None:
    db.execute("DELETE FROM projects WHERE id = ?", [pid])


@pytest.fixture
async def store(tmp_path):
    store = await trio.to_thread.run_sync(Store, tmp_path / "m.db")
    for pid, name in zip(IDS, ("web", "db", "web\nx"), strict=True):
        await store.call(insert, pid, name)
    yield store
    store.close()


def outcome(fn, *args):
    try:
        return fn(*args)
    except MariposaError as exc:
        return (type(exc).__name__, exc.message)


async def test_every_lookup_answers_as_the_store_does(store):
    copy = await ProjectIndex(store).current()
    refs = ["web", "db", "web\n", "web\nx", "", "nope", "%%%%", "abc", "abcd", "abcd1", "abcd2222", IDS[0], IDS[2],
            "ef01", "EF01", "ab_d", IDS[1] + "0"]
    for ref in refs:
        assert outcome(copy.project, ref) == outcome(store.call_sync, goal_store.get_project, ref), ref
    ambiguous = ("BadRequest", "project id prefix 'abcd' is ambiguous; give more characters")
    assert outcome(copy.project, "abcd") == ambiguous


async def test_the_file_status_is_the_newest_as_the_store_says(store):
    await store.call(file_store.record, "/d/web.yaml", "web", "h1", "applied", None, None)
    await trio.sleep(0.01)
    await store.call(file_store.record, "/d/web2.yaml", "web", "h2", "invalid", "bad: 1:2", [{"line": 1}])
    await store.call(file_store.record, "/d/gone.yaml", "gone", "h3", "refused", "too big", None)
    index = ProjectIndex(store)
    for project in ("web", "gone", "db", "nope"):
        assert await index.file_status(project) == store.call_sync(file_store.file_status, project), project
    (await index.file_status("web"))["details"].append("mine")  # the caller's copy, not the index's
    assert (await index.file_status("web"))["details"] == [{"line": 1}]


async def test_a_change_is_seen_by_the_first_read_after_it_was_acknowledged(store):
    index = ProjectIndex(store)
    with pytest.raises(MariposaError, match="no project 'api'"):
        await index.project("api")
    await store.call(insert, "f" * 32, "api")
    assert (await index.project("api")).id == "f" * 32
    assert [p.name for p, _, _ in (await index.current()).summaries] == []  # no version: not listed, as in the store
    assert (await index.project("ffff")).name == "api"
    await store.call(remove, "f" * 32)
    for ref in ("api", "ffff"):
        with pytest.raises(MariposaError, match=f"no project '{ref}'"):
            await index.project(ref)


async def test_an_unchanged_store_is_read_once_and_readers_meanwhile_share_one_read(store, monkeypatch):
    index = ProjectIndex(store)
    calls = []
    real = store.call

    async def counted(fn, *args):
        calls.append(fn.__name__)
        await trio.sleep(0.05)  # a slow read: every reader below arrives during it
        return await real(fn, *args)

    monkeypatch.setattr(store, "call", counted)
    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(index.project, "web")
    assert calls == ["read_copy"]
    for _ in range(100):
        assert (await index.project("db")).id == IDS[1]
    assert calls == ["read_copy"]  # no thread while nothing changed
    store.call_sync(lambda db: db.execute("SELECT 1"))  # a call that changes nothing
    await index.project("db")
    assert calls == ["read_copy"]
    store.call_sync(insert, "0" * 32, "new")  # one that does
    assert (await index.project("new")).id == "0" * 32
    assert calls == ["read_copy", "read_copy"]


async def test_readers_waiting_on_a_cancelled_read_read_again(store, monkeypatch):
    index = ProjectIndex(store)
    real = store.call

    async def stuck(fn, *args):
        await trio.sleep_forever()

    monkeypatch.setattr(store, "call", stuck)
    got = []
    leader = trio.CancelScope()

    async def lead():
        with leader:
            await index.project("web")

    async def follow():
        got.append((await index.project("web")).id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lead)
        await trio.testing.wait_all_tasks_blocked()
        monkeypatch.setattr(store, "call", real)
        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # waiting on the leader's read
        leader.cancel()
    assert got == [IDS[0]]
