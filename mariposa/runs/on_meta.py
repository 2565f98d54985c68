"""Event services run on a meta change (``on: {meta: [KEY, ...]}``, issue 16).

A meta change that gives a watched key a different value (set to another value, set on a key
that was not there, removed) queues one run of each event service watching it, with trigger
``event`` and ``MARIPOSA_META_KEYS=key1,key2`` (the watched keys that changed, sorted) in its
environment. A write of the value the key already has queues nothing.

Crash safety: the run is written in the *same store transaction* as the meta change (``with_runs``
wraps the meta store function), so a daemon killed at any point either has both (the scheduler
finds the queued run after the restart and starts it once: scheduler.py) or neither; a change is
never without its run and never gets two. No idempotency key is needed.

From there the run is like one of ``service run``: the scheduler starts it under the service's
``concurrency``, and ``history`` prunes it. A full queue (``queue_limit``) never refuses the meta
change: the run is recorded ``skipped`` with the reason, as a scheduled firing is.

Which services watch is read from the project's current version when the change is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import sqlite_utils

from mariposa.errors import Conflict
from mariposa.store import runs as run_store
from mariposa.store.db import now
from mariposa.store.rows import ProjectRow

T = TypeVar("T")
ENV_KEYS = "MARIPOSA_META_KEYS"


@attrs.frozen
class Watcher:
    service: str
    keys: frozenset[str]
    queue_limit: int


async def watchers(ctx: Any, project: ProjectRow) -> list[Watcher]:
    """The event services of the project's current version that watch meta keys (none when the
    version cannot be read: the meta change goes on as it would without them)."""
    spec = await ctx.goals.current_spec(project)
    if spec is None:
        return []
    return [Watcher(s.name, frozenset(s.on_meta), s.queue_limit) for s in spec.services
            if s.service_type == "event" and s.on_meta]


def _values(db: sqlite_utils.Database, project_id: str, keys: Sequence[str]) -> dict[str, tuple[str | None]]:
    """Each key's value as a 1-tuple (a key set to null is there; one not set is not)."""
    marks = ", ".join("?" for _ in keys)
    rows = db.execute(f"SELECT key, value FROM project_meta WHERE project_id = ? AND key IN ({marks})",
                      [project_id, *keys]).fetchall()
    return {k: (v,) for k, v in rows}


def queue(db: sqlite_utils.Database, project_id: str, watcher: Watcher, changed: Sequence[str],
          author: str | None) -> str:
    """One event run of the watcher's service for the keys that changed; its id."""
    env = ((ENV_KEYS, ",".join(changed)),)
    try:
        row, _ = run_store.request(db, project_id, watcher.service, "event", watcher.queue_limit, env=env,
                                   author=author)
        return row.id
    except Conflict as exc:  # a full queue: recorded, never a refused meta change
        return run_store.insert(db, project_id, watcher.service, "event", now(), "skipped", env=env,
                                author=author, reason=f"meta {', '.join(changed)} changed: {exc}")


def with_runs(fn: Callable[[sqlite_utils.Database], T], project_id: str, watching: Sequence[Watcher],
              author: str | None) -> Callable[[sqlite_utils.Database], tuple[T, list[str]]]:
    """``fn`` (a meta store function of ``db``) and the event runs its change queues, for one
    ``Store.call``: one transaction. Gives ``fn``'s result and the ids of the runs made."""
    keys = sorted({k for w in watching for k in w.keys})

    def call(db: sqlite_utils.Database) -> tuple[T, list[str]]:
        if not keys:
            return fn(db), []
        before = _values(db, project_id, keys)
        result = fn(db)
        after = _values(db, project_id, keys)
        changed = {k for k in keys if before.get(k) != after.get(k)}
        made = [queue(db, project_id, w, sorted(changed & w.keys), author) for w in watching if changed & w.keys]
        return result, made

    return call
