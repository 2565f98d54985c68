"""What the reconciler asks of the Swarm (``cluster = "swarm"``) in one pass: whether a cluster
service drifted from its goal, judged on its Swarm service (missing, on another spec or replica
count, a canary or orphan left over), never on a task: the Swarm restarts and reschedules those
itself, so a task that dies is an event, not a step."""

from __future__ import annotations

from mariposa.context import Context
from mariposa.model import LABEL_PROJECT, LABEL_PROJECT_NAME, LABEL_SERVICE, Instance, InstanceState, ServiceGoal
from mariposa.swarm.converge import Paused, WaitFor, observe, on_swarm, plan_swarm, summary
from mariposa.swarm.spec import service_name


class SwarmView:
    """One pass's look at the Swarm (``cluster = "swarm"``): for a cluster service, drift is its
    Swarm service missing, on another spec or replica count, or a canary or orphan left over:
    never a task (the Swarm restarts and reschedules those itself)."""

    def __init__(self, ctx: Context, services: list, tasks: list) -> None:
        self.ctx, self.services, self.tasks = ctx, services, tasks
        self.keys: set[tuple[str, str]] = set()
        self.projects: dict[str, str] = {}
        for s in services:
            labels = s["Spec"].get("Labels") or {}
            self.keys.add((labels.get(LABEL_PROJECT, ""), labels.get(LABEL_SERVICE, "")))
            self.projects[labels.get(LABEL_PROJECT, "")] = labels.get(LABEL_PROJECT_NAME, "")

    @staticmethod
    def placeholder(project_id: str, project_name: str) -> Instance:
        """Stands for a vanished project's Swarm services when none of them has a task."""
        return Instance(id="", runtime_id="", name="", project_id=project_id, service="", spec_hash="", version_id="",
                        state=InstanceState.UNKNOWN, created=0.0, compute_type="docker", project_name=project_name)

    def owns(self, goal: ServiceGoal | None, key: tuple[str, str]) -> bool:
        return on_swarm(self.ctx, goal) and (goal is not None or key in self.keys)

    def drift(self, goal: ServiceGoal | None, project_name: str, key: tuple[str, str]) -> str | None:
        project_id, service = key
        observed = observe(self.services, self.tasks, project_id, service)
        steps = [s for s in plan_swarm(goal, observed, service_name(project_name, project_id, service))
                 if not isinstance(s, WaitFor | Paused)]
        return summary(steps) if steps else None
