"""The projects table (and the watched directory's file states) in memory, for reads that would
otherwise each cost a worker thread's round trip.

A project is named in nearly every request, and a request for one that does not exist is the
cheapest thing a careless or hostile client can send 500 of at once. Each went through two store
calls, and each store call's trip to its worker thread and back cost ~0.2 ms of CPU here, more
than the query: a burst of them kept a newcomer's ``project list`` waiting for a second.

The copy is current by construction, never by time: it is read at the store's ``generation`` (the
count of calls that changed a row, bumped before such a call returns), and used only while the
count is the same. A read that finds it behind reads again, once, for everyone who asked
meanwhile; it takes any copy read after it asked, so a change acknowledged to anyone before the
ask is always seen, and a stream of writes cannot keep a reader waiting for ever.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence

import attrs
import sqlite_utils
import trio

from mariposa.errors import BadRequest, NotFound
from mariposa.store import goal as goal_store
from mariposa.store.db import Store
from mariposa.store.rows import ProjectRow, row_to


@attrs.frozen
class Copy:
    generation: int
    by_name: dict[str, ProjectRow]
    by_id: dict[str, ProjectRow]
    ids: Sequence[str]  # sorted, for id prefixes
    summaries: tuple[tuple[ProjectRow, int, int], ...]  # goal_store.project_summaries
    files: dict[str, dict]  # project name -> its newest manifest_files row, details parsed

    def project(self, ref: str) -> ProjectRow:
        """As ``goal_store.get_project``: exact name, exact id, or a unique id prefix of 4 or more."""
        if not ref:
            raise BadRequest("a project name or id is required")
        found = self.by_name.get(ref) or self.by_id.get(ref)
        if found is not None:
            return found
        if len(ref) >= 4:
            at = bisect.bisect_left(self.ids, ref)
            matches = [i for i in self.ids[at:at + 2] if i.startswith(ref)]
            if len(matches) == 1:
                return self.by_id[matches[0]]
            if len(matches) > 1:
                raise BadRequest(f"project id prefix '{ref}' is ambiguous; give more characters")
        raise NotFound(f"no project '{ref}'")

    def file_status(self, project: str) -> dict | None:
        """As ``files.file_status``: a copy the caller may keep."""
        row = self.files.get(project)
        return None if row is None else {**row, "details": list(row["details"])}


def read_copy(db: sqlite_utils.Database, generation: int) -> Copy:
    projects = [row_to(ProjectRow, r) for r in db.query("SELECT * FROM projects")]
    files: dict[str, dict] = {}
    for r in db.query("SELECT * FROM manifest_files ORDER BY seen"):  # the newest last, so it stays
        files[r["project"]] = {**r, "details": json.loads(r["details"]) if r["details"] else []}
    return Copy(generation, {p.name: p for p in projects}, {p.id: p for p in projects},
                sorted(p.id for p in projects), tuple(goal_store.project_summaries(db)), files)


class ProjectIndex:
    def __init__(self, store: Store):
        self.store = store
        self._copy: Copy | None = None
        self._reading: trio.Event | None = None

    async def current(self) -> Copy:
        """A copy holding every change acknowledged before this call (no thread when nothing
        changed since the last read)."""
        asked = self.store.generation
        while True:
            copy = self._copy
            if copy is not None and copy.generation >= asked:
                return copy
            if self._reading is None:
                return await self._read()
            await self._reading.wait()  # then look again: it may have been read before we asked, or abandoned

    async def _read(self) -> Copy:
        self._reading = reading = trio.Event()
        try:
            generation = self.store.generation  # before the read: a write meanwhile only makes it read again
            copy = await self.store.call(read_copy, generation)
            if self._copy is None or copy.generation >= self._copy.generation:
                self._copy = copy
            return copy
        finally:
            self._reading = None
            reading.set()

    async def project(self, ref: str) -> ProjectRow:
        return (await self.current()).project(ref)

    async def file_status(self, project: str) -> dict | None:
        return (await self.current()).file_status(project)
