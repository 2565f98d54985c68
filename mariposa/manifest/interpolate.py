"""The spec's templates, ``{{ .a.b }}``, with a parser of our own for exactly that grammar:

    template := ( literal | "{{{{" | "{{" ws? path ws? "}}" )*
    path     := ( "." name )+        name := [A-Za-z0-9_][A-Za-z0-9_-]*

A secret's name may itself hold dots (``db.password``): everything after ``.secret`` is its name,
joined again by ``.`` (``{{ .secret.db.password }}``), which is why ``secret set`` takes only names
made of the same parts (control/secrets.py).

``{{{{`` is a literal ``{{``; there are no other expressions (no pipes, no functions: a Go
template or Jinja library would accept far more than the spec, and errors would read differently).

Templates are stored as written and rendered on demand: when an instance is made (environment,
command, entrypoint, tags) and at each health check (path, command). ``VARIABLES`` is the one
table of what a path may name; a namespace another module fills in (``secret``) is registered in
``RESERVED`` until it exists, so it is parsed and refused with a clear message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import attrs

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_-]*"
_EXPR = re.compile(r"\{\{[ \t]*((?:\." + _NAME + r")+)[ \t]*\}\}")
_PATH_PART = re.compile(_NAME)

# Each namespace: the names it has (None: any name, e.g. a meta key), or a nested table.
VARIABLES: dict[str, object] = {
    "meta": None,
    "project": ("name", "uuid", "version"),
    "service": ("name", "uuid", "version"),
    "package": ("ram", "disk", "cpu", "name", "family"),
    "scale": (),
    "placement": {"instance": ("name", "uuid"), "cn": ("uuid",)},
    "cns": {"svc": ("private",), "inst": ("private",)},
    # a project secret (mariposa/vault/): only in environment, on a service with secret_env: true
    # (manifest/shapes.py checks where; converge/render.py reads the value at create time)
    "secret": None,
}
# Namespaces parsed but refused until the module that fills them in is there (name -> why).
RESERVED: dict[str, str] = {}

# Where a template may appear. FIXED fields are rendered once, when an instance is made, so a
# meta change to a key they use is a new version of the service; the others are read live.
FIXED_FIELDS = ("environment", "command", "entrypoint", "tags", "labels")
LIVE_FIELDS = ("healthchecks.path", "healthchecks.command", "mdata")
WHERE_ALLOWED = "environment, command, entrypoint, tags/labels, mdata and health-check path/command"


class TemplateError(ValueError):
    """A template that does not parse, or names what it may not; ``offset`` is where in the text."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.offset = offset


@attrs.frozen
class Var:
    path: tuple[str, ...]
    offset: int  # of its "{{" in the text

    @property
    def name(self) -> str:
        return "." + ".".join(self.path)


Part = str | Var


def parse(text: str) -> tuple[Part, ...]:
    """The text as literal strings and variables, or TemplateError at the first bad ``{{``."""
    if "{{" not in text:
        return (text,)
    parts: list[Part] = []
    literal: list[str] = []
    i = 0
    while True:
        at = text.find("{{", i)
        if at < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:at])
        if text.startswith("{{{{", at):
            literal.append("{{")
            i = at + 4
            continue
        match = _EXPR.match(text, at)
        if match is None:
            raise TemplateError(_why(text, at), at)
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(Var(tuple(match.group(1)[1:].split(".")), at))
        i = match.end()
    tail = "".join(literal)
    if tail or not parts:
        parts.append(tail)
    return tuple(parts)


def _why(text: str, at: int) -> str:
    end = text.find("}}", at)
    if end < 0:
        return "'{{' is not closed by '}}' (write '{{{{' for a literal '{{')"
    inner = text[at + 2:end].strip()
    shown = inner if len(inner) <= 40 else inner[:39] + "\u2026"
    if not inner.startswith("."):
        return f"'{{{{ {shown} }}}}' is not a variable: write {{{{ .meta.KEY }}}} (or '{{{{{{{{' for a literal '{{{{')"
    return f"'{{{{ {shown} }}}}' is not a variable: only {{{{ .a.b }}}} is allowed, no other expressions"


def variables(text: str) -> list[Var]:
    return [p for p in parse(text) if isinstance(p, Var)]


def check_variable(var: Var) -> str | None:
    """Why the variable cannot be used anywhere (unknown name, reserved namespace), or None."""
    head, rest = var.path[0], var.path[1:]
    if head in RESERVED:
        return RESERVED[head]
    if head not in VARIABLES:
        return f"unknown variable {var.name}: it starts with one of {', '.join('.' + n for n in sorted(VARIABLES))}"
    node = VARIABLES[head]
    if head == "secret":  # a secret's name may hold dots: the rest of the path is the name
        return None if rest else f"incomplete variable {var.name}: write .secret.NAME"
    if node is None:  # any one name: a meta key
        return None if len(rest) == 1 else f"unknown variable {var.name}: write .{head}.NAME"
    walked = [head]
    for name in rest:
        if isinstance(node, dict) and name in node:
            node = node[name]
        elif isinstance(node, tuple) and name in node:
            node = ()
        else:
            return f"unknown variable {var.name}{_choices(walked, node)}"
        walked.append(name)
    if node:
        return f"incomplete variable {var.name}{_choices(walked, node)}"
    return None


def _choices(walked: list[str], table: object) -> str:
    prefix = "." + ".".join(walked)
    if table is None:
        return f" ({prefix}.KEY)"
    names = sorted(table) if isinstance(table, dict | tuple) else []
    return f" ({prefix} has {', '.join(names)})" if names else f" ({prefix} has nothing below it)"


def meta_keys(text: str) -> list[str]:
    """The meta keys a (valid) template uses."""
    return [v.path[1] for v in variables(text) if v.path[0] == "meta" and len(v.path) == 2]


def secret_of(path: tuple[str, ...]) -> str | None:
    """The secret a (valid) variable's path names, dots and all; None if it names no secret."""
    return ".".join(path[1:]) if path[0] == "secret" and len(path) > 1 else None


class Undefined(KeyError):
    """A variable with no value where it is rendered (a meta key removed after the version)."""


def render(text: str, lookup: Callable[[tuple[str, ...]], str | None]) -> str:
    """The text with every variable replaced by ``lookup(path)``; ``{{{{`` becomes ``{{``. A
    lookup that returns None raises Undefined: a variable is never silently an empty string."""
    out = []
    for part in parse(text):
        if isinstance(part, Var):
            value = lookup(part.path)
            if value is None:
                raise Undefined(part.name)
            out.append(value)
        else:
            out.append(part)
    return "".join(out)


def lookup_in(values: Mapping[str, str | None], meta: Mapping[str, str | None],
              secrets: Mapping[str, str] | None = None) -> Callable[[tuple[str, ...]], str | None]:
    """A lookup over flat ``values`` ("project.name": ...), the project's meta (a null meta
    value renders as the empty string: it is set, to nothing) and the secrets read for it."""

    def lookup(path: tuple[str, ...]) -> str | None:
        if path[0] == "meta":
            if path[1] not in meta:
                return None
            value = meta[path[1]]
            return "" if value is None else value
        if path[0] == "secret":
            return (secrets or {}).get(".".join(path[1:]))
        return values.get(".".join(path))

    return lookup
