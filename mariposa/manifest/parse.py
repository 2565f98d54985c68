"""Manifest text to ruamel round-trip nodes, keeping where every value was written.

libyaml composes the nodes (reader.py; what it refuses, fallback.py reads again) and ruamel's
round-trip constructor builds them, because its containers remember line and column, which is
what lets every later problem point at the offending spot. JSON is valid YAML to ruamel,
so JSON manifests take the same path and get the same positions.

Positions here are ruamel's 0-based ``(line, column)`` pairs; errors.py is where they become
1-based for people.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mariposa.manifest import fallback, limits, reader
from mariposa.manifest.errors import ManifestError, ManifestProblem

Pos = tuple[int, int]
START: Pos = (0, 0)

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _yaml(version: reader.Version | None = None) -> YAML:
    """The round-trip constructor, which gives containers their positions; it reads ints and
    bools as the document's YAML ``version`` says."""
    yaml = YAML(typ="rt", pure=True)
    yaml.version = version
    return yaml


class _Reading(Protocol):
    def bounds(self, text: str, filename: str) -> tuple[ManifestProblem | None, limits.Version | None]: ...

    def compose(self, text: str, version: limits.Version | None = None) -> Node | None: ...


_OUT_OF_TIME = ("; a manifest this large is read by libyaml alone, which needs quotes around a value"
                " with ':' inside [ ] or { }")


class _LibyamlRefused(Exception):
    def __init__(self, problem: ManifestProblem):
        self.problem = problem


def load(text: str, filename: str) -> Any:
    """The document in ``text`` as round-trip nodes (``None`` when it is empty).

    Raises ``ManifestError`` for syntax errors and duplicate keys, the problems ruamel finds
    before validation can see anything, and for manifests over the bounds of ``limits.py``.
    libyaml reads the text (reader.py); what it refuses, ruamel's pure scanner reads again on a
    budget, and its verdict is the one given (fallback.py says why).
    """
    problem = limits.text_problem(text, filename)
    if problem is not None:
        raise ManifestError([problem])
    try:
        return _read(text, filename, reader.Libyaml())
    except _LibyamlRefused as refused:
        try:
            return _read(text, filename, fallback.Pure())
        except fallback.TooSlow:
            message = refused.problem.message + _OUT_OF_TIME
            raise ManifestError([attrs.evolve(refused.problem, message=message)]) from None


def _read(text: str, filename: str, reading: _Reading) -> Any:
    fast = isinstance(reading, reader.Libyaml)
    version: limits.Version | None = None
    try:
        problem, version = reading.bounds(text, filename)
        if problem is None:
            root = reading.compose(text, version)
            problem = limits.expansion_problem(root, filename)
        if problem is None:
            return None if root is None else _yaml(version).constructor.construct_document(root)
    except fallback.TooSlow:
        raise
    except DuplicateKeyError as exc:
        # ruamel stops at the first duplicate; walk the composed tree to report all of them.
        # Two merge keys ('<<') in one mapping are the one duplicate the walk does not count.
        problems = _duplicate_keys(reading.compose(text, version), filename) or [_syntax_problem(exc, filename)]
        raise ManifestError(problems) from None
    except MarkedYAMLError as exc:
        if fast:
            raise _LibyamlRefused(_syntax_problem(exc, filename)) from None
        raise ManifestError([_syntax_problem(exc, filename)]) from None
    except YAMLError as exc:  # ReaderError (control characters, bad encoding) has no mark
        if fast:
            raise _LibyamlRefused(_reader_problem(exc, text, filename)) from None
        raise ManifestError([_reader_problem(exc, text, filename)]) from None
    except Exception as exc:
        # An explicit tag on a value that is no such thing ("!!int abc", "!!bool maybe"):
        # ruamel's constructor raises whatever Python raised (ValueError, KeyError ...) with no
        # position, so find the value it stumbled on. Composed again: the constructor rewrites
        # the nodes it has built (merges flattened into their mappings), so the first graph lies.
        try:
            root = reading.compose(text, version)
        except Exception:  # composing failed itself: nothing to search, only the error's own words
            root = None
        raise ManifestError([_construction_problem(exc, root, version, filename)]) from None
    raise ManifestError([problem])


def _syntax_problem(exc: MarkedYAMLError, filename: str) -> ManifestProblem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line, mark.column) if mark else START
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        context = exc.context
        if exc.context_mark is not None:
            context += f" started at line {exc.context_mark.line + 1}"
        message = f"{exc.problem} ({context})"
    return ManifestProblem(filename, line + 1, col + 1, "", f"YAML syntax error: {message}")


def _reader_problem(exc: YAMLError, text: str, filename: str) -> ManifestProblem:
    offset = getattr(exc, "position", None)
    line, col = START
    if isinstance(offset, int):
        before = text[:offset]
        line = before.count("\n")
        col = offset - (before.rfind("\n") + 1)
    character = getattr(exc, "character", None)
    if isinstance(character, str) and len(character) == 1:
        character = ord(character)
    if isinstance(character, int):
        detail = f"character #x{character:04x} is not allowed in YAML"
    else:
        detail = str(getattr(exc, "reason", None) or exc).splitlines()[0]
    return ManifestProblem(filename, line + 1, col + 1, "", f"cannot read the manifest: {detail}")


def _construction_problem(exc: Exception, root: Node | None, version: limits.Version | None,
                          filename: str) -> ManifestProblem:
    constructor = _yaml(version).constructor
    merge = _self_merge(root, [])
    if merge is not None:
        mark = merge.start_mark
        return ManifestProblem(filename, mark.line + 1, mark.column + 1, "",
                               "YAML value error: '<<' merges a mapping that contains it")
    stack = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases share nodes, and a recursive one leads back to its anchor
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            try:
                constructor.construct_object(node)
            except Exception:
                mark, kind = node.start_mark, str(node.tag).rsplit(":", 1)[-1]
                return ManifestProblem(filename, mark.line + 1, mark.column + 1, "",
                                       f"YAML value error: {node.value!r} is not a valid {kind}")
        elif isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, MappingNode):
            stack.extend(n for pair in reversed(node.value) for n in reversed(pair))
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ManifestProblem(filename, START[0] + 1, START[1] + 1, "", f"YAML value error: {detail}")


def _self_merge(node: Node | None, ancestors: list[Node]) -> Node | None:
    """The '<<' key of a mapping that merges itself or a collection holding it: ruamel cannot
    construct that (an AttributeError). The walk is as deep as the nesting, which limits.py bounds."""
    if any(node is a for a in ancestors):
        return None  # an ordinary recursive alias: ruamel builds those
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                merged = value.value if isinstance(value, SequenceNode) else [value]
                if any(m is a for m in merged for a in [*ancestors, node]):
                    return key
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, SequenceNode):
        children = list(node.value)
    else:
        return None
    for child in children:
        found = _self_merge(child, [*ancestors, node])
        if found is not None:
            return found
    return None


def _duplicate_keys(root: Node | None, filename: str) -> list[ManifestProblem]:
    problems: list[ManifestProblem] = []
    seen_nodes: set[int] = set()

    def walk(node: Node, path: str) -> None:
        if id(node) in seen_nodes:  # aliases share nodes; recursive ones would loop forever
            return
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first_line: dict[tuple[str | None, str], int] = {}
            for key, value in node.value:
                if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                    continue
                field = f"{path}.{key.value}" if path else str(key.value)
                ident = (key.tag, key.value)
                if ident in first_line:
                    first = first_line[ident]
                    message = f"duplicate key {key.value!r} (first given on line {first})"
                    mark = key.start_mark
                    problems.append(
                        ManifestProblem(filename, mark.line + 1, mark.column + 1, field, message)
                    )
                else:
                    first_line[ident] = key.start_mark.line + 1
                walk(value, field)
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    if root is not None:
        walk(root, "")
    return problems


# ---- positions of values inside round-trip containers ------------------------------------------
# Scalars carry no position of their own; only the container holding them knows where they are.
# ``lc`` lacks entries for keys that came in through a ``<<`` merge, hence the fallbacks.


def node_pos(node: Any, default: Pos = START) -> Pos:
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return default
    return (lc.line, lc.col)


def key_pos(mapping: Any, key: Any, default: Pos = START) -> Pos:
    try:
        return tuple(mapping.lc.key(key))
    except (AttributeError, KeyError, TypeError):
        return node_pos(mapping, default)


def value_pos(mapping: Any, key: Any, default: Pos = START) -> Pos:
    # An empty value has no token of its own; ruamel then reports wherever the parser stood
    # next (often the following key), so point at the key instead.
    if mapping.get(key) is None:
        return key_pos(mapping, key, default)
    try:
        return tuple(mapping.lc.value(key))
    except (AttributeError, KeyError, TypeError):
        return node_pos(mapping, default)


def item_pos(seq: Any, index: int, default: Pos = START) -> Pos:
    try:
        return tuple(seq.lc.item(index))
    except (AttributeError, KeyError, IndexError, TypeError):
        return node_pos(seq, default)


def yaml_problem(exc: Exception, text: str, filename: str, version: limits.Version | None = None) -> ManifestProblem:
    """The problem, with its position, of an exception that reading ``text`` raised: for a reader
    of another YAML format (the meta manifest) to report its errors the manifest's way."""
    if isinstance(exc, MarkedYAMLError):
        return _syntax_problem(exc, filename)
    if isinstance(exc, YAMLError):  # a character YAML forbids: a position, no mark
        return _reader_problem(exc, text, filename)
    try:  # an explicit tag on a value that is no such thing ("!!int x"): found on the nodes
        root = reader.compose(text, version)
    except Exception:
        root = None
    return _construction_problem(exc, root, version, filename)
