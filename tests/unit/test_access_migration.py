"""Migration 0017 on a store made before it: every project, version and task is kept, and every
project is in the organisation ``default``, which exists."""

from __future__ import annotations

import shutil
import sqlite3

import sqlite_utils

from mariposa.store import tasks as task_store
from mariposa.store.migrate import apply_migrations, migrations_dir


def _row(db, table: str, **given) -> None:
    """A row with the given values and a stand-in for every other NOT NULL column without a default."""
    values = dict(given)
    for _, name, kind, notnull, default, pk in db.execute(f"PRAGMA table_info({table})").fetchall():
        if name not in values and notnull and default is None and not pk:
            values[name] = 0 if kind.upper() in ("INTEGER", "REAL") else f"{table}-{name}"
    db.execute(f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
               list(values.values()))


def test_the_default_organisation_keeps_every_project_version_and_task(tmp_path):
    before = tmp_path / "before-0017"
    before.mkdir()
    for path in migrations_dir().iterdir():
        if path.suffix == ".sql" and int(path.name[:4]) < 17:
            shutil.copy(path, before / path.name)
    conn = sqlite3.connect(str(tmp_path / "m.db"), isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    db = sqlite_utils.Database(conn)
    assert max(apply_migrations(db, before)) == 16
    for n in range(3):
        _row(db, "projects", id=f"p{n}", name=f"proj{n}", created=1.0, desired="running")
        for seq in (1, 2):
            _row(db, "versions", id=f"v{n}{seq}", project_id=f"p{n}", seq=seq, hash=f"h{n}{seq}", manifest="m",
                 created=1.0)
        _row(db, "tasks", id=f"t{n}", project_id=f"p{n}", project_name=f"proj{n}", kind="deploy", state="completed",
             params="{}", progress="{}", created=1.0)
    counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("projects", "versions", "tasks")}

    assert apply_migrations(db) == sorted(int(p.name[:4]) for p in migrations_dir().iterdir()
                                          if p.suffix == ".sql" and int(p.name[:4]) >= 17)
    assert {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in counts} == counts == {
        "projects": 3, "versions": 6, "tasks": 3}
    assert db.execute("SELECT DISTINCT org FROM projects").fetchall() == [("default",)]
    assert db.execute("SELECT name FROM orgs").fetchall() == [("default",)]
    assert task_store.get(db, "t1").target == "default.proj1"
