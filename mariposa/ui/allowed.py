"""Which controls a page offers: the actions the signed-in user's bindings allow on a project.

The same ``decide`` every request goes through, asked without recording it (offering a button
is not an action; pressing it is, and the control layer asks and audits again then)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mariposa.control.base import _scope_of

if TYPE_CHECKING:
    from mariposa.control import Control
    from mariposa.control.caller import Caller
    from mariposa.store.rows import ProjectRow

# What a page may offer, by the control action that does it
OFFERED = ("service.scale", "service.start", "service.stop", "service.reprovision", "service.revert",
           "project.start", "project.stop", "project.revert", "project.update", "project.delete",
           "service.run", "queue.stop", "meta.set", "project.add")


def allowed(control: Control, caller: Caller, project: ProjectRow | None) -> frozenset[str]:
    """The actions of ``OFFERED`` the caller may take on ``project`` (None: on its organisation)."""
    from mariposa.access.model import Scope

    scope = _scope_of(project) if project is not None else Scope(org=caller.org or "default")
    return frozenset(a for a in OFFERED if control.policy.decide(caller, a, scope).allowed)
