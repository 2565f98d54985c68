"""Manifest text to a validated ``ProjectSpec``.

Parsing and validation are pure (no I/O, no clock) so the API, the CLI's local checks and the
watched directory all give the same answer, and property tests can run them by the thousand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mariposa.manifest.errors import ManifestError, ManifestProblem
from mariposa.manifest.parse import load
from mariposa.manifest.rules import DEFAULT_BIND_ROOTS, Rules
from mariposa.manifest.validate import validate
from mariposa.model import ProjectSpec
from mariposa.packages import Package

__all__ = ["ManifestError", "ManifestProblem", "parse_manifest"]


def parse_manifest(
    text: str, filename: str = "<manifest>", packages: Mapping[str, Package] | None = None,
    allow_privileged: bool = False, env_files: Mapping[str, Any] | None = None, *,
    bind_roots: tuple[str, ...] | None = DEFAULT_BIND_ROOTS, base_dir: str | None = None,
    secrets: frozenset[str] | None = None, meta: Mapping[str, str | None] | None = None,
    cluster: str | None = "none",
) -> ProjectSpec:
    """The project described by ``text`` (YAML or JSON).

    ``packages`` is the package catalogue (``mariposa.packages.DEFAULT_PACKAGES`` when omitted);
    ``allow_privileged`` admits the options that give a container the host (manifest/container.py).
    ``env_files`` holds the text of each `env_file` the manifest names (manifest/env_files.py);
    ``bind_roots`` the host paths bind mounts may name (None: any), ``base_dir`` the directory
    relative bind paths start from (manifest/volumes.py); ``secrets`` the names of the project's
    secrets a service may list (None: any). ``meta`` is the project's meta: a template
    (manifest/interpolate.py) naming a key it lacks is a problem (None: not checked).
    ``cluster`` is the daemon's (config.py): a hard '!=' affinity needs "swarm" (None: not checked).
    Raises ``ManifestError`` listing every problem found, each with its line and column.
    """
    rules = Rules(packages, allow_privileged, env_files, bind_roots, base_dir, secrets=secrets, meta=meta,
                  cluster=cluster)
    return validate(load(text, filename), filename, rules)
