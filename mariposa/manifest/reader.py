"""Manifest text to YAML events and nodes, through libyaml (ruamel.yaml.clib).

ruamel's own scanner and parser are pure Python and read 30-100 KB/s: a 1,000-service manifest
took 2.3 s and 1 MiB of comments 2.3 s, past the second a daemon may spend on one manifest. libyaml
reads the same text ten times as fast and gives every node the same line and column, so nodes come
from here and only their construction stays with ruamel's round-trip constructor (which is what
gives containers their ``lc`` positions). The round-trip *editor* (sections.py) still uses the pure
loader: it needs comments, which libyaml drops, and it reads one service's section.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.nodes import Node
from ruamel.yaml.resolver import VersionedResolver

from mariposa.manifest import limits
from mariposa.manifest.errors import ManifestProblem
from mariposa.manifest.limits import Version


@functools.cache
def _resolver(version: Version) -> type[VersionedResolver]:
    """ruamel asks for the YAML version twice per scalar, and under libyaml each ask is two
    caught AttributeErrors: 40% of composing. The version is the document's (``%YAML``) or 1.2,
    known before composing starts, so the resolver is made with it as a constant."""

    class OneVersionResolver(VersionedResolver):
        processing_version = version

    return OneVersionResolver


def _loader(version: Version | None = None) -> YAML:
    yaml = YAML(typ="safe", pure=False)
    yaml.Resolver = _resolver(version or (1, 2))
    return yaml


# The wheel is a dependency: without it ruamel falls back to pure Python without a word, and every
# manifest costs ten times as much. Say so when the daemon starts instead.
if _loader().Parser.__name__ != "CParser":
    raise ImportError("ruamel.yaml.clib (libyaml) is missing: reinstall mariposa's dependencies")


class Libyaml:
    """One reading through libyaml: bounds on its event stream, then composing (the same interface
    as fallback.Pure, which reads what libyaml refuses)."""

    def bounds(self, text: str, filename: str) -> tuple[ManifestProblem | None, Version | None]:
        return limits.event_problem(events(text), filename)

    def compose(self, text: str, version: Version | None = None) -> Node | None:
        return compose(text, version)


def events(text: str) -> Iterator[Any]:
    """The event stream, produced lazily: a caller that stops early never reads the rest."""
    return _loader().parse(text)


def compose(text: str, version: Version | None = None) -> Node | None:
    """The node graph of the first document, its scalars resolved as YAML ``version`` says (the
    document's ``%YAML`` directive; 1.2 without one). Recursive in C: call it only on text whose
    depth limits.event_problem has bounded."""
    return _loader(version).compose(text)
