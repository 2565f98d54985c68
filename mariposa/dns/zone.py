"""A project's names and their addresses now, built from the goal state and the inventory.

``SERVICE`` and ``SERVICE.PROJECT`` answer with the service's instances that can take traffic:
running, with an address, not retired or being removed, and healthy when the service has checks
(an instance still ``starting`` is not in yet). An instance's own name (and ``NAME.PROJECT``)
answers whenever it has an address, whatever its health: one asks for it by name to look at it.
A service with no such instance has its name all the same, with no address (NODATA, not
NXDOMAIN, so no resolver caches its absence).

Names that are not the project's go where the asking instance's service sends them: its ``dns``
servers when the manifest names some (the responder stands in front of them, so the project's
names still resolve), the host's resolvers otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from mariposa.model import Instance


@attrs.frozen
class Zone:
    project: str  # the project's name, lower case
    names: dict[str, tuple[str, ...]]  # a name (lower case, no trailing dot) -> its addresses
    upstreams: dict[str, tuple[str, ...]] = attrs.Factory(dict)  # an instance's address -> its ``dns``

    def lookup(self, qname: str) -> tuple[str, ...] | None:
        """The addresses of a name of this project (maybe none), or None for a name it lacks."""
        name = qname.rstrip(".").lower()
        if name.endswith("." + self.project):
            short = name[: -len(self.project) - 1]
            if "." not in short:
                return self.names.get(short, ())  # PROJECT's domain: a name it lacks is NXDOMAIN's
        return self.names.get(name)

    def owns(self, qname: str) -> bool:
        """Whether the name is this project's to answer (an unknown one: NXDOMAIN, not forwarded):
        one label (no resolver out there knows it), or one label under the project's name."""
        name = qname.rstrip(".").lower()
        return "." not in name or (name.endswith("." + self.project) and "." not in name[: -len(self.project) - 1])


def in_service(inst: Instance, checked: bool) -> bool:
    """Whether the instance takes traffic under its service's name."""
    if not inst.running or not inst.address or inst.retired or inst.removing:
        return False
    return inst.health == "healthy" if checked else inst.health in (None, "healthy")


def build(project: str, services: Iterable[str], checked: Iterable[str], instances: Iterable[Instance],
          servers: Mapping[str, tuple[str, ...]] | None = None) -> Zone:
    """``services``: every service the project has now; ``checked``: those with health checks;
    ``servers``: the ``dns`` of the services that name their own servers."""
    with_checks = set(checked)
    names: dict[str, list[str]] = {s.lower(): [] for s in services}
    own: dict[str, list[str]] = {}
    upstreams: dict[str, tuple[str, ...]] = {}
    for inst in sorted(instances, key=lambda i: i.name):
        if not inst.address:
            continue
        if servers and inst.service in servers:
            upstreams[inst.address] = servers[inst.service]
        if inst.running and not inst.removing:
            own.setdefault(inst.name.lower(), []).append(inst.address)
        if in_service(inst, inst.service in with_checks) and inst.service.lower() in names:
            names[inst.service.lower()].append(inst.address)
    names.update(own)
    return Zone(project.lower(), {k: tuple(v) for k, v in names.items()}, upstreams)
