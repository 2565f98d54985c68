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

_TOKEN = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bad>))"
)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str], used: set[str] | None = None) -> str:
    """``text`` with its variables substituted from ``env``. Names it read go into ``used``.
    Raises ``InterpolationError`` for ``${VAR?message}`` of an unset variable, or a bad ``$``."""
    if "$" not in text:
        return text

    def one(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["bad"] is not None:
            raise InterpolationError(f"invalid '$' in {text!r}: write $$ for a literal $, or ${{NAME}}")
        name = match["plain"] or match["braced"]
        if used is not None:
            used.add(name)
        value = env.get(name)
        op, arg = match["op"], match["arg"] or ""
        unset_or_empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in ("-", ":-"):
            return interpolate(arg, env, used) if unset_or_empty else str(value)
        if op in ("?", ":?"):
            if unset_or_empty:
                raise InterpolationError(f"variable {name} is required: {arg or 'it is not set'}")
            return str(value)
        if op in ("+", ":+"):
            return "" if unset_or_empty else interpolate(arg, env, used)
        return "" if value is None else str(value)

    return _TOKEN.sub(one, text)


def dotenv(text: str) -> dict[str, str]:
    """The variables of a ``.env`` file, in the env_file format compose uses for both."""
    from mariposa.manifest.env_files import parse

    return {key: value for _, key, value, problem in parse(text) if problem is None and value is not None}
