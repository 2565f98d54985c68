"""The machinery the field table (fields.py) runs on: a ``Converter`` that collects the report,
the problems and where each manifest option came from, a ``Service`` being built, and the rule
kinds the table is made of. A rule is data (what the compose key becomes, or why it does not),
so the table reads as a list of every compose field and the report can name each one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from mariposa.compose.report import CHANGED, MAPPED, UNMAPPED, Entry
from mariposa.manifest.errors import ManifestProblem
from mariposa.manifest.parse import Pos
from mariposa.manifest.report import _At


def plain(value: Any) -> Any:
    """ruamel's round-trip values as plain Python (dict, list, str, int, float, bool, None)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value if value is None else bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


class Converter:
    """What one conversion gathers: report entries, problems (values that cannot be converted,
    at their compose position), and the compose position of each manifest path it wrote."""

    def __init__(self, filename: str, env: Mapping[str, str], compose_dir: str, absolute_paths: bool,
                 home: str | None = None):
        self.filename = filename
        self.env = env
        self.compose_dir = compose_dir
        self.absolute_paths = absolute_paths
        self.home = home
        self.entries: list[Entry] = []
        self.problems: list[ManifestProblem] = []
        self.origins: dict[str, Pos] = {}
        self.interpolated: dict[str, set[str]] = {}  # compose path -> variables substituted in it
        self.renamed: dict[str, str] = {}  # compose service name -> manifest service name
        self.manifest_volumes: dict[str, Any] | None = None
        self.manifest_networks: dict[str, Any] | None = None
        self.network_names: dict[str, str] = {}  # compose network key -> an external network's own name

    def record(self, at: _At, status: str, note: str = "", path: str | None = None) -> None:
        path = path or at.field
        variables = sorted({v for p, vs in self.interpolated.items() if _within(p, path) for v in vs})
        if variables:
            filled = f"${{{'}, ${'.join(variables)}}} filled in at import (environment and .env)"
            blank = [v for v in variables if v not in self.env]
            if blank:
                filled += f"; {', '.join(blank)} not set: blank or its default, as compose does"
            note = f"{note}; {filled}" if note else filled
            status = CHANGED if status == MAPPED else status
        line, column = at.key_pos
        self.entries.append(Entry(path, status, note, line + 1, column + 1))

    def mapped(self, at: _At, note: str = "") -> None:
        self.record(at, MAPPED, note)

    def changed(self, at: _At, note: str) -> None:
        self.record(at, CHANGED, note)

    def unmapped(self, at: _At, why: str) -> None:
        self.record(at, UNMAPPED, why)

    def problem(self, at: _At, message: str, on_key: bool = False) -> None:
        line, column = at.key_pos if on_key else at.pos
        self.problems.append(ManifestProblem(self.filename, line + 1, column + 1, at.field, message))


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor + ".") or path.startswith(ancestor + "[")


class Service:
    """The manifest section of one service as it is built, and where its options came from."""

    def __init__(self, conv: Converter, name: str, at: _At):
        self.conv = conv
        self.name = name  # the manifest's name (a DNS label)
        self.at = at
        self.out: dict[str, Any] = {}

    def set(self, key: str, value: Any, at: _At) -> None:
        if key in _TEMPLATED:
            value = _literal(value)
        self.out[key] = value
        self.conv.origins[f"services.{self.name}.{key}"] = at.pos


class Rule(Protocol):
    def apply(self, conv: Converter, svc: Service, key: str, at: _At) -> None: ...


@attrs.frozen
class Same:
    """Mapped as it is: the manifest has the option under the same name (or ``target``)."""

    target: str | None = None

    def apply(self, conv: Converter, svc: Service, key: str, at: _At) -> None:
        svc.set(self.target or key, plain(at.value), at)
        conv.mapped(at)


@attrs.frozen
class Dropped:
    """Not mapped, and why. A value in ``harmless`` asks for what Mariposa does anyway (e.g.
    ``tty: false``), so it counts as mapped."""

    why: str
    harmless: tuple[Any, ...] = ()

    def apply(self, conv: Converter, svc: Service, key: str, at: _At) -> None:
        if self.harmless and plain(at.value) in self.harmless:
            conv.mapped(at, f"{plain(at.value)!r} is what Mariposa does anyway")
        else:
            conv.unmapped(at, self.why)


@attrs.frozen
class Noted:
    """Mapped with a change that writes nothing: Mariposa does what the field asks already."""

    note: str

    def apply(self, conv: Converter, svc: Service, key: str, at: _At) -> None:
        conv.changed(at, self.note)


@attrs.frozen
class Group:
    """A mapping whose keys are fields of their own (``deploy``, ``deploy.resources``)."""

    children: Mapping[str, Rule]

    def apply(self, conv: Converter, svc: Service, key: str, at: _At) -> None:
        if not isinstance(at.value, Mapping):
            conv.problem(at, f"expected a mapping of {key} options")
            return
        if not at.value:
            conv.mapped(at, "empty")
        for child_key, child in at.entries():
            run(self.children, conv, svc, child_key, child)


@attrs.frozen
class Custom:
    """A field whose conversion needs code (ports, volumes, health checks ...)."""

    fn: Callable[[Converter, Service, _At], None]

    def apply(self, conv: Converter, svc: Service, key: str, at: _At) -> None:
        self.fn(conv, svc, at)


UNKNOWN = "not a compose option the importer knows (a typo, or newer than it)"
EXTENSION = "an extension field (x-...): compose ignores it too; anchors in it were expanded where used"


def run(table: Mapping[str, Rule], conv: Converter, svc: Service, key: Any, at: _At) -> None:
    if isinstance(key, str) and key.startswith("x-"):
        conv.changed(at, EXTENSION)
        return
    rule = table.get(key) if isinstance(key, str) else None
    if rule is None:
        conv.unmapped(at, UNKNOWN)
    elif at.value is None:
        conv.mapped(at, "empty: the default")
    else:
        rule.apply(conv, svc, key, at)


# Options whose strings a manifest reads as templates (manifest/interpolate.py): compose has none,
# so a '{{' in them is written '{{{{', the manifest's literal '{{'.
_TEMPLATED = frozenset({"environment", "command", "entrypoint", "labels", "tags", "healthchecks"})


def _literal(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("{{", "{{{{")
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    return value
