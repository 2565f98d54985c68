"""The ``triggers`` table (migrations/0013_triggers.sql): a project's public triggers, each
known by the sha256 of its token. Plain functions of ``db`` for ``Store.call``.

The token is the caller's to make and to encrypt (control/triggers.py): this module sees a hash
and an encrypted copy, never a token in the clear.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import sqlite_utils

from mariposa.errors import NotFound
from mariposa.model import ProjectSpec
from mariposa.store import events
from mariposa.store.db import now

# (service, name) -> (hex sha256 of a fresh token, the token encrypted): offered for every
# trigger of a version; used only for triggers that are new in it.
Fresh = Mapping[tuple[str, str], tuple[str, str]]


@attrs.frozen
class TriggerRow:
    project_id: str
    name: str
    service: str
    action: str
    scale: str | None
    token_hash: str
    pending: str | None = attrs.field(repr=False)
    created: float
    rotated: float | None

    @classmethod
    def from_row(cls, row: Mapping) -> TriggerRow:
        return cls(**{a.name: row[a.name] for a in attrs.fields(cls)})


_COLUMNS = ", ".join(a.name for a in attrs.fields(TriggerRow))


def listing(db: sqlite_utils.Database, project_id: str) -> list[TriggerRow]:
    return [TriggerRow.from_row(r) for r in db.query(
        f"SELECT {_COLUMNS} FROM triggers WHERE project_id = ? ORDER BY service, name", [project_id])]


def get(db: sqlite_utils.Database, project_id: str, name: str) -> TriggerRow:
    rows = db.query(f"SELECT {_COLUMNS} FROM triggers WHERE project_id = ? AND name = ?", [project_id, name])
    for row in rows:
        return TriggerRow.from_row(row)
    raise NotFound(f"the project has no trigger '{name}'")


def by_hash(db: sqlite_utils.Database, token_hash: str) -> TriggerRow | None:
    for row in db.query(f"SELECT {_COLUMNS} FROM triggers WHERE token_hash = ?", [token_hash]):
        return TriggerRow.from_row(row)
    return None


def sync(db: sqlite_utils.Database, project_id: str, spec: ProjectSpec, fresh: Fresh) -> None:
    """The project's triggers as its new current version has them: a trigger kept (same service,
    same name) keeps its token and takes the new action; a new one gets its fresh token; one
    gone (or moved to another service) is deleted, and its token with it. In the transaction that
    makes the version current."""
    wanted = {(svc.name, t.name): t for svc in spec.services for t in svc.triggers}
    have = {(r.service, r.name) for r in listing(db, project_id)}
    for service, name in have - set(wanted):
        db.execute("DELETE FROM triggers WHERE project_id = ? AND service = ? AND name = ?",
                   [project_id, service, name])
    for (service, name), trigger in wanted.items():
        if (service, name) in have:
            db.execute("UPDATE triggers SET action = ?, scale = ? WHERE project_id = ? AND name = ?",
                       [trigger.action, trigger.scale, project_id, name])
            continue
        token_hash, sealed = fresh[(service, name)]
        db.execute("INSERT INTO triggers (project_id, name, service, action, scale, token_hash, pending, created) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [project_id, name, service, trigger.action, trigger.scale, token_hash, sealed, now()])


def forget(db: sqlite_utils.Database, project_id: str) -> None:
    """A project being deleted: its URLs stop working at once, before its instances are gone."""
    db.execute("DELETE FROM triggers WHERE project_id = ?", [project_id])


def revealed(db: sqlite_utils.Database, project_id: str, shown: Mapping[str, str]) -> set[str]:
    """Clear the encrypted copies ``shown`` (name -> the encrypted token read before) that are
    still there; the names cleared. A token rotated meanwhile is not cleared (nor shown)."""
    cleared = set()
    for name, sealed in shown.items():
        cur = db.execute("UPDATE triggers SET pending = NULL WHERE project_id = ? AND name = ? AND pending = ?",
                         [project_id, name, sealed])
        if cur.rowcount:
            cleared.add(name)
    return cleared


def rotate(db: sqlite_utils.Database, project_id: str, name: str, token_hash: str, author: str) -> TriggerRow:
    """A new token: the old one stops working when this transaction commits. The new one is shown
    by the call that asked (never stored in the clear, never pending)."""
    row = get(db, project_id, name)
    db.execute("UPDATE triggers SET token_hash = ?, pending = NULL, rotated = ? WHERE project_id = ? AND name = ?",
               [token_hash, now(), project_id, name])
    events.record(db, "trigger.rotate", f"trigger {name} of service {row.service}: token replaced",
                  project_id=project_id, service=row.service, author=author)
    return get(db, project_id, name)
