"""Typed views of the tables, and the name-or-id lookup every "uuid or name" argument uses."""

from __future__ import annotations

import json
from typing import Any

import attrs
import sqlite_utils

from mariposa.errors import BadRequest, NotFound
from mariposa.model import DesiredState


def _json_dict(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    return json.loads(value) if value else {}


@attrs.frozen
class ProjectRow:
    id: str
    name: str
    created: float
    current_version: str | None
    desired: str
    source: str | None
    source_state: str | None = None
    org: str = "default"

    def to_json(self) -> dict:
        return attrs.asdict(self)


@attrs.frozen
class VersionRow:
    id: str
    project_id: str
    seq: int
    hash: str
    manifest: str
    filename: str | None
    created: float
    author: str | None
    summary: str | None
    packages: str | None = None  # JSON of the pinned package sizes; None for versions before 0007
    env_files: str | None = None  # JSON of the env_file texts (manifest/env_files.py); never shown
    base_dir: str | None = None  # where the manifest was read from: relative bind paths start here
    meta_hash: str | None = None  # sha256 of the meta its templates used (store/meta.py), never values
    # JSON {key: sha256 of its value, "secret.NAME": its HMAC}: what a meta or secret change is compared with
    meta_used: str | None = None

    def to_json(self, with_manifest: bool = False) -> dict:
        data = attrs.asdict(self)
        data["packages"] = json.loads(self.packages) if self.packages else None
        data["env_files"] = sorted(json.loads(self.env_files)) if self.env_files else []  # names, not values
        used = sorted(json.loads(self.meta_used)) if self.meta_used else []
        data["meta_keys"] = [k for k in used if not k.startswith("secret.")]  # meta keys hold no '.'
        data["env_secrets"] = [k.removeprefix("secret.") for k in used if k.startswith("secret.")]  # names only
        data.pop("meta_used")
        if not with_manifest:
            data.pop("manifest")
        return data


@attrs.frozen
class ServiceRow:
    id: str
    project_id: str
    name: str
    scale: int
    desired: DesiredState
    frozen: bool
    frozen_reason: str | None
    created: float
    replacements: int = 0
    last_replacement_at: float | None = None
    keep_stale: bool = False
    last_scaled: float | None = None  # when its scale was last set, or an autoscale announced (0016)

    def to_json(self) -> dict:
        return attrs.asdict(self)


@attrs.frozen
class TaskRow:
    id: str
    project_id: str
    project_name: str
    service: str | None
    kind: str
    state: str
    params: dict = attrs.field(converter=_json_dict)
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    message: str | None = None
    progress: dict = attrs.field(converter=_json_dict, default=None)
    author: str | None = None
    org: str | None = None  # the project's organisation, where the read joined it (the queue's output)

    @property
    def target(self) -> str:
        """``org.project.service`` (or ``org.project``), as the spec's queue documents them."""
        where = f"{self.org}.{self.project_name}" if self.org else self.project_name
        return f"{where}.{self.service}" if self.service else where

    def to_json(self) -> dict:
        data = attrs.asdict(self)
        data["target"] = self.target
        return data


def row_to(cls: type, row: dict):
    names = {a.name for a in attrs.fields(cls)}
    return cls(**{k: v for k, v in row.items() if k in names})


def resolve(
    db: sqlite_utils.Database,
    table: str,
    ref: str,
    *,
    what: str,
    where: str = "1=1",
    where_args: list | None = None,
    by_name: bool = True,
) -> dict:
    """Find one row by exact name, exact id, or a unique id prefix (as Docker does). The ref is
    taken as it is: no trimming (``abc\n`` is not ``abc``), and a prefix is compared as text,
    never as a ``LIKE`` pattern (``%%%%`` is not a wildcard)."""
    args = list(where_args or [])
    ref = ref or ""
    if not ref:
        raise BadRequest(f"a {what} name or id is required")
    if by_name:
        rows = list(db.query(f"SELECT * FROM {table} WHERE ({where}) AND name = ?", args + [ref]))
        if rows:
            return rows[0]
    rows = list(db.query(f"SELECT * FROM {table} WHERE ({where}) AND id = ?", args + [ref]))
    if rows:
        return rows[0]
    if len(ref) >= 4:
        rows = list(
            db.query(f"SELECT * FROM {table} WHERE ({where}) AND substr(id, 1, ?) = ? LIMIT 3", args + [len(ref), ref])
        )
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise BadRequest(f"{what} id prefix '{ref}' is ambiguous; give more characters")
    raise NotFound(f"no {what} '{ref}'")
