"""A new version on a swarm daemon is judged against the Swarm when it is made, not when its task
runs: a service the Swarm cannot run as written (an affinity rule Swarm placement cannot say,
``devices``, ``privileged``, host networking...) is refused with the reason at the line of the
option, and nothing changes, as any other manifest problem. The converge task still checks
again (the nodes may change between the two), but the user hears it from ``project add``."""

from __future__ import annotations

from mariposa.export.fields import manifest_fields
from mariposa.manifest.errors import ManifestError, ManifestProblem
from mariposa.model import ProjectSpec
from mariposa.swarm.converge import placement_now
from mariposa.swarm.driver import SwarmDriver
from mariposa.swarm.spec import swarm_service

# a project id for the check: the spec's body is thrown away, only its problems count
_CHECK_ID = "0" * 24


async def refuse_what_the_swarm_cannot_run(driver: SwarmDriver, spec: ProjectSpec, text: str, filename: str,
                                           project_name: str) -> None:
    """Raise ``ManifestError`` naming every option of every Swarm-placed service (continuous,
    ``compute_type: docker``) that the Swarm cannot run, each at the line and column it was
    written; return when there is none."""
    problems: list[ManifestProblem] = []
    where: dict[str, tuple[int, int]] | None = None
    for svc in spec.services:
        if svc.compute_type != "docker" or svc.service_type != "continuous":
            continue
        scale = svc.scale if svc.scale is not None else 1
        placement = await placement_now(driver, svc, project_name, scale)
        made = swarm_service(driver.owner, _CHECK_ID, project_name, "", svc, scale, 1, placement,
                             secrets={name: ("", name) for name in svc.secrets},
                             configs={key: ("", key) for key, _ in svc.mdata})
        for p in made.problems:
            if getattr(p, "transient", False):
                continue  # what runs now may change before the task places it: its task says so
            if where is None:
                where = manifest_fields(text, filename)
            option = p.field.split(".")[0].split("[")[0]
            line, column = where.get(f"services.{svc.name}.{option}", where.get(f"services.{svc.name}", (1, 1)))
            problems.append(ManifestProblem(filename, line, column, f"services.{svc.name}.{option}",
                                            f"cannot run on the Swarm: {p.reason}"))
    if problems:
        raise ManifestError(problems)
