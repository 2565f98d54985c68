"""Block-style YAML text from Python values, for the tests that build manifests to feed the parser
(the property tests and the fuzzer). Each says how a key and a leaf are written (plain, quoted,
flow), which is where they differ; the block layout is this one function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def block_yaml(value: Any, key: Callable[[Any], str], leaf: Callable[[Any], str], indent: int = 0) -> list[str]:
    """The lines of ``value``: non-empty mappings and lists as blocks, everything else by ``leaf``."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        lines = []
        for k, item in value.items():
            head = f"{pad}{key(k)}:"
            if isinstance(item, (dict, list)) and item:
                lines += [head] + block_yaml(item, key, leaf, indent + 2)
            else:
                lines.append(f"{head} {leaf(item)}")
        return lines
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner = block_yaml(item, key, leaf, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines += inner[1:]
            else:
                lines.append(f"{pad}- {leaf(item)}")
        return lines
    return [pad + leaf(value)]
