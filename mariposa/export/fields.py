"""The fields of a manifest as the user wrote them, each with its line and column.

An export is judged against the text, not the parsed spec: a field the spec folds away (an
``env_file`` merged into ``environment``, a ``package`` turned into limits) was still written by
someone, and the report must say what became of it. The granularity is the one people edit:
every top-level section and its entries, every service, and every option of every service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mariposa.manifest.parse import key_pos, load

Pos = tuple[int, int]  # 1-based line and column


def manifest_fields(text: str, filename: str) -> dict[str, Pos]:
    """Dotted path -> where its key was written, in file order. ``services.web`` and
    ``services.web.ports`` are two fields; top-level sections list their entries
    (``volumes.data``); a list-valued section (``webhooks``) is one field."""
    doc = load(text, filename)
    out: dict[str, Pos] = {}
    if not isinstance(doc, Mapping):
        return out

    def at(mapping: Any, key: Any) -> Pos:
        line, col = key_pos(mapping, key)
        return line + 1, col + 1

    for top in doc:
        out[str(top)] = at(doc, top)
        value = doc[top]
        if not isinstance(value, Mapping):
            continue
        for name in value:
            path = f"{top}.{name}"
            out[path] = at(value, name)
            options = value[name]
            if top == "services" and isinstance(options, Mapping):
                for option in options:
                    # `on:` read as true under YAML 1.1 is the option `on`, as the parser takes it
                    key = "on" if option is True else str(option)
                    out[f"{path}.{key}"] = at(options, option)
    return out
