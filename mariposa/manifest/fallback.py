"""The pure-Python reading of a manifest, for texts libyaml refuses.

libyaml (reader.py) is what reads manifests, but its YAML is older than ruamel's in one way users
meet: a plain value with a colon inside a flow collection (``ports: [8080:80]``,
``volumes: [data:/d]``) is a syntax error to it and a string to YAML 1.2. So when libyaml refuses
a text, ruamel's own scanner reads it again, and ruamel's verdict (a value, or the error message
with the position ruamel gives) is the one users get, as it always was. The pure scanner reads
30-100 KB/s, so it runs under a budget of thread CPU time; past the budget libyaml's verdict
stands. Thread time, not wall time: a loaded machine must not turn a manifest it accepts at noon
into one it refuses at midnight.
"""

from __future__ import annotations

import time
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import Node
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

from mariposa.manifest import limits
from mariposa.manifest.errors import ManifestProblem

BUDGET = 0.5  # seconds of this thread's CPU: 15-50 KiB of YAML, more than any hand-written manifest

_OPEN = (BlockMappingStartToken, BlockSequenceStartToken, FlowMappingStartToken, FlowSequenceStartToken)
_CLOSE = (BlockEndToken, FlowMappingEndToken, FlowSequenceEndToken)


class TooSlow(Exception):
    """The budget ran out before ruamel came to a verdict."""


class _TooDeep(Exception):
    def __init__(self, mark: Any):
        self.mark = mark


class _BoundedScanner(RoundTripScanner):
    """Refuses a flow collection past the depth as the scanner reaches it, not when its token is
    handed out: for every open flow collection ruamel looks up to 1,024 characters ahead for a
    key's ':', each look a loop over the open collections, so 5,000 '[' took seconds before the
    65th came out. And stops when the budget is spent."""

    deadline = 0.0

    def fetch_more_tokens(self) -> None:
        if time.thread_time() > self.deadline:
            raise TooSlow
        super().fetch_more_tokens()

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        if self.flow_level + len(self.indents) >= limits.MAX_DEPTH:
            raise _TooDeep(self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


class Pure:
    """One reading: bounds, then composing, on one budget (the same interface as reader.Libyaml)."""

    def __init__(self, budget: float = BUDGET):
        self._scanner = type("Scanner", (_BoundedScanner,), {"deadline": time.thread_time() + budget})

    def _yaml(self) -> YAML:
        yaml = YAML(typ="rt", pure=True)
        yaml.Scanner = self._scanner
        return yaml

    def bounds(self, text: str, filename: str) -> tuple[ManifestProblem | None, None]:
        """Nesting depth and ``%YAML`` versions, on the token stream (a loop, no recursion). The
        version needs no answer: the pure scanner reads the directive again when composing."""
        return _token_problem(self._yaml(), text, filename), None

    def compose(self, text: str, version: object = None) -> Node | None:
        return self._yaml().compose(text)


def _token_problem(yaml: YAML, text: str, filename: str) -> ManifestProblem | None:
    depth = 0
    mark = None
    try:
        for token in yaml.scan(text):
            mark = token.start_mark
            if isinstance(token, DirectiveToken) and token.name == "YAML" and token.value not in limits.YAML_VERSIONS:
                version = ".".join(str(part) for part in token.value or ())
                return ManifestProblem(filename, mark.line + 1, mark.column + 1, "",
                                       f"YAML version {version} is not supported (1.1 or 1.2)")
            if isinstance(token, _OPEN):
                depth += 1
                if depth > limits.MAX_DEPTH:
                    return ManifestProblem(filename, mark.line + 1, mark.column + 1, "",
                                           f"collections nest more than {limits.MAX_DEPTH} deep")
            elif isinstance(token, _CLOSE):
                depth -= 1
    except _TooDeep as deep:
        return ManifestProblem(filename, deep.mark.line + 1, deep.mark.column + 1, "",
                               f"collections nest more than {limits.MAX_DEPTH} deep")
    except (YAMLError, TooSlow):
        raise  # a syntax error: the caller reports it with ruamel's own position
    except Exception as exc:  # a Python error let through: int() of 5,000 digits
        line, column = (mark.line, mark.column) if mark is not None else (0, 0)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return ManifestProblem(filename, line + 1, column + 1, "", f"cannot read the manifest: {detail}")
    return None
