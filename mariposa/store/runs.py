"""Runs of scheduled and event services (migrations/0012_runs.sql): their rows, the schedule
cursors, history pruning. Plain functions of ``db`` for ``Store.call``: each is one transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import sqlite_utils

from mariposa.errors import BadRequest, Conflict, NotFound
from mariposa.store.db import new_id, now

ACTIVE = ("queued", "running")
DONE = ("succeeded", "failed", "missed", "skipped", "stopped")
STATES = ACTIVE + DONE
TRIGGERS = ("schedule", "catch-up", "manual", "event", "url")
IDEMPOTENCY_WINDOW = 24 * 3600.0  # a key repeated within this returns the first run
MAX_LOGS = 1024 * 1024  # bytes of output kept with a run: its last MiB


@attrs.frozen
class RunRow:
    id: str
    project_id: str
    service: str
    trigger: str
    scheduled: float
    queued: float
    started: float | None
    ended: float | None
    exit_code: int | None
    state: str
    instance_id: str | None
    attempt: int
    not_before: float | None
    stop_requested: bool
    idempotency_key: str | None
    env: tuple[tuple[str, str], ...]
    reason: str | None
    author: str | None

    @classmethod
    def from_row(cls, row: dict) -> RunRow:
        fields = {a.name: row[a.name] for a in attrs.fields(cls) if a.name not in ("env", "stop_requested")}
        return cls(**fields, stop_requested=bool(row["stop_requested"]),
                   env=tuple(tuple(p) for p in json.loads(row["env"] or "[]")))

    @property
    def key(self) -> tuple[str, str]:
        return (self.project_id, self.service)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "project_id": self.project_id, "service": self.service, "trigger": self.trigger,
                "scheduled": self.scheduled, "queued": self.queued, "started": self.started, "ended": self.ended,
                "exit_code": self.exit_code, "state": self.state, "instance_id": self.instance_id,
                "attempt": self.attempt, "reason": self.reason, "idempotency_key": self.idempotency_key,
                "env": [list(p) for p in self.env], "author": self.author}


_COLUMNS = ", ".join(a.name for a in attrs.fields(RunRow))


def _rows(db: sqlite_utils.Database, where: str, args: Sequence[Any], tail: str = "") -> list[RunRow]:
    return [RunRow.from_row(r) for r in db.query(f"SELECT {_COLUMNS} FROM runs WHERE {where} {tail}", list(args))]


def open_runs(db: sqlite_utils.Database) -> list[RunRow]:
    """Every queued or running run, in the order they were queued."""
    return _rows(db, "state IN ('queued', 'running')", (), "ORDER BY scheduled, queued, attempt")


def get(db: sqlite_utils.Database, ref: str, project_id: str | None = None) -> RunRow:
    """A run by id or unique id prefix (of one project, when given)."""
    if not ref or len(ref) > 64 or not all(c in "0123456789abcdef" for c in ref):
        raise NotFound(f"no run '{ref}'")
    scope, args = ("AND project_id = ?", [project_id]) if project_id else ("", [])
    found = _rows(db, f"id LIKE ? {scope}", [ref + "%", *args], "LIMIT 2")
    if not found:
        raise NotFound(f"no run '{ref}'")
    if len(found) > 1:
        raise BadRequest(f"run id prefix '{ref}' is ambiguous; give more of it")
    return found[0]


def listing(db: sqlite_utils.Database, project_id: str, service: str, states: Iterable[str] = (),
            limit: int = 100) -> list[RunRow]:
    """The service's runs, newest firing first."""
    states = tuple(states)
    where, args = "project_id = ? AND service = ?", [project_id, service]
    if states:
        where += f" AND state IN ({', '.join('?' for _ in states)})"
        args += list(states)
    return _rows(db, where, args, f"ORDER BY scheduled DESC, queued DESC, attempt DESC LIMIT {int(limit)}")


def logs(db: sqlite_utils.Database, run_id: str) -> bytes:
    row = db.execute("SELECT logs FROM runs WHERE id = ?", [run_id]).fetchone()
    return bytes(row[0] or b"") if row else b""


_RAN = "q.state NOT IN ('skipped', 'missed')"  # a listing's "last run": a firing that became a run


def last_runs(db: sqlite_utils.Database, project_id: str) -> dict[str, RunRow]:
    """Each service's newest run of the project (not a skipped or missed firing), by service
    name (for listings)."""
    found = _rows(db, f"project_id = ? AND queued = (SELECT MAX(queued) FROM runs q WHERE q.project_id = "
                      f"runs.project_id AND q.service = runs.service AND {_RAN})", [project_id])
    return {r.service: r for r in found}


def project_runs(db: sqlite_utils.Database) -> tuple[dict[str, RunRow], set[tuple[str, str]]]:
    """Each project's newest run, and the services whose schedule is suspended (stopped or
    frozen), for the project listing."""
    newest = _rows(db, f"queued = (SELECT MAX(queued) FROM runs q WHERE q.project_id = runs.project_id AND {_RAN})",
                   ())
    suspended = {(r[0], r[1]) for r in db.execute(
        "SELECT project_id, name FROM services WHERE desired != 'running' OR frozen")}
    return {r.project_id: r for r in newest}, suspended


# ---- writing ----------------------------------------------------------------------------------


def insert(db: sqlite_utils.Database, project_id: str, service: str, trigger: str, scheduled: float, state: str,
           *, reason: str | None = None, attempt: int = 0, not_before: float | None = None,
           idempotency_key: str | None = None, env: Sequence[tuple[str, str]] = (), author: str | None = None,
           ended: float | None = None) -> str:
    run_id = new_id()
    stamp = now()
    db.execute(
        "INSERT INTO runs (id, project_id, service, trigger, scheduled, queued, state, reason, attempt, not_before, "
        "idempotency_key, env, author, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, project_id, service, trigger, scheduled, stamp, state, reason, attempt, not_before,
         idempotency_key, json.dumps([list(p) for p in env]) if env else None, author,
         stamp if state in DONE and ended is None else ended])
    return run_id


def request(db: sqlite_utils.Database, project_id: str, service: str, trigger: str, queue_limit: int, *,
            idempotency_key: str | None = None, env: Sequence[tuple[str, str]] = (),
            author: str | None = None) -> tuple[RunRow, bool]:
    """A run asked for now (manual, event): queued, or the run its idempotency key already
    made within 24 h (then False). A full queue is refused and changes nothing."""
    stamp = now()
    if idempotency_key:
        earlier = _rows(db, "project_id = ? AND service = ? AND idempotency_key = ? AND queued >= ?",
                        [project_id, service, idempotency_key, stamp - IDEMPOTENCY_WINDOW], "ORDER BY queued LIMIT 1")
        if earlier:
            return earlier[0], False
    waiting = db.execute("SELECT COUNT(*) FROM runs WHERE project_id = ? AND service = ? AND state = 'queued'",
                         [project_id, service]).fetchone()[0]
    if waiting >= queue_limit:
        raise Conflict(f"service {service} already has {waiting} runs waiting (queue_limit {queue_limit}): "
                       "try again once some have run")
    run_id = insert(db, project_id, service, trigger, stamp, "queued", idempotency_key=idempotency_key, env=env,
                    author=author)
    return get(db, run_id), True


def cursors(db: sqlite_utils.Database) -> dict[tuple[str, str], float]:
    return {(r["project_id"], r["service"]): r["fired_through"] for r in db.query("SELECT * FROM schedule_cursors")}


def set_cursor(db: sqlite_utils.Database, project_id: str, service: str, fired_through: float) -> None:
    db.execute("INSERT INTO schedule_cursors (project_id, service, fired_through) VALUES (?, ?, ?) "
               "ON CONFLICT (project_id, service) DO UPDATE SET fired_through = excluded.fired_through",
               [project_id, service, fired_through])


def record_firings(db: sqlite_utils.Database, project_id: str, service: str, fired_through: float,
                   firings: Sequence[tuple[float, str, str, str | None]], stop: Sequence[str] = ()) -> list[str]:
    """The firings up to ``fired_through`` as (time, trigger, state, reason), the cursor moved
    past them and the runs ``stop`` names asked to stop, in one transaction; the ids of the rows
    made. A firing already recorded (a pass replayed) is not recorded again."""
    made = []
    for when, trigger, state, reason in firings:
        exists = db.execute("SELECT 1 FROM runs WHERE project_id = ? AND service = ? AND scheduled = ? AND attempt = 0 "
                            "AND trigger IN ('schedule', 'catch-up')", [project_id, service, when]).fetchone()
        if not exists:
            made.append(insert(db, project_id, service, trigger, when, state, reason=reason))
    for run_id in stop:
        request_stop(db, run_id, "replaced by a newer firing (concurrency: replace)")
    set_cursor(db, project_id, service, fired_through)
    return made


def request_stop(db: sqlite_utils.Database, run_id: str, reason: str) -> RunRow:
    """A queued run is stopped at once; a running one is marked for the scheduler to stop."""
    row = get(db, run_id)
    if row.state == "queued":
        db.execute("UPDATE runs SET state = 'stopped', ended = ?, reason = ? WHERE id = ?", [now(), reason, run_id])
    elif row.state == "running" and not row.stop_requested:
        db.execute("UPDATE runs SET stop_requested = 1, reason = ? WHERE id = ?", [reason, run_id])
    return get(db, run_id)


def mark_missed(db: sqlite_utils.Database, run_id: str, reason: str) -> None:
    db.execute("UPDATE runs SET state = 'missed', ended = ?, reason = ? WHERE id = ? AND state = 'queued'",
               [now(), reason, run_id])


def mark_starting(db: sqlite_utils.Database, run_id: str, instance_id: str) -> bool:
    """queued -> running with the instance id it will have, before the instance is made."""
    cur = db.execute("UPDATE runs SET state = 'running', instance_id = ? WHERE id = ? AND state = 'queued'",
                     [instance_id, run_id])
    return cur.rowcount == 1


def mark_started(db: sqlite_utils.Database, run_id: str, started: float) -> None:
    db.execute("UPDATE runs SET started = ? WHERE id = ? AND started IS NULL", [started, run_id])


def finish(db: sqlite_utils.Database, run_id: str, state: str, exit_code: int | None, output: bytes,
           reason: str | None = None, ended: float | None = None) -> bool:
    """The run's end, with its output (its last ``MAX_LOGS`` bytes); False when it had ended
    already (a run ends once: a second look at it changes nothing)."""
    cur = db.execute("UPDATE runs SET state = ?, exit_code = ?, logs = ?, ended = ?, reason = COALESCE(?, reason) "
                     "WHERE id = ? AND state IN ('queued', 'running')",
                     [state, exit_code, output[-MAX_LOGS:], ended or now(), reason, run_id])
    return cur.rowcount == 1


def retry(db: sqlite_utils.Database, failed: RunRow, not_before: float) -> str:
    """The next attempt of a failed run's firing, waiting out its back-off."""
    return insert(db, failed.project_id, failed.service, failed.trigger, failed.scheduled, "queued",
                  attempt=failed.attempt + 1, not_before=not_before, env=failed.env, author=failed.author,
                  reason=f"retry {failed.attempt + 1} of run {failed.id[:12]}")


def prune(db: sqlite_utils.Database, project_id: str, service: str, succeeded: int, failed: int) -> int:
    """History: the newest ``succeeded`` succeeded runs and ``failed`` failed or stopped ones are
    kept with their logs, and as many missed or skipped firings as failed runs; older rows go."""
    gone = 0
    for states, keep in ((("succeeded",), succeeded), (("failed", "stopped"), failed), (("missed", "skipped"), failed)):
        marks = ", ".join("?" for _ in states)
        cur = db.execute(
            f"DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE project_id = ? AND service = ? AND state IN "
            f"({marks}) ORDER BY COALESCE(ended, queued) DESC, queued DESC LIMIT -1 OFFSET ?)",
            [project_id, service, *states, keep])
        gone += cur.rowcount
    return gone
