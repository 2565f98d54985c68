"""Named compute packages: the single-host stand-in for Triton's package catalogue.

Manifests written for Triton say ``package: <name>`` instead of sizing each service, so Mariposa
keeps a small catalogue too. It is a plain ``dict`` handed to whoever needs it (the manifest
validator takes one as an argument) rather than a global, so that a later configuration file can
replace it without touching the callers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import attrs

# Not imported from manifest.units: the manifest package imports this module.
MIB = 1024**2
GIB = 1024**3


@attrs.frozen
class Package:
    name: str
    memory: int  # bytes
    cpus: float
    disk: int | None = None  # bytes: a VM's root disk (the overlay's virtual size); containers ignore it


def _catalogue(*packages: Package) -> dict[str, Package]:
    return {p.name: p for p in packages}


# Ordered smallest first, which is also the order shown to users in "known packages" hints.
DEFAULT_PACKAGES: Mapping[str, Package] = _catalogue(
    Package("small", 256 * MIB, 0.5, 10 * GIB),
    Package("medium", 1 * GIB, 1.0, 25 * GIB),
    Package("large", 4 * GIB, 2.0, 50 * GIB),
    Package("xlarge", 8 * GIB, 4.0, 100 * GIB),
)


def resolve_package(name: str, packages: Mapping[str, Package] | None = None) -> Package | None:
    """The package called ``name``, or ``None`` so the caller can word its own error."""
    return (DEFAULT_PACKAGES if packages is None else packages).get(name)


def package_names(packages: Mapping[str, Package] | None = None) -> list[str]:
    """Names in catalogue order, for did-you-mean suggestions and help text."""
    return list(DEFAULT_PACKAGES if packages is None else packages)


def pinned(services: Iterable, packages: Mapping[str, Package]) -> dict[str, Package]:
    """The sizes of the packages a version's services name, as they are now: the version keeps
    them, as it keeps its images' content ids, so a later catalogue never changes or invalidates it."""
    names = sorted({s.package for s in services if s.package})
    return {name: packages[name] for name in names if name in packages}


def dumps(packages: Mapping[str, Package]) -> str:
    return json.dumps({p.name: {"memory": p.memory, "cpus": p.cpus, **({"disk": p.disk} if p.disk else {})}
                       for p in packages.values()}, sort_keys=True)


def loads(text: str) -> dict[str, Package]:
    return {name: Package(name, int(v["memory"]), float(v["cpus"]), int(v["disk"]) if v.get("disk") else None)
            for name, v in json.loads(text).items()}
