"""`env_file:` as docker compose reads it, resolved when a version is made.

The daemon runs as root and its callers need not: if it opened the paths a manifest names, any
member of the socket's group could read /etc/shadow into a container's environment. So the file
is read by whoever holds the manifest with their own rights (the CLI, next to the manifest file;
the watched directory, inside itself) and its text travels with the manifest. The version stores
that text, like the inline `environment`, so it is parsed the same way forever after.

A file's entry is its text, or ``{"error": why}`` when it could not be read: a service that marks
the file ``required: false`` goes on without it, as compose does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mariposa.manifest.report import ENV_KEY_RE

MAX_ENV_FILE = 256 * 1024  # bytes: an environment, not a data file
EnvFiles = Mapping[str, "str | dict[str, str]"]


def referenced(text: str) -> list[str]:
    """The env_file paths the manifest's services name, in order, without duplicates. Tolerant:
    a manifest that does not even parse names none here, and its problems are reported, with
    their positions, when the daemon validates it."""
    from mariposa.manifest.errors import ManifestError
    from mariposa.manifest.parse import load

    try:
        doc = load(text, "<manifest>")
    except (ManifestError, RecursionError, ValueError):
        return []
    services = doc.get("services") if isinstance(doc, Mapping) else None
    found: list[str] = []
    for section in (services.values() if isinstance(services, Mapping) else ()):
        value = section.get("env_file") if isinstance(section, Mapping) else None
        for entry in value if isinstance(value, list) else [value]:
            path = entry.get("path") if isinstance(entry, Mapping) else entry
            if isinstance(path, str) and path.strip() and path not in found:
                found.append(path)
    return found


def read_beside(text: str, base: Path, read: Callable[[Path], str] | None = None) -> dict[str, Any]:
    """Each file the manifest names, read relative to ``base`` (the manifest's directory), with
    ``read`` (by default a plain bounded read; the watched directory passes its own, which keeps
    reads inside the directory)."""
    read = read or _read
    out: dict[str, Any] = {}
    for path in referenced(text):
        try:
            out[path] = read(base / path)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            out[path] = {"error": getattr(exc, "strerror", None) or str(exc)}
    return out


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        data = f.read(MAX_ENV_FILE + 1)
    if len(data) > MAX_ENV_FILE:
        raise ValueError(f"larger than {MAX_ENV_FILE // 1024} KiB")
    return data.decode()


def checked(value: object) -> dict[str, Any]:
    """``env_files`` as a request carries it, or ValueError saying what is wrong with it."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("'env_files' must be an object of path: text")
    for path, entry in value.items():
        ok = isinstance(entry, str) and len(entry) <= MAX_ENV_FILE or (
            isinstance(entry, Mapping) and set(entry) == {"error"} and isinstance(entry["error"], str))
        if not isinstance(path, str) or not ok:
            raise ValueError(f"'env_files' entry {str(path)[:80]!r} must be the file's text or {{\"error\": why}}")
    return dict(value)


def dumps(env_files: EnvFiles | None) -> str | None:
    return json.dumps(dict(env_files), sort_keys=True) if env_files else None


def loads(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse(text: str) -> Iterator[tuple[int, str, str | None, str | None]]:
    """(line number, key, value, problem) for each variable, in compose's format: KEY=VALUE
    lines, `#` comments and blank lines, an optional `export `, values bare (a ` #` starts a
    comment), in double quotes (with \\n, \\t, \\" and \\\\ escapes) or in single quotes (literal)."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            yield number, key, None, f"{key!r} has no '=' (a value from the caller's environment is not taken)"
            continue
        if not ENV_KEY_RE.match(key):
            yield number, key, None, f"invalid variable name {key!r}"
            continue
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = _closing(value, quote)
            if end is None:
                yield number, key, None, f"{key}: the {quote} quote is not closed on this line"
                continue
            body = value[1:end]
            if quote == '"':
                body = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], "\\" + m[1]), body)
            yield number, key, body, None
        else:
            yield number, key, re.split(r"\s+#", value, maxsplit=1)[0].rstrip(), None


def _closing(value: str, quote: str) -> int | None:
    i = 1
    while i < len(value):
        if value[i] == "\\" and quote == '"':
            i += 2
            continue
        if value[i] == quote:
            return i
        i += 1
    return None
