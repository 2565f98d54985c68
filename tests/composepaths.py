"""What the importer's report must cover: every key path of a compose file (down through
mappings; a list is one field), each reported itself or through an ancestor or a descendant."""

from __future__ import annotations

from typing import Any


def key_paths(doc: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in doc.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.append(path)
        if isinstance(value, dict):
            out.extend(key_paths(value, path))
    return out


def covered(path: str, reported: list[str]) -> bool:
    def within(p: str, ancestor: str) -> bool:
        return p == ancestor or p.startswith(ancestor + ".")

    return any(within(path, r) or within(r, path) for r in reported)


def unreported(doc: Any, reported: list[str]) -> list[str]:
    return [p for p in key_paths(doc) if not covered(p, reported)]
