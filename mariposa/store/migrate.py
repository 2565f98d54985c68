"""Schema migrations: ``migrations/NNNN_name.sql`` applied in order, each recorded once.

The files live at the top of the repository (so they can be read and reviewed as SQL); a wheel
carries them as ``mariposa/_migrations``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from mariposa.clock import wall_clock

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"no migrations directory found near {here}")


def pending(db: sqlite_utils.Database, directory: Path | None = None) -> list[tuple[int, str, Path]]:
    directory = directory or migrations_dir()
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT version FROM schema_migrations").fetchall()}
    found = []
    for path in sorted(directory.iterdir()):
        m = _NAME.match(path.name)
        if m and int(m.group(1)) not in done:
            found.append((int(m.group(1)), m.group(2), path))
    return found


def apply_migrations(
    db: sqlite_utils.Database, directory: Path | None = None, now: Callable[[], float] = wall_clock
) -> list[int]:
    applied = []
    for version, name, path in pending(db, directory):
        conn = db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(path.read_text()):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
                [version, name, now()],
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(version)
    return applied


def _statements(sql: str) -> list[str]:
    """Split a migration into statements so it runs inside our own transaction
    (``executescript`` would commit half-way)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    text = "\n".join(line.split("--", 1)[0] for line in lines)
    return [s.strip() for s in text.split(";") if s.strip()]
