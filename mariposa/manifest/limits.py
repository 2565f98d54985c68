"""Bounds on what a manifest may cost to read, checked before the YAML is built.

A manifest is a hand-edited file of a few KiB. Without bounds, 408 bytes of nested aliases (a
"billion laughs") took 18 s and 780 MB to report a duplicate key, one 1 MB comment line took the
scanner a quadratic quarter of a minute, 300 nested brackets ran Python out of stack, and 130,000
list items took 17 s. So:

- the whole text is at most ``MAX_BYTES`` and each line at most ``MAX_LINE`` characters;
- on libyaml's event stream (a loop in C that stops at the first event past a bound): nesting is
  at most ``MAX_DEPTH`` collections deep (composing, which comes after, recurses), and the text
  writes at most ``MAX_VALUES`` values (composing costs about 15 us a value; 25,000 of them are
  half a second, and a 1,000-service manifest writes about 17,000);
- aliases may not expand the document past ``MAX_NODES`` values: counted on the composed graph,
  where an alias is the node it names, each node's expansion computed once;
- a ``%YAML`` directive names 1.1 or 1.2: ruamel checks only the first document's major version,
  and another version was a KeyError or an AssertionError from deep in its resolver.

Each refusal is a ``ManifestProblem`` at the line and column where the limit was passed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    ScalarEvent,
)
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from mariposa.manifest.errors import ManifestProblem

MAX_BYTES = 1024 * 1024
MAX_LINE = 16 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_VALUES = 25_000

_OPEN = CollectionStartEvent
_CLOSE = CollectionEndEvent
_VALUE = (ScalarEvent, AliasEvent, CollectionStartEvent)


def text_problem(text: str, filename: str) -> ManifestProblem | None:
    """Size and line length: checked on the text, before anything reads it as YAML."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        return ManifestProblem(filename, 1, 1, "", f"the manifest is {size // 1024} KiB; at most "
                                                   f"{MAX_BYTES // 1024} KiB is read")
    for number, line in enumerate(text.split("\n"), 1):
        if len(line) > MAX_LINE:
            return ManifestProblem(filename, number, MAX_LINE + 1, "",
                                   f"line {number} is {len(line):,} characters long; at most {MAX_LINE:,} are read")
    return None


YAML_VERSIONS = ((1, 1), (1, 2))
Version = tuple[int, int]


def event_problem(events: Iterable[Any], filename: str) -> tuple[ManifestProblem | None, Version | None]:
    """Nesting depth, written values and ``%YAML`` versions, on libyaml's event stream.

    The event stream is a loop in C, so it reads 100,000 open brackets without recursing, and it
    stops at the first event past a bound. Composing, the step after it, is the one that recurses
    (in C: past the depth it crashed the process) and costs about 15 us a value (resolving each
    scalar's tag is Python), so both bounds are checked here, before it runs. Syntax errors are
    let through: composing reports the first one, with its position. Also returns the first
    document's ``%YAML`` version, which decides how its scalars read ("yes", "010")."""
    depth = values = 0
    version: Version | None = None
    for event in events:
        mark = event.start_mark
        if isinstance(event, DocumentStartEvent) and event.version:
            if tuple(event.version) not in YAML_VERSIONS:
                named = ".".join(str(part) for part in event.version)
                return ManifestProblem(filename, mark.line + 1, mark.column + 1, "",
                                       f"YAML version {named} is not supported (1.1 or 1.2)"), None
            version = version or (event.version[0], event.version[1])
        if isinstance(event, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                return ManifestProblem(filename, mark.line + 1, mark.column + 1, "",
                                       f"collections nest more than {MAX_DEPTH} deep"), None
        elif isinstance(event, _CLOSE):
            depth -= 1
        if isinstance(event, _VALUE):
            values += 1
            if values > MAX_VALUES:
                return ManifestProblem(filename, mark.line + 1, mark.column + 1, "",
                                       f"the manifest writes more than {MAX_VALUES:,} values"), None
    return None, version


def expansion_problem(root: Node | None, filename: str) -> ManifestProblem | None:
    if root is None:
        return None
    sizes: dict[int, int] = {}

    def children(node: Node) -> list[Node]:
        if isinstance(node, SequenceNode):
            return list(node.value)
        if isinstance(node, MappingNode):
            return [n for pair in node.value for n in pair]
        return []

    def size(node: Node, seen: frozenset[int]) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in seen:  # a recursive alias: counted once, never followed again
            return 1
        total = 1
        for child in children(node):
            total = min(total + size(child, seen | {key}), MAX_NODES + 1)
        sizes[key] = total
        return total

    if size(root, frozenset()) <= MAX_NODES:
        return None
    node = root  # point at the smallest collection that is over the budget on its own
    while True:
        over = [c for c in children(node) if sizes.get(id(c), 0) > MAX_NODES]
        if not over:
            break
        node = over[0]
    mark = node.start_mark
    return ManifestProblem(filename, mark.line + 1, mark.column + 1, "",
                           f"aliases expand this to more than {MAX_NODES:,} values")
