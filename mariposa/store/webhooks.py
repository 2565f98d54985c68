"""The webhook tables (migrations/0015_webhooks.sql): the cursor over the event log and the
deliveries. Plain functions of ``db`` for ``Store.call``, each one transaction.

``make`` writes a page's deliveries and moves the cursor together: a crash before it commits
reads the page again, after it never again. A URL's outbox is bounded: past ``OUTBOX`` pending
deliveries the oldest are marked ``dropped``, with an event that says how many.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs
import sqlite_utils

from mariposa.errors import NotFound
from mariposa.store import events
from mariposa.store.db import now
from mariposa.store.rows import resolve

OUTBOX = 1_000  # pending deliveries per URL; past it the oldest are dropped
GIVE_UP = 24 * 3600.0  # seconds a delivery is tried for
KEEP_FINISHED = 7 * 24 * 3600.0  # delivered, failed and dropped rows are kept this long, then pruned
STATES = ("pending", "delivered", "failed", "dropped")


@attrs.frozen
class NewDelivery:
    id: str
    project_id: str | None
    event_id: int
    event: str
    url: str
    secret_from: str | None
    body: str


@attrs.frozen
class DeliveryRow(NewDelivery):
    """A delivery as stored: what was made (``NewDelivery``) and how sending it went."""

    seq: int
    state: str
    attempts: int
    created: float
    deadline: float
    next_attempt: float
    last_attempt: float | None
    last_status: int | None
    last_error: str | None
    delivered: float | None
    project: str | None = None  # the project's name, joined in

    @classmethod
    def from_row(cls, row: Mapping) -> DeliveryRow:
        return cls(**{a.name: row[a.name] for a in attrs.fields(cls) if a.name in row.keys()})

    def to_json(self) -> dict:
        """As listings show it: without the body (the event is in the log) or any secret."""
        return {"id": self.id, "project": self.project, "event_id": self.event_id, "event": self.event,
                "url": self.url, "signed": self.secret_from is not None, "secret_from": self.secret_from,
                "state": self.state, "attempts": self.attempts, "created": self.created, "deadline": self.deadline,
                "next_attempt": self.next_attempt if self.state == "pending" else None,
                "last_attempt": self.last_attempt, "last_status": self.last_status, "last_error": self.last_error,
                "delivered": self.delivered}


_SELECT = "SELECT d.*, p.name AS project FROM webhook_deliveries d LEFT JOIN projects p ON p.id = d.project_id"


# ---- following the log ----------------------------------------------------------------------


def cursor(db: sqlite_utils.Database) -> int:
    row = db.execute("SELECT event_id FROM webhook_cursor WHERE id = 1").fetchone()
    return row[0] if row else 0


def page(db: sqlite_utils.Database, limit: int = 500) -> tuple[int, list[dict], int, dict[str, tuple], bool]:
    """(cursor, the events after it, the id to go on from, project id -> (name, its current
    version's row), whether the page is full). The events returned are those of a project; the
    next cursor covers the others too, so a page of nothing but project-less events moves it."""
    from mariposa.store import goal as goal_store

    start = cursor(db)
    rows = list(db.query("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", [start, limit]))
    end = rows[-1]["id"] if rows else start
    found = [r for r in rows if r["project_id"]]
    projects: dict[str, tuple] = {}
    for project_id in {r["project_id"] for r in found}:
        p = db.execute("SELECT name, current_version FROM projects WHERE id = ?", [project_id]).fetchone()
        if p is None or p[1] is None:
            continue
        projects[project_id] = (p[0], goal_store.get_version(db, p[1]))
    return start, found, end, projects, len(rows) == limit


def make(db: sqlite_utils.Database, start: int, end: int, deliveries: Sequence[NewDelivery]) -> list[str]:
    """Write ``deliveries`` and move the cursor from ``start`` to ``end``, in this one
    transaction; nothing if the cursor moved meanwhile (it never should: one dispatcher).
    Returns the URLs that have new deliveries."""
    if cursor(db) != start:
        return []
    stamp = now()
    for d in deliveries:
        db.execute(
            "INSERT INTO webhook_deliveries (id, project_id, event_id, event, url, secret_from, body, state, attempts, "
            "created, deadline, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
            [d.id, d.project_id, d.event_id, d.event, d.url, d.secret_from, d.body, stamp, stamp + GIVE_UP, stamp])
    db.execute("UPDATE webhook_cursor SET event_id = ? WHERE id = 1", [end])
    urls = sorted({d.url for d in deliveries})
    for url in urls:
        _bound(db, url)
    return urls


def _bound(db: sqlite_utils.Database, url: str) -> None:
    """The outbox of ``url`` holds at most OUTBOX pending deliveries: the oldest beyond are
    dropped, with one event per project that lost some."""
    waiting = db.execute("SELECT COUNT(*) FROM webhook_deliveries WHERE url = ? AND state = 'pending'",
                         [url]).fetchone()[0]
    if waiting <= OUTBOX:
        return
    over = list(db.query("SELECT seq, id, project_id FROM webhook_deliveries WHERE url = ? AND state = 'pending' "
                         "ORDER BY seq LIMIT ?", [url, waiting - OUTBOX]))
    db.execute(f"UPDATE webhook_deliveries SET state = 'dropped', last_error = 'outbox full' "
               f"WHERE seq IN ({', '.join('?' for _ in over)})", [r["seq"] for r in over])
    by_project: dict[str | None, list[str]] = {}
    for r in over:
        by_project.setdefault(r["project_id"], []).append(r["id"])
    for project_id, ids in by_project.items():
        shown = ", ".join(i[:12] for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
        events.record(db, "webhook.dropped", f"webhook {url}: outbox full ({OUTBOX:,} pending), dropped the "
                                             f"{len(ids):,} oldest: {shown}", project_id=project_id)


# ---- sending --------------------------------------------------------------------------------


def pending_urls(db: sqlite_utils.Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT DISTINCT url FROM webhook_deliveries WHERE state = 'pending'")]


def next_due(db: sqlite_utils.Database, url: str) -> tuple[DeliveryRow | None, float | None]:
    """The pending delivery of ``url`` that has been due longest (the oldest first among those
    due since the same time: all of them, while the receiver answers), or (None, seconds until
    the next one is due; None: the queue is empty). One that keeps failing waits out its own
    back-off while the others go: it never holds up the rest of its queue. Seconds, not a time:
    the caller sleeps on its own clock, which need not read the same as the store's."""
    stamp = now()
    for row in db.query(_SELECT + " WHERE d.url = ? AND d.state = 'pending' AND d.next_attempt <= ? "
                        "ORDER BY d.next_attempt, d.seq LIMIT 1", [url, stamp]):
        return DeliveryRow.from_row(row), None
    soonest = db.execute("SELECT MIN(next_attempt) FROM webhook_deliveries WHERE url = ? AND state = 'pending'",
                         [url]).fetchone()[0]
    return None, None if soonest is None else max(0.0, soonest - stamp)


def delivered(db: sqlite_utils.Database, delivery_id: str, status: int, after_failures: bool) -> None:
    """A 2xx. After failures in a row, the receiver is back: every delivery of its URL waiting
    out a back-off is due now."""
    stamp = now()
    db.execute("UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, last_attempt = ?, "
               "last_status = ?, last_error = NULL, delivered = ? WHERE id = ? AND state = 'pending'",
               [stamp, status, stamp, delivery_id])
    if after_failures:
        db.execute("UPDATE webhook_deliveries SET next_attempt = ? WHERE url = (SELECT url FROM webhook_deliveries "
                   "WHERE id = ?) AND state = 'pending' AND next_attempt > ?", [stamp, delivery_id, stamp])


def attempt_failed(db: sqlite_utils.Database, delivery_id: str, status: int | None, error: str | None,
                   retry_in: float) -> str:
    """An attempt that got no 2xx: tried again in ``retry_in`` seconds, or failed once that is
    past its deadline. Returns the state it is left in."""
    stamp = now()
    retry_at = stamp + retry_in
    row = db.execute("SELECT deadline FROM webhook_deliveries WHERE id = ? AND state = 'pending'",
                     [delivery_id]).fetchone()
    if row is None:
        return "gone"  # dropped (outbox full) or redelivered meanwhile: that state stands
    state = "failed" if retry_at > row[0] else "pending"
    db.execute("UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, last_attempt = ?, last_status = ?, "
               "last_error = ?, next_attempt = ? WHERE id = ?",
               [state, stamp, status, error, retry_at, delivery_id])
    if state == "failed":
        found = db.execute("SELECT project_id, url, attempts FROM webhook_deliveries WHERE id = ?",
                           [delivery_id]).fetchone()
        events.record(db, "webhook.failed", f"webhook {found[1]}: delivery {delivery_id[:12]} given up after "
                                            f"{found[2]} attempts ({error or f'HTTP {status}'})",
                      project_id=found[0])
    return state


def prune(db: sqlite_utils.Database) -> int:
    """Finished deliveries older than KEEP_FINISHED go."""
    cur = db.execute("DELETE FROM webhook_deliveries WHERE state != 'pending' AND created < ?",
                     [now() - KEEP_FINISHED])
    return cur.rowcount


# ---- the operator's view --------------------------------------------------------------------


def listing(db: sqlite_utils.Database, project_id: str, states: Iterable[str] = (),
            limit: int = 100) -> list[DeliveryRow]:
    """The project's newest ``limit`` deliveries (of ``states``), newest first."""
    states = tuple(states)
    where, args = "d.project_id = ?", [project_id]
    if states:
        where += f" AND d.state IN ({', '.join('?' for _ in states)})"
        args += list(states)
    rows = db.query(_SELECT + f" WHERE {where} ORDER BY d.seq DESC LIMIT ?", args + [limit])
    return [DeliveryRow.from_row(r) for r in rows]


def redeliver(db: sqlite_utils.Database, project_id: str, ref: str, author: str | None) -> DeliveryRow:
    """Queue delivery ``ref`` (an id or unique prefix) again, whatever its state: the same id and
    body, due now, tried for another 24 h. The same id lets a receiver that has it drop it."""
    row = resolve(db, "webhook_deliveries", ref, what="webhook delivery", where="project_id = ?",
                  where_args=[project_id], by_name=False)
    stamp = now()
    db.execute("UPDATE webhook_deliveries SET state = 'pending', next_attempt = ?, deadline = ? WHERE id = ?",
               [stamp, stamp + GIVE_UP, row["id"]])
    events.record(db, "webhook.redeliver", f"webhook {row['url']}: delivery {row['id'][:12]} ({row['event']}) "
                                           "queued again", project_id=project_id, author=author)
    _bound(db, row["url"])
    for found in db.query(_SELECT + " WHERE d.id = ?", [row["id"]]):
        return DeliveryRow.from_row(found)
    raise NotFound(f"no webhook delivery '{ref}'")
