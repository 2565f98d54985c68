"""The meta manifest (rfd36 meta/manifest.md): a YAML map of keys to scalar values, read for
`meta import`. Scalars become text (what `meta set` stores); null stays null. Anything else (a
list, a nested map) is refused with its line and column, and the whole import changes nothing."""

from __future__ import annotations

import datetime
from typing import Any

from mariposa.manifest.errors import ManifestError, ManifestProblem
from mariposa.store.meta import KEY_RE, MAX_VALUE

MAX_TEXT = 1024 * 1024


def parse_meta(text: str, filename: str) -> dict[str, str | None]:
    from ruamel.yaml import YAML

    from mariposa.manifest import limits, parse, reader

    def problem(line: int, col: int, message: str, field: str = "") -> ManifestError:
        return ManifestError([ManifestProblem(filename, line + 1, col + 1, field, message)])

    if len(text.encode()) > MAX_TEXT:
        raise problem(0, 0, f"a meta manifest is at most {MAX_TEXT // 1024} KiB")
    # Every way YAML can fail is a problem with a position, never an exception of its own: a
    # syntax error is raised by the event stream already (the bounds read it first), a character
    # YAML forbids by its reader (a position, no mark), an explicit tag on a value that is no such
    # thing ("!!int x") by the constructor (found again on the composed nodes).
    version: limits.Version | None = None
    try:
        found, version = limits.event_problem(reader.events(text), filename)
        if found is not None:
            raise ManifestError([found])
        data = YAML(typ="rt").load(text)
    except ManifestError:
        raise
    except Exception as exc:
        raise ManifestError([parse.yaml_problem(exc, text, filename, version)]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise problem(0, 0, "a meta manifest is a map of KEY: VALUE")
    out: dict[str, str | None] = {}
    problems = []
    for key, value in data.items():
        line, col = data.lc.key(key) if hasattr(data, "lc") else (0, 0)
        name = str(key)
        if not isinstance(key, str) or not KEY_RE.fullmatch(key):
            problems.append(ManifestProblem(filename, line + 1, col + 1, name,
                                            "a meta key is 1-128 letters, digits, '_' or '-'"))
            continue
        text_value = _scalar(value)
        vline, vcol = data.lc.value(key) if hasattr(data, "lc") else (line, col)
        if text_value is _BAD:
            problems.append(ManifestProblem(filename, vline + 1, vcol + 1, name,
                                            "a meta value is a string, number, boolean or null"))
        elif text_value is not None and len(str(text_value).encode()) > MAX_VALUE:
            problems.append(ManifestProblem(filename, vline + 1, vcol + 1, name,
                                            f"a meta value is at most {MAX_VALUE // 1024} KiB"))
        else:
            out[key] = text_value
    if problems:
        raise ManifestError(problems)
    return out


_BAD = object()


def _scalar(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return _BAD
