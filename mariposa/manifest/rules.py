"""What a manifest is judged by besides its own text: the host's package catalogue and policy,
and what was read beside it. One value carried through validation instead of a parameter each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from mariposa.model import NetworkRef, WebhookSpec
from mariposa.packages import Package

DEFAULT_BIND_ROOTS = ("/srv", "/var/lib/mariposa-data")


@attrs.frozen
class Rules:
    packages: Mapping[str, Package] | None = None  # None: the built-in catalogue
    allow_privileged: bool = False  # options that give a container the host (manifest/container.py)
    env_files: Mapping[str, Any] | None = None  # path -> text or {"error": why} (manifest/env_files.py)
    # Host paths a bind mount may name (manifest/volumes.py); None: any (a stored version, judged
    # when it was made).
    bind_roots: tuple[str, ...] | None = DEFAULT_BIND_ROOTS
    base_dir: str | None = None  # the manifest's directory, for relative bind paths
    # Named volumes of the project's top-level `volumes:` (name -> its labels); None: not given,
    # so any name a service uses is the project's.
    volumes: Mapping[str, tuple[tuple[str, str], ...]] | None = None
    # Networks of the project's top-level `networks:` (manifest/networks.py); None: none declared.
    networks: Mapping[str, NetworkRef] | None = None
    # The project's service names, for depends_on; None: not known (no check of names).
    services: tuple[str, ...] | None = None
    # The names of the project's secrets (a `secrets:` entry must be one); None: not checked (a
    # stored version, judged when it was made).
    secrets: frozenset[str] | None = None
    # The project's meta when the version is made: a template naming a key not in it is refused.
    # None: not checked (a stored version, judged when it was made).
    meta: Mapping[str, str | None] | None = None
    # The project's top-level `webhooks:` (manifest/webhooks.py), copied into every service's.
    webhooks: tuple[WebhookSpec, ...] = ()
    # The daemon's `cluster` (config.py): "none" refuses a hard '!=' affinity, which one host cannot
    # honour; "swarm" admits it (mariposa/swarm/placement.py); None: not checked (a stored version,
    # judged when it was made).
    cluster: str | None = "none"
