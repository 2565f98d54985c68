"""Compose's variable substitution: ``${VAR}``, ``$VAR``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?message}``, ``${VAR?message}``, ``${VAR:+other}``, ``${VAR+other}``, and ``$$`` for a
literal ``$``.

A compose file is a template that `docker compose` fills from the caller's environment and the
``.env`` file beside it; a Mariposa manifest is not, so the importer fills it once, at import,
exactly as compose would have on `up`. The values themselves never appear in the report (they
may be passwords); only which variables were used."""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATOR = re.compile(r":?[-?+]")


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str], used: set[str] | None = None) -> str:
    """``text`` with its variables substituted from ``env``; a default may hold variables of its
    own (``${A:-${B}}``). Names it read go into ``used``. Raises ``InterpolationError`` for
    ``${VAR?message}`` of an unset variable, or a ``$`` that starts nothing."""
    if "$" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        dollar = text.find("$", i)
        if dollar < 0:
            out.append(text[i:])
            break
        out.append(text[i:dollar])
        after = text[dollar + 1:dollar + 2]
        if after == "$":
            out.append("$")
            i = dollar + 2
            continue
        if after == "{":
            end = _closing_brace(text, dollar + 2)
            if end is None:
                raise InterpolationError(f"'${{' is not closed in {text!r}")
            out.append(_braced(text[dollar + 2:end], env, used))
            i = end + 1
            continue
        name = _NAME.match(text, dollar + 1)
        if name is None:
            raise InterpolationError(f"invalid '$' in {text!r}: write $$ for a literal $, or ${{NAME}}")
        if used is not None:
            used.add(name[0])
        out.append(env.get(name[0], ""))
        i = name.end()
    return "".join(out)


def _closing_brace(text: str, start: int) -> int | None:
    depth = 0
    for i in range(start, len(text)):
        if text.startswith("${", i):
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return i
            depth -= 1
    return None


def _braced(inner: str, env: Mapping[str, str], used: set[str] | None) -> str:
    name = _NAME.match(inner)
    if name is None:
        raise InterpolationError(f"invalid variable name in ${{{inner}}}")
    op_match = _OPERATOR.match(inner, name.end())
    if op_match is None and name.end() != len(inner):
        raise InterpolationError(f"invalid variable name in ${{{inner}}}")
    if used is not None:
        used.add(name[0])
    value = env.get(name[0])
    if op_match is None:
        return "" if value is None else str(value)
    op, arg = op_match[0], inner[op_match.end():]
    unset = value is None or (value == "" and op.startswith(":"))
    if op.endswith("-"):
        return interpolate(arg, env, used) if unset else str(value)
    if op.endswith("?"):
        if unset:
            raise InterpolationError(f"variable {name[0]} is required: {arg or 'it is not set'}")
        return str(value)
    return "" if unset else interpolate(arg, env, used)


def dotenv(text: str) -> dict[str, str]:
    """The variables of a ``.env`` file, in the env_file format compose uses for both."""
    from mariposa.manifest.env_files import parse

    return {key: value for _, key, value, problem in parse(text) if problem is None and value is not None}
