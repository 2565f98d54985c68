"""Node failures on the Swarm as Mariposa events: ``node.down``/``node.ready`` and
``instance.rescheduled`` ("sw-web.1 rescheduled from swarmnode-2 (down) to swarmnode-3").

Why it compares states instead of reading events: the Engine's /events has no task type, and a
node going down is only a ``node`` ``update``; the task the Swarm starts elsewhere shows up on the
other node's engine, never on the manager's stream. So each pass reads the manager's /nodes and
this owner's /tasks and compares them with what the last pass saw (``compare``, pure). A lost or
never-sent event therefore loses nothing: the next pass sees the state. What was seen is kept in
the store's ``meta`` table, written in the same transaction as the events it led to, so a daemon
restart neither repeats a move (it is keyed on task ids: a slot's running task id changed) nor
forgets one.

A slot's new task on another node is a *reschedule* only when the node its old task ran on is,
or was at the last pass, not ready: a rolling update or a crash that lands elsewhere is another
event's business (``instance.exit``, the rollout's own)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from mariposa.model import LABEL_PROJECT, LABEL_PROJECT_NAME, LABEL_SERVICE
from mariposa.store import events as event_store

log = structlog.get_logger()

META_KEY = "swarm_seen"
QUIET = 5.0  # seconds between passes when nothing is happening
BUSY = 0.5  # ... and for BUSY_FOR seconds after a node event: the reschedule follows it unannounced
BUSY_FOR = 60.0


@dataclass(frozen=True)
class Seen:
    """What a pass saw: node id -> (hostname, state); "service id/slot" -> (task id, node id) of
    the slot's running task."""

    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)
    slots: dict[str, tuple[str, str]] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"nodes": self.nodes, "slots": self.slots}, sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> Seen | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls({k: (v[0], v[1]) for k, v in data["nodes"].items()},
                       {k: (v[0], v[1]) for k, v in data["slots"].items()})
        except (ValueError, KeyError, TypeError, IndexError):
            return None  # unreadable: a fresh baseline, never a crash


@dataclass(frozen=True)
class Change:
    """One event to record."""

    type: str
    message: str
    project_id: str | None = None
    service: str | None = None
    instance: str | None = None


def _running(task: Mapping[str, Any]) -> bool:
    return task.get("DesiredState") == "running" and (task.get("Status") or {}).get("State") == "running"


def _replicas(service: Mapping[str, Any] | None) -> int:
    mode = ((service or {}).get("Spec") or {}).get("Mode") or {}
    return int((mode.get("Replicated") or {}).get("Replicas") or 0)


def compare(before: Seen | None, nodes: Sequence[Mapping[str, Any]], services: Sequence[Mapping[str, Any]],
            tasks: Sequence[Mapping[str, Any]]) -> tuple[list[Change], Seen]:
    """The events between ``before`` and the Swarm as now listed, and what to remember. With no
    ``before`` (the first pass ever) nothing is an event: it is the baseline."""
    now_nodes = {str(n.get("ID", "")): (str((n.get("Description") or {}).get("Hostname") or str(n.get("ID", ""))[:12]),
                                        str((n.get("Status") or {}).get("State") or "unknown")) for n in nodes}
    by_service = {s["ID"]: s for s in services if s.get("ID")}
    changes: list[Change] = []
    old_nodes = before.nodes if before else {}
    if before is not None:
        for node_id, (host, state) in sorted(now_nodes.items(), key=lambda kv: kv[1][0]):
            if node_id not in old_nodes:
                changes.append(Change("node.joined", f"node {host} joined the swarm ({state})"))
            elif old_nodes[node_id][1] != state:
                was = old_nodes[node_id][1]
                again = " again" if state == "ready" else ""
                changes.append(Change(f"node.{state}", f"node {host} is {state}{again} (was {was})"))
        for node_id, (host, _state) in sorted(old_nodes.items(), key=lambda kv: kv[1][0]):
            if node_id not in now_nodes:
                changes.append(Change("node.left", f"node {host} left the swarm"))

    def host_of(node_id: str) -> str:
        return (now_nodes.get(node_id) or old_nodes.get(node_id) or (node_id[:12] or "(no node)", ""))[0]

    def ready(node_id: str) -> bool:
        was = old_nodes.get(node_id, ("", "ready"))[1]
        return now_nodes.get(node_id, ("", "gone"))[1] == "ready" and was == "ready"

    slots: dict[str, tuple[str, str]] = {}
    for task in sorted(tasks, key=lambda t: str(t.get("CreatedAt", ""))):  # the newest running one wins
        service = by_service.get(task.get("ServiceID"))
        if service is None or not task.get("Slot"):
            continue  # not this owner's, or a global service's task (one per node: it never moves)
        key = f"{task['ServiceID']}/{task['Slot']}"
        if _running(task):
            slots[key] = (str(task["ID"]), str(task.get("NodeID", "")))
    old_slots = before.slots if before else {}
    for key, (task_id, node_id) in sorted(slots.items()):
        old = old_slots.get(key)
        if old is None or old[0] == task_id or old[1] == node_id or ready(old[1]):
            continue
        service_id, slot = key.split("/", 1)
        labels = (by_service[service_id].get("Spec") or {}).get("Labels") or {}
        name = f"{labels.get(LABEL_PROJECT_NAME, '')}-{labels.get(LABEL_SERVICE, '')}.{slot}"
        state = now_nodes.get(old[1], ("", "gone"))[1]
        message = f"{name} rescheduled from node {host_of(old[1])} ({state}) to node {host_of(node_id)}"
        changes.append(Change(
            "instance.rescheduled", message,
            project_id=labels.get(LABEL_PROJECT) or None, service=labels.get(LABEL_SERVICE) or None, instance=task_id))
    for key, where in old_slots.items():  # no running task now (the Swarm has not replaced it yet,
        service_id, slot = key.split("/", 1)  # or its restart delay runs): remember where it last ran,
        if key not in slots and slot.isdigit() and int(slot) <= _replicas(by_service.get(service_id)):
            slots[key] = where  # unless its service is gone or scaled below it
    return changes, Seen(now_nodes, slots)


def apply(db: Any, nodes: list[dict[str, Any]], services: list[dict[str, Any]], tasks: list[dict[str, Any]]
          ) -> list[Change]:
    """In one store transaction: read what was seen, record the changes, remember the new state."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", [META_KEY]).fetchone()
    changes, seen = compare(Seen.loads(row[0] if row else None), nodes, services, tasks)
    for c in changes:
        event_store.record(db, c.type, c.message, project_id=c.project_id, service=c.service, instance=c.instance,
                           author="swarm")
    text = seen.dumps()
    if row is None or row[0] != text:
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                   [META_KEY, text])
    return changes


async def watch(ctx: Any, driver: Any) -> None:
    """The daemon's loop for ``cluster = "swarm"``: a pass every QUIET seconds, every BUSY seconds
    for a while after the driver saw a ``node`` event (``driver.node_changed``)."""
    busy_until = -math.inf
    lost = False
    while True:
        try:
            nodes = await driver.client.nodes()
            services, tasks = await driver.observe()
            changes = await ctx.store.call(apply, nodes, services, tasks)
            for c in changes:
                log.info("swarm change", type=c.type, message=c.message)
                if c.type.startswith("node."):
                    busy_until = trio.current_time() + BUSY_FOR
            if changes:
                ctx.wake_reconciler()
            lost = False
        except Exception as exc:  # the manager away: the next pass looks again
            if not lost:
                log.warning("swarm node watch: no answer from the manager", error=str(exc))
            lost = True
        wait = BUSY if trio.current_time() < busy_until else QUIET
        with trio.move_on_after(wait):
            await driver.node_changed.wait()
        if driver.node_changed.is_set():
            driver.node_changed = trio.Event()
            busy_until = trio.current_time() + BUSY_FOR
