"""What an autoscale decision writes: with ``enable: true`` a scale through the one path
(``goal.scale_service``, author ``autoscale``, the reason in the task's params and the event),
with ``notify`` only the announcement. One transaction each, and only if the service is still as
the decision saw it (an operator who scaled meanwhile wins)."""

from __future__ import annotations

import sqlite_utils

from mariposa.errors import NotFound
from mariposa.metrics.autoscale import Decision
from mariposa.model import ServiceSpec
from mariposa.store import events, goal
from mariposa.store.db import now
from mariposa.store.rows import TaskRow

AUTHOR = "autoscale"


def act(db: sqlite_utils.Database, project_id: str, spec: ServiceSpec, decision: Decision,
        enable: str) -> TaskRow | None | bool:
    """The scale task (``enable: true``), True once announced (``notify``), None when the
    service moved meanwhile (stopped, deleted, frozen or scaled): the next round judges again."""
    try:
        project = goal.get_project(db, project_id)
        svc = goal.get_service(db, project, spec.name)
    except NotFound:
        return None
    if project.desired != "running" or svc.desired != "running" or svc.frozen or svc.scale != decision.current:
        return None
    change = f"{spec.name} {decision.current} -> {decision.target}"
    if enable == "true":
        task = goal.scale_service(db, project, svc, str(decision.target), AUTHOR, spec=spec, reason=decision.reason)
        events.record(db, "autoscale.scale", f"{change}: {decision.reason}", project_id=project.id,
                      service=spec.name, task_id=task.id, author=AUTHOR)
        return task
    db.execute("UPDATE services SET last_scaled = ? WHERE id = ?", [now(), svc.id])
    events.record(db, "autoscale.notify", f"{change} (not scaled: autoscale.enable is notify): {decision.reason}",
                  project_id=project.id, service=spec.name, author=AUTHOR)
    return True


def unusable(db: sqlite_utils.Database, project_id: str, service: str, trigger: str, why: str) -> None:
    events.record(db, "trigger.unusable", f"trigger {trigger!r} of {service} cannot apply: {why}",
                  project_id=project_id, service=service, author=AUTHOR)
