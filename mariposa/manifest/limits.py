"""Bounds on what a manifest may cost to read, checked before the YAML is built.

A manifest is a hand-edited file of a few KiB. Without bounds, 408 bytes of nested aliases (a
"billion laughs") took 18 s and 780 MB to report a duplicate key, one 1 MB comment line took the
scanner a quadratic quarter of a minute, and 300 nested brackets ran Python out of stack. So:

- the whole text is at most ``MAX_BYTES`` and each line at most ``MAX_LINE`` characters;
- nesting is at most ``MAX_DEPTH`` collections deep, measured on the token stream (the scanner
  is a loop; ruamel's composer, which comes after it, recurses);
- aliases may not expand the document past ``MAX_NODES`` values: counted on the composed graph,
  where an alias is the node it names, each node's expansion computed once;
- a ``%YAML`` directive names 1.1 or 1.2: ruamel checks only the first document's major version,
  and another version was a KeyError or an AssertionError from deep in its resolver.

Each refusal is a ``ManifestProblem`` at the line and column where the limit was passed.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.scanner import RoundTripScanner
from ruamel.yaml.tokens import (
    BlockEndToken,
    BlockMappingStartToken,
    BlockSequenceStartToken,
    DirectiveToken,
    FlowMappingEndToken,
    FlowMappingStartToken,
    FlowSequenceEndToken,
    FlowSequenceStartToken,
)

from mariposa.manifest.errors import ManifestProblem

MAX_BYTES = 1024 * 1024
MAX_LINE = 16 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000

_OPEN = (BlockMappingStartToken, BlockSequenceStartToken, FlowMappingStartToken, FlowSequenceStartToken)
_CLOSE = (BlockEndToken, FlowMappingEndToken, FlowSequenceEndToken)


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


class _TooDeep(Exception):
    def __init__(self, mark: Any):
        self.mark = mark


class _BoundedScanner(RoundTripScanner):
    """Refuses a flow collection past the depth as the scanner reaches it, not when its token is
    handed out: for every open flow collection ruamel looks up to 1,024 characters ahead for a
    key's ':', each look a loop over the open collections, so 5,000 '[' took seconds before the
    65th came out."""

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        if self.flow_level + len(self.indents) >= MAX_DEPTH:
            raise _TooDeep(self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


def token_problem(yaml: YAML, text: str, filename: str) -> ManifestProblem | None:
    """Nesting depth and ``%YAML`` versions, on the token stream (a loop, no recursion)."""
    depth = 0
    mark = None
    yaml.Scanner = _BoundedScanner
    try:
        for token in yaml.scan(text):
            mark = token.start_mark
            if isinstance(token, DirectiveToken) and token.name == "YAML" and token.value not in YAML_VERSIONS:
                version = ".".join(str(part) for part in token.value or ())
                return ManifestProblem(filename, mark.line + 1, mark.column + 1, "",
                                       f"YAML version {version} is not supported (1.1 or 1.2)")
            if isinstance(token, _OPEN):
                depth += 1
                if depth > MAX_DEPTH:
                    return ManifestProblem(filename, mark.line + 1, mark.column + 1, "",
                                           f"collections nest more than {MAX_DEPTH} deep")
            elif isinstance(token, _CLOSE):
                depth -= 1
    except _TooDeep as deep:
        return ManifestProblem(filename, deep.mark.line + 1, deep.mark.column + 1, "",
                               f"collections nest more than {MAX_DEPTH} deep")
    except YAMLError:
        raise  # a syntax error: the caller reports it with ruamel's own position
    except Exception as exc:  # a Python error let through: int() of 5,000 digits
        line, column = (mark.line, mark.column) if mark is not None else (0, 0)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return ManifestProblem(filename, line + 1, column + 1, "", f"cannot read the manifest: {detail}")
    return None


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
