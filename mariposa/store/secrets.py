"""The ``secrets`` table: Fernet tokens and who changed them when; never a value in the clear.

Plain functions of ``db`` like the rest of the store, each run in one transaction by
``Store.call``; the encryption is the caller's (``mariposa.vault``), so nothing here can leak a
value it never sees.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

from mariposa.store.db import now

PROJECT, REGISTRY, DAEMON = "project", "registry", "daemon"


def put(db: sqlite_utils.Database, kind: str, scope: str, name: str, token: str, author: str) -> int:
    """Store a new value's token; returns its version (1 for a new secret)."""
    row = db.execute("SELECT version FROM secrets WHERE kind = ? AND scope = ? AND name = ?",
                     [kind, scope, name]).fetchone()
    stamp = now()
    if row is None:
        db.execute("INSERT INTO secrets (kind, scope, name, token, version, created, created_by, updated, updated_by)"
                   " VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)", [kind, scope, name, token, stamp, author, stamp, author])
        return 1
    db.execute("UPDATE secrets SET token = ?, version = version + 1, updated = ?, updated_by = ?"
               " WHERE kind = ? AND scope = ? AND name = ?", [token, stamp, author, kind, scope, name])
    return int(row[0]) + 1


def token(db: sqlite_utils.Database, kind: str, scope: str, name: str) -> str | None:
    row = db.execute("SELECT token FROM secrets WHERE kind = ? AND scope = ? AND name = ?",
                     [kind, scope, name]).fetchone()
    return None if row is None else row[0]


def tokens(db: sqlite_utils.Database, kind: str, scope: str, names: list[str]) -> dict[str, str]:
    """The tokens of ``names`` that exist (one query for an instance's whole list)."""
    if not names:
        return {}
    marks = ",".join("?" * len(names))
    rows = db.execute(f"SELECT name, token FROM secrets WHERE kind = ? AND scope = ? AND name IN ({marks})",
                      [kind, scope, *names]).fetchall()
    return dict(rows)


def all_tokens(db: sqlite_utils.Database, kind: str, scope: str = "") -> dict[str, str]:
    return dict(db.execute("SELECT name, token FROM secrets WHERE kind = ? AND scope = ?", [kind, scope]).fetchall())


def listing(db: sqlite_utils.Database, kind: str, scope: str = "") -> list[dict]:
    """Names, versions, who and when: the columns that are safe to show."""
    rows = db.query("SELECT name, version, created, created_by, updated, updated_by FROM secrets"
                    " WHERE kind = ? AND scope = ? ORDER BY name", [kind, scope])
    return list(rows)


def names(db: sqlite_utils.Database, kind: str, scope: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM secrets WHERE kind = ? AND scope = ?", [kind, scope])}


def remove(db: sqlite_utils.Database, kind: str, scope: str, name: str) -> bool:
    cur = db.execute("DELETE FROM secrets WHERE kind = ? AND scope = ? AND name = ?", [kind, scope, name])
    return cur.rowcount > 0


def count(db: sqlite_utils.Database) -> int:
    """Values under the key: secrets, and triggers' tokens waiting to be shown (Vault.seal)."""
    pending = db.execute("SELECT COUNT(*) FROM triggers WHERE pending IS NOT NULL").fetchone()[0]
    return db.execute("SELECT COUNT(*) FROM secrets").fetchone()[0] + pending


def reencrypt(db: sqlite_utils.Database, rotate: Callable[[str], str]) -> int:
    """Every token through ``rotate`` (MultiFernet.rotate), in the caller's one transaction: the
    store never holds some secrets under the new key and some under a key about to be dropped."""
    rows = db.execute("SELECT kind, scope, name, token FROM secrets").fetchall()
    for kind, scope, name, old in rows:
        db.execute("UPDATE secrets SET token = ? WHERE kind = ? AND scope = ? AND name = ?",
                   [rotate(old), kind, scope, name])
    pending = db.execute("SELECT project_id, name, pending FROM triggers WHERE pending IS NOT NULL").fetchall()
    for project_id, name, old in pending:  # triggers' tokens waiting to be shown (Vault.seal)
        db.execute("UPDATE triggers SET pending = ? WHERE project_id = ? AND name = ?", [rotate(old), project_id, name])
    return len(rows) + len(pending)
